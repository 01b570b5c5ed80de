"""The HTTP API, `/api/v1` (FastAPI; OpenAPI docs at `/api/v1/docs`).

Contract: every endpoint acts as `access.caller` (a bearer token's account) and goes
through what the pages use: `BoardActions` for anything a board is asked or told (the
role checked, the command validated and audited, exactly as from a page), the services'
functions for config changes (`protocol.validate_config`'s sentences, one write and a
read-back) and meter reads, the stores for history, events and rollouts (which check
the role and audit themselves). Errors map to statuses once, here: PermissionDenied
403, InvalidInput 422, RequestTimeout 504 (the board did not answer), BusError 503
(the broker is unreachable), StoreError 503.
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import pandas as pd
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from smib_core import protocol
from smib_core.auth import Permission, Principal, require
from smib_core.csvsafe import write_csv
from smib_core.errors import BusError, InvalidInput, PermissionDenied, RequestTimeout, StoreError
from smib_core.protocol import ConfigReply, MeterReply
from smib_core.services.actions import BoardActions
from smib_core.services.board_config import write_and_confirm
from smib_core.services.board_maintenance import restart_and_confirm
from smib_core.services.config_forms import diff
from smib_core.services.export import ExportRequest, column_spec, export_chunks
from smib_core.services.meter_report import Scope
from smib_core.services.rollout_plan import start_rollout
from smib_core.store.events import EventStore
from smib_core.store.meters import MeterStore
from smib_core.store.rollouts import Rollout, RolloutStore
from smib_core.web import metrics
from smib_core.web.access import caller, context
from smib_core.web.context import WebContext

log = logging.getLogger(__name__)

Caller = Annotated[Principal, Depends(caller)]
Context = Annotated[WebContext, Depends(context)]
READ_TIMEOUT_S = 5.0


def _actions(ctx: WebContext, principal: Principal) -> BoardActions:
    return BoardActions(ctx.bus, ctx.audit, principal)


def _relay(relay: str) -> str:
    return protocol.normalize_relay_id(relay)


# --- boards ------------------------------------------------------------------------------


class Board(BaseModel):
    relay: str
    cabinet: str | None = Field(description="the cabinet's name in the registry")
    cabinet_id: str | None
    location: str | None = Field(description="the location's id")
    online: bool
    last_seen: datetime | None
    firmware: str | None
    version: str | None


router = APIRouter()


@router.get("/boards", response_model=list[Board], tags=["boards"])
def boards(principal: Caller, ctx: Context) -> list[Board]:
    """Every registered cabinet's board and every board heard that no cabinet claims."""
    require(principal, Permission.VIEW_FLEET)
    seen = ctx.bus.relays_seen()
    now = time.time()
    rows: dict[str, Board] = {}
    for cabinet in ctx.registry.cabinets():
        if cabinet.relay:
            rows[cabinet.relay] = _board(ctx, cabinet.relay, seen, now, cabinet)
    for relay in seen:
        if relay not in rows:
            rows[relay] = _board(ctx, relay, seen, now, None)
    return [rows[r] for r in sorted(rows)]


def _board(ctx: WebContext, relay: str, seen: dict[str, float], now: float, cabinet: Any) -> Board:
    heard = seen.get(relay)
    firmware = ctx.bus.firmware(relay)
    return Board(
        relay=relay,
        cabinet=cabinet.name if cabinet else None,
        cabinet_id=cabinet.id if cabinet else None,
        location=cabinet.location_id if cabinet else None,
        online=heard is not None and now - heard < ctx.settings.offline_after_s,
        last_seen=datetime.fromtimestamp(heard, UTC) if heard is not None else None,
        firmware=firmware[0] if firmware else None,
        version=firmware[1] if firmware else None,
    )


class ConfigOut(BaseModel):
    relay: str
    component: str
    fields: dict[str, Any] = Field(description="as the board reported them, secrets masked")


@router.get("/boards/{relay}/config/{component}", response_model=ConfigOut, tags=["boards"])
def live_config(relay: str, component: str, principal: Caller, ctx: Context) -> ConfigOut:
    """Ask the board for one component now (504 when it does not answer)."""
    comp = protocol.check_component(component)
    reply = _actions(ctx, principal).request(
        _relay(relay), protocol.config_read(comp), READ_TIMEOUT_S
    )
    fields = reply.fields if isinstance(reply, ConfigReply) else {}
    return ConfigOut(relay=reply.relay, component=comp, fields=protocol.mask_secrets(fields))


