"""Who is calling the HTTP API, and how often: bearer tokens, their rate limit.

Contract: `caller(request)` (a FastAPI dependency) returns the `Principal` of the request's
`Authorization: Bearer <token>` (a live token acting with its account's *current* role),
or raises 401 (missing, malformed, wrong, expired or revoked token, disabled account) with
`WWW-Authenticate: Bearer`; 429 with `Retry-After` once the token made more than its
share of requests (`SMIB_API_RATE_PER_MIN`, a token bucket per token with a minute's
worth of burst). Permission checks stay with the services
(`auth.require`, `BoardActions`): a role lacking one gets 403.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from smib_core.auth import Principal
from smib_core.web.context import WebContext, process_context


class RateLimiter:
    """A token bucket per key: `rate_per_min` requests a minute, bursts up to that many.

    Keeps at most `max_keys` buckets (least recently used forgotten), so memory stays
    bounded whatever the callers do.
    """

    def __init__(
        self,
        rate_per_min: float,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate_per_s = max(rate_per_min, 0.001) / 60.0
        self.capacity = max(1.0, rate_per_min)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._max_keys = max_keys
        self._clock = clock
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """0 when a request may go ahead now; else the seconds before one may."""
        now = self._clock()
        with self._lock:
            tokens, at = self._buckets.pop(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - at) * self.rate_per_s)
            wait = 0.0
            if tokens >= 1.0:
                tokens -= 1.0
            else:
                wait = (1.0 - tokens) / self.rate_per_s
            self._buckets[key] = (tokens, now)
            while len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
        return wait


_limiter_lock = threading.Lock()
_limiters: dict[float, RateLimiter] = {}


def limiter_for(rate_per_min: float) -> RateLimiter:
    with _limiter_lock:
        if rate_per_min not in _limiters:
            _limiters[rate_per_min] = RateLimiter(rate_per_min)
        return _limiters[rate_per_min]


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


def context() -> WebContext:
    """The process's resources (a dependency tests can override)."""
    return process_context()


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def caller(request: Request, ctx: Annotated[WebContext, Depends(context)]) -> Principal:
    """The principal of this request (see the module docstring)."""
    token = bearer_token(request)
    if token is None:
        if request.headers.get("authorization"):
            raise _unauthorized("the Authorization header is not 'Bearer <token>'")
        raise _unauthorized("an API token is required: Authorization: Bearer <token>")
    found = ctx.tokens.authenticate(token)
    if found is None:
        raise _unauthorized("this token is unknown, revoked or expired, or its account disabled")
    principal, info = found
    wait = limiter_for(ctx.settings.api_rate_per_min).take(f"token:{info.id}")
    if wait > 0:
        raise HTTPException(
            429,
            f"too many requests for this token: wait {math.ceil(wait)} s",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )
    return principal
