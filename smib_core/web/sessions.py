"""The session cookie's two routes: `POST /session/claim` sets it, `POST /session/end`
clears it. The cookie (`smib_session`) is HttpOnly (no script reads it), SameSite=Strict
(no other site's page sends it), Secure when the request came over https, Path=/.

Sign-in stays in the Streamlit page (the throttle, the audit, OIDC); a successful one
starts a server-side session (`store.sessions`) and hands the browser a one-time code
over its own websocket. The page's script then POSTs the code here, and only here is the
secret session id made and put in the cookie. CSRF: both routes need the custom header
`X-SMIB-CSRF` (a cross-site form or image cannot send it, and we answer no CORS
preflight) and, when the browser sends `Origin`, an Origin of this very host; a code is
good once and for `HANDOFF_TTL_S` seconds, and was only ever shown to the tab that signed
in, so a forged request can neither sign a browser in as someone else nor out.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from smib_core.store.sessions import SessionStore
from smib_core.web.context import process_context

COOKIE = "smib_session"
CSRF_HEADER = "x-smib-csrf"
MAX_AGE_S = 30 * 24 * 3600  # the server ends it long before when idle


def _same_origin(request: Request) -> bool:
    if request.headers.get(CSRF_HEADER) != "1":
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True
    host = request.headers.get("host", "")
    return urlsplit(origin).netloc == host


def _refused() -> JSONResponse:
    return JSONResponse({"detail": "refused: not a same-origin request"}, status_code=403)


def _secure(request: Request) -> bool:
    forwarded = request.headers.get("x-forwarded-proto", "")
    return request.url.scheme == "https" or forwarded.split(",")[0].strip() == "https"


async def claim(request: Request) -> Response:
    if not _same_origin(request):
        return _refused()
    try:
        body = await request.json()
        code = str(body.get("code", ""))
    except (ValueError, AttributeError):
        code = ""
    ctx = await anyio.to_thread.run_sync(process_context)
    store = SessionStore(ctx.db, ctx.audit)
    secret = await anyio.to_thread.run_sync(store.claim, code)
    if secret is None:
        return JSONResponse({"detail": "unknown, used or expired code"}, status_code=400)
    response = Response(status_code=204)
    response.set_cookie(
        COOKIE,
        secret,
        max_age=MAX_AGE_S,
        path="/",
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )
    return response


async def end(request: Request) -> Response:
    """Clear this browser's cookie (the page ended the session itself already)."""
    if not _same_origin(request):
        return _refused()
    response = Response(status_code=204)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response


ROUTES = [
    Route("/session/claim", claim, methods=["POST"]),
    Route("/session/end", end, methods=["POST"]),
]