class ConfigChange(BaseModel):
    fields: dict[str, int | str] = Field(description="board field name -> new value")


class FieldOutcome(BaseModel):
    field: str
    before: str
    after: str
    reported: str
    confirmed: bool


class ConfigChangeOut(BaseModel):
    relay: str
    component: str
    outcome: str = Field(description="confirmed, not_confirmed, timed_out or unchanged")
    message: str
    audit_id: str | None
    fields: list[FieldOutcome]


@router.post("/boards/{relay}/config/{component}", response_model=ConfigChangeOut, tags=["boards"])
def change_config(
    relay: str, component: str, change: ConfigChange, principal: Caller, ctx: Context
) -> ConfigChangeOut:
    """Write the fields that differ (checked as on the Cabinet page), then read the
    component back: each field's outcome says whether the board reports the new value."""
    require(principal, Permission.CONFIGURE_BOARD)
    relay, comp = _relay(relay), protocol.check_component(component)
    protocol.validate_config(comp, change.fields)  # the page's sentences, before any read
    actions = _actions(ctx, principal)
    current = actions.request(relay, protocol.config_read(comp), READ_TIMEOUT_S)
    reported = current.fields if isinstance(current, ConfigReply) else {}
    changes = diff(reported, change.fields)
    if not changes:
        return ConfigChangeOut(
            relay=relay,
            component=comp,
            outcome="unchanged",
            message="Nothing to change: the board already reports these values.",
            audit_id=None,
            fields=[],
        )
    typed = protocol.validate_config(comp, {c.field: c.after for c in changes})
    changes = [type(c)(c.field, c.before, typed[c.field]) for c in changes]
    result = write_and_confirm(actions, relay, comp, changes, READ_TIMEOUT_S)
    return ConfigChangeOut(
        relay=relay,
        component=comp,
        outcome=result.outcome,
        message=result.message,
        audit_id=result.audit_id,
        fields=[
            FieldOutcome(
                field=c.field,
                before=c.before,
                after=c.after,
                reported=c.reported,
                confirmed=c.confirmed,
            )
            for c in result.checks
        ],
    )


class Meter(BaseModel):
    code: str
    name: str
    unit: str
    value: int | None = Field(description="None: the machine does not support this meter")


class MetersOut(BaseModel):
    relay: str
    read_at: datetime
    meters: list[Meter]


@router.post("/boards/{relay}/meters", response_model=MetersOut, tags=["boards"])
def meters_now(relay: str, principal: Caller, ctx: Context) -> MetersOut:
    """Read the machine's SAS meters now, decoded (504 when the board does not answer,
    502 when its reply holds no meters: a frame that failed a check, the board's -1)."""
    relay = _relay(relay)
    actions = _actions(ctx, principal)
    reply = actions.request(relay, protocol.read_meters(), READ_TIMEOUT_S)
    if not isinstance(reply, MeterReply) or reply.reading is None:
        why = reply.failure if isinstance(reply, MeterReply) else "not a meter reply"
        raise HTTPException(502, f"board {relay} answered without meters: {why}")
    return MetersOut(
        relay=relay,
        read_at=datetime.now(UTC),
        meters=[
            Meter(code=m.code, name=m.spec.name, unit=m.spec.unit.value, value=m.value)
            for m in reply.reading.meters
        ],
    )


class RestartOut(BaseModel):
    relay: str
    audit_id: str
    confirmed: bool = Field(description="the board answered `cfg app` again after the rst")
    message: str


@router.post("/boards/{relay}/restart", response_model=RestartOut, tags=["boards"])
def restart_board(
    relay: str,
    principal: Caller,
    ctx: Context,
    timeout_s: Annotated[float, Query(gt=0, le=300)] = 60.0,
) -> RestartOut:
    """Send `rst`, then wait (at most `timeout_s`) for the board to answer again."""
    outcome = restart_and_confirm(_actions(ctx, principal), _relay(relay), timeout_s)
    return RestartOut(
        relay=outcome.relay,
        audit_id=outcome.audit_id,
        confirmed=outcome.ok,
        message=outcome.message,
    )


# --- meter history -----------------------------------------------------------------------


def _csv_chunks(chunks: Iterator[pd.DataFrame], headers: list[str]) -> Iterator[bytes]:
    """The CSV export as the Export page writes it (`csvsafe`: formulas neutralised)."""
    buffer = io.StringIO()
    write_csv(pd.DataFrame(columns=headers), buffer)
    yield buffer.getvalue().encode()
    for frame in chunks:
        buffer = io.StringIO()
        write_csv(frame, buffer, header=False, date_format="%Y-%m-%d %H:%M:%S")
        yield buffer.getvalue().encode()


def _json_chunks(chunks: Iterator[pd.DataFrame]) -> Iterator[bytes]:
    yield b"["
    first = True
    for frame in chunks:
        text = frame.to_json(orient="records", date_format="iso", lines=False)
        body = text.strip()[1:-1]
        if body:
            yield (b"" if first else b",") + body.encode()
            first = False
    yield b"]"


def _parquet_chunks(chunks: Iterator[pd.DataFrame], granularity: str) -> Iterator[bytes]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from smib_core.services.export_files import _ARROW

    schema = pa.schema([(h, _ARROW[k]) for _, h, k in column_spec(granularity)])  # type: ignore[arg-type]
    sink = io.BytesIO()
    writer = pq.ParquetWriter(sink, schema, compression="snappy")
    for frame in chunks:
        writer.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False))
        yield _take(sink)
    writer.close()
    yield _take(sink)


def _take(sink: io.BytesIO) -> bytes:
    data = sink.getvalue()
    sink.seek(0)
    sink.truncate()
    return data


def _instant(value: datetime, tz: str) -> pd.Timestamp:
    """A time given with an offset as it is; without one, the casino's wall time
    (SMIB_TIMEZONE, as `smib export` reads it; a repeated wall time is its first one)."""
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is not None:
        return stamp
    return stamp.tz_localize(tz, ambiguous=True, nonexistent="shift_forward")


MEDIA = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "parquet": "application/vnd.apache.parquet",
}


@router.get("/meters/history", tags=["meters"])
def meter_history(
    principal: Caller,
    ctx: Context,
    start: Annotated[datetime, Query(description="start, included (no offset: SMIB_TIMEZONE)")],
    end: Annotated[datetime, Query(description="end, excluded (no offset: SMIB_TIMEZONE)")],
    location: Annotated[str | None, Query(description="a location id")] = None,
    granularity: Literal["raw", "hour", "day"] = "day",
    format: Literal["json", "csv", "parquet"] = "json",
) -> StreamingResponse:
    """Meter history for a period (raw readings or hourly/daily movement), streamed chunk
    by chunk: JSON (an array of rows), CSV (formulas neutralised) or Parquet."""
    require(principal, Permission.EXPORT)
    tz = ctx.settings.timezone
    request = ExportRequest(
        _instant(start, tz),
        _instant(end, tz),
        granularity,
        "parquet" if format == "parquet" else "csv",
        Scope.of(location_ids=[location] if location else None),
        tz=tz,
        gaming_day_start_hour=ctx.settings.gaming_day_start_hour,
    )
    cabinets = max(1, len(ctx.registry.cabinets(location)))
    chunks = export_chunks(
        MeterStore(ctx.db),
        request,
        cabinets=cabinets,
    )
    detail = {**request.detail(), "format": format, "via": "api"}
    ctx.audit.record(principal.name, "export", [], detail, "ok")
    if format == "csv":
        headers = [h for _, h, _ in column_spec(granularity)]
        body: Iterator[bytes] = _csv_chunks(chunks, headers)
    elif format == "parquet":
        body = _parquet_chunks(chunks, granularity)
    else:
        body = _json_chunks(chunks)
    name = request.file_name.rsplit(".", 1)[0] + f".{format}"
    return StreamingResponse(
        body,
        media_type=MEDIA[format],
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


# --- events ------------------------------------------------------------------------------


@router.get("/events", tags=["events"])
def events(
    principal: Caller,
    ctx: Context,
    since: datetime | None = None,
    until: datetime | None = None,
    relay: Annotated[list[str] | None, Query()] = None,
    kind: Annotated[list[str] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> JSONResponse:
    """Machine events, newest first (the last 24 hours unless `since` says)."""
    require(principal, Permission.VIEW_EVENTS)
    tz = ctx.settings.timezone
    first = _instant(since, tz) if since else pd.Timestamp.now(UTC) - pd.Timedelta(hours=24)
    last = _instant(until, tz) if until else None
    frame = EventStore(ctx.db).query(
        relays=[_relay(r) for r in relay or []],
        kinds=kind or [],
        since=first.to_pydatetime(),
        until=last.to_pydatetime() if last is not None else None,
        limit=limit,
    )
    return JSONResponse(json.loads(frame.to_json(orient="records", date_format="iso")))


# --- rollouts ----------------------------------------------------------------------------


class RolloutIn(BaseModel):
    firmware_id: str
    relays: list[str]
    batch_size: int = Field(5, ge=1)
    min_success_pct: float = Field(80.0, ge=0, le=100)
    timeout_s: float = Field(600.0, gt=0)


def _rollout(rollout: Rollout, store: RolloutStore | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": rollout.id,
        "firmware_id": rollout.firmware_id,
        "product": rollout.product,
        "version": rollout.version,
        "relays": list(rollout.relays),
        "batch_size": rollout.batch_size,
        "min_success_pct": rollout.min_success_pct,
        "state": rollout.state,
        "reason": rollout.reason,
        "actor": rollout.actor,
        "current_batch": rollout.current_batch,
        "created_at": rollout.created_at,
        "started_at": rollout.started_at,
        "finished_at": rollout.finished_at,
    }
    if store is not None:
        out["boards"] = [
            {
                "relay": b.relay,
                "batch": b.batch,
                "state": b.state,
                "reason": b.reason,
                "previous_version": b.previous_version,
                "version": b.version,
            }
            for b in store.boards(rollout.id)
        ]
    return out


@router.get("/rollouts", tags=["rollouts"])
def rollouts(principal: Caller, ctx: Context) -> list[dict[str, Any]]:
    require(principal, Permission.OTA)
    return [_rollout(r) for r in RolloutStore(ctx.db).recent()]


@router.post("/rollouts", status_code=201, tags=["rollouts"])
def create_rollout(body: RolloutIn, principal: Caller, ctx: Context) -> dict[str, Any]:
    """Record a rollout; the worker's rollout runner drives it (follow it with GET)."""
    rollout = start_rollout(
        ctx.db,
        principal,
        body.firmware_id,
        body.relays,
        batch_size=body.batch_size,
        min_success_pct=body.min_success_pct,
        timeout_s=body.timeout_s,
    )
    return _rollout(rollout, RolloutStore(ctx.db))


def _found(rollout: Rollout | None, rollout_id: str) -> Rollout:
    if rollout is None:
        raise LookupError(f"no rollout {rollout_id[:40]!r}")
    return rollout


@router.get("/rollouts/{rollout_id}", tags=["rollouts"])
def follow_rollout(rollout_id: str, principal: Caller, ctx: Context) -> dict[str, Any]:
    require(principal, Permission.OTA)
    store = RolloutStore(ctx.db)
    return _rollout(_found(store.get(rollout_id), rollout_id), store)


@router.post("/rollouts/{rollout_id}/{action}", tags=["rollouts"])
def steer_rollout(
    rollout_id: str,
    action: Literal["pause", "resume", "cancel"],
    principal: Caller,
    ctx: Context,
) -> dict[str, Any]:
    store = RolloutStore(ctx.db)
    _found(store.get(rollout_id), rollout_id)
    rollout = getattr(store, action)(rollout_id, principal)
    return _rollout(rollout, store)


# --- the application ---------------------------------------------------------------------


def _error(status: int, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=status)


def build_api() -> FastAPI:
    """The `/api/v1` application (mounted by `web.asgi`)."""
    from smib_core.web.stream import router as stream_router

    api = FastAPI(
        title="SMIB Console API",
        version="1",
        description="Boards, live config, meters, history, events, rollouts and a live "
        "stream. Authenticate with `Authorization: Bearer <token>` (`smib token create`).",
    )
    api.include_router(router)
    api.include_router(stream_router)

    @api.middleware("http")
    async def count(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        metrics.API_REQUESTS.labels(status=str(response.status_code)).inc()
        return response

    for exc_type, status in (
        (PermissionDenied, 403),
        (InvalidInput, 422),
        (RequestTimeout, 504),
        (BusError, 503),
        (StoreError, 503),
        (LookupError, 404),
    ):
        api.add_exception_handler(exc_type, lambda _r, e, s=status: _error(s, e))
    return api
