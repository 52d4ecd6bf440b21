"""The WebSocket protocol of /websocket/: one msgspec Struct per message, error and close codes,
and the reply builders.

Every frame a client sends is decoded with `decode_client` against the tagged union
`ClientMessage` (tag field `type`), so the structs below are at once the validation, the
AsyncAPI document (`asyncapi_document`) and what the tests and the reference headset client use.
Server messages are encoded once per broadcast (`encode`) and sent as preencoded text frames.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

import msgspec

from vrlms_edge.domain.sessions import SessionState

PROTOCOL_VERSION: Final = 1

# --- close codes (RFC 6455 private range 4000-4999 for ours) ----------------------------------
CLOSE_GOING_AWAY: Final = 1001  # the box shuts down
CLOSE_POLICY: Final = 1008  # abusive: a flood of frames or of refused frames
CLOSE_TOO_BIG: Final = 1009  # a frame above the size limit
CLOSE_UNAUTHORIZED: Final = 4401  # missing, unknown, expired or revoked token
CLOSE_FORBIDDEN: Final = 4403  # device not approved / bound to another user / foreign Origin
# The box could not deliver to this connection: its send queue stayed full (or one send did
# not complete) for longer than the drain bound. Reconnect; `welcome` carries the state.
CLOSE_TOO_SLOW: Final = 4408
CLOSE_REPLACED: Final = 4409  # a newer connection of the same device took over
# Nothing (no frame, no pong) heard for two heartbeat intervals.
CLOSE_SILENT: Final = 4410

CLOSE_REASONS: Final[dict[int, str]] = {
    CLOSE_GOING_AWAY: "the box is shutting down; reconnect with back-off",
    CLOSE_POLICY: "too many frames or too many refused frames; reconnect with back-off",
    CLOSE_TOO_BIG: "a frame exceeded the size limit",
    CLOSE_UNAUTHORIZED: "missing or invalid token: log in again",
    CLOSE_FORBIDDEN: "device not approved, bound to another user, or foreign Origin",
    CLOSE_TOO_SLOW: "the connection could not drain its send queue in time; reconnect",
    CLOSE_REPLACED: "a newer connection of this device replaced this one; do not reconnect",
    CLOSE_SILENT: "nothing heard for two heartbeat intervals; reconnect",
}

# --- error codes of `error` messages ----------------------------------------------------------
INVALID_JSON: Final = "invalid_json"
INVALID_MESSAGE: Final = "invalid_message"  # JSON, but not a valid message (fields, types)
UNKNOWN_TYPE: Final = "unknown_type"
RATE_LIMITED: Final = "rate_limited"
NOT_AVAILABLE: Final = "not_available"  # a message this box does not handle (yet)
BINARY_NOT_ALLOWED: Final = "binary_not_allowed"
INVALID_FRAME: Final = "invalid_frame"  # a binary frame that is not a JPEG
FORBIDDEN: Final = "forbidden"
NO_SESSION: Final = "no_session"  # an ack with no session to apply it to

ERROR_CODES: Final = (
    INVALID_JSON,
    INVALID_MESSAGE,
    UNKNOWN_TYPE,
    RATE_LIMITED,
    NOT_AVAILABLE,
    BINARY_NOT_ALLOWED,
    INVALID_FRAME,
    FORBIDDEN,
    NO_SESSION,
)

RequestId = int | str | None


# --- client -> server -------------------------------------------------------------------------


class TimeRequest(msgspec.Struct, kw_only=True, tag="time", tag_field="type"):
    """Clock sample request: t0 is the client's clock when sending (any unit-consistent ms)."""

    id: RequestId = None
    t0: float


class Ack(msgspec.Struct, kw_only=True, tag="ack", tag_field="type"):
    """The headset applied state `rev`; applied_ms is its server-time estimate of when the
    change took effect (for a start: the instant it started playing)."""

    rev: int
    applied_ms: int | None = None
    session_id: str | None = None


class Command(msgspec.Struct, kw_only=True, tag="command", tag_field="type"):
    """Teacher command: the same rules as the REST session endpoints."""

    id: RequestId = None
    session_id: str
    action: Literal["play", "pause", "stop", "launch", "seek", "attention"]
    lesson_id: str | None = None
    position_ms: int | None = None
    lead_ms: int | None = None
    on: bool | None = None
    message: str | None = None


# Limits of an `event` (the tracking part checks `data` size, see live/ingest.py).
MAX_SEQ: Final = 2**53 - 1  # JSON-safe integers
StreamName = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[\x21-\x7e]+$")]
KindName = Annotated[str, msgspec.Meta(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_.:-]+$")]
Seq = Annotated[int, msgspec.Meta(ge=1, le=MAX_SEQ)]
TimeMs = Annotated[int, msgspec.Meta(ge=0, le=MAX_SEQ)]
LessonId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
# An event's `data`: a JSON object, kept as the client's JSON text (msgspec.Raw). The box
# stores that text as it came; building a dict of it only to encode it again was a fifth of
# the event loop's time per event. The ingest checks that it is an object within its size.
EventData = Annotated[msgspec.Raw, msgspec.Meta(extra_json_schema={"type": "object"})]


def empty_object() -> msgspec.Raw:
    return msgspec.Raw(b"{}")


def event_data(value: dict[str, Any]) -> msgspec.Raw:
    """An event's `data` from a dict (for clients building `Event`s)."""
    return msgspec.Raw(_encoder.encode(value))


class Event(msgspec.Struct, kw_only=True, tag="event", tag_field="type"):
    """One interaction event; (device, stream, seq) identifies it, a resend is stored once."""

    stream: StreamName
    seq: Seq
    kind: KindName
    t_ms: TimeMs
    lesson_id: LessonId | None = None
    # A factory, not a shared default: a Raw default cannot appear in the JSON schema.
    data: EventData = msgspec.field(default_factory=empty_object)


class Status(msgspec.Struct, kw_only=True, tag="status", tag_field="type"):
    """The headset's current status; the newest one wins."""

    battery: float | None = None
    app: str | None = None
    playing: bool | None = None
    position_ms: int | None = None
    view: dict[str, Any] | None = None


ClientMessage = TimeRequest | Ack | Command | Event | Status
CLIENT_MESSAGES: Final[tuple[type[msgspec.Struct], ...]] = (
    TimeRequest,
    Ack,
    Command,
    Event,
    Status,
)
CLIENT_TYPES: Final = frozenset(m.__struct_config__.tag for m in CLIENT_MESSAGES)

# --- server -> client -------------------------------------------------------------------------


class UserInfo(msgspec.Struct, kw_only=True):
    id: str
    nickname: str
    display_name: str


class DeviceInfo(msgspec.Struct, kw_only=True):
    id: str  # devices.id (as in GET /api/devices/{id}/frame.jpg)
    device_id: str  # the id the headset app reports
    name: str
    status: Literal["pending", "approved", "blocked"]


class Welcome(msgspec.Struct, kw_only=True, tag="welcome", tag_field="type"):
    protocol: int
    server_ms: int
    role: Literal["student", "teacher", "admin"]
    user: UserInfo
    device: DeviceInfo | None
    session: SessionState | None
    heartbeat_s: float


class TimeReply(msgspec.Struct, kw_only=True, tag="time", tag_field="type"):
    """t1: server clock when the request arrived; t2: when the reply left."""

    id: RequestId
    t0: float
    t1: int
    t2: int


class ErrorBody(msgspec.Struct, kw_only=True):
    code: str
    message: str


class Result(msgspec.Struct, kw_only=True, tag="result", tag_field="type", omit_defaults=True):
    """Reply to a `command`: ok with the new state, or not ok with an error."""

    id: RequestId
    ok: bool
    state: SessionState | None = None
    error: ErrorBody | None = None


class Error(msgspec.Struct, kw_only=True, tag="error", tag_field="type"):
    id: RequestId = None
    error: ErrorBody


class EventAck(msgspec.Struct, kw_only=True, tag="event_ack", tag_field="type"):
    """Every seq <= `seq` of `stream` is durably stored."""

    stream: str
    seq: int


class StudentLive(msgspec.Struct, kw_only=True):
    """One student in a teacher's class picture."""

    user_id: str
    nickname: str
    display_name: str
    online: bool = False
    device: str | None = None  # devices.id of the connected headset
    applied_rev: int | None = None
    # applied_ms - anchor_server_ms of the acked start: how late (+) this headset began.
    skew_ms: int | None = None
    rtt_ms: float | None = None
    last_seen_ms: int | None = None
    status: Status | None = None
    frame_ms: int | None = None  # server time of the newest JPEG view, if any
    # From the tracking part: newest committed progress, last gaze target, view frame count.
    lesson_id: str | None = None
    progress: float | None = None
    target: str | None = None
    frame_rev: int = 0


class ClassPicture(msgspec.Struct, kw_only=True, tag="class", tag_field="type"):
    """Presence, status, acks and RTT of a class's students (teacher connections)."""

    class_id: str
    session_id: str | None
    rev: int | None
    lead_ms: int
    students: list[StudentLive]


ServerMessage = Welcome | SessionState | TimeReply | Result | Error | EventAck | ClassPicture
SERVER_MESSAGES: Final[tuple[type[msgspec.Struct], ...]] = (
    Welcome,
    SessionState,
    TimeReply,
    Result,
    Error,
    EventAck,
    ClassPicture,
)

_encoder: Final = msgspec.json.Encoder()
_client_decoder: Final[msgspec.json.Decoder[ClientMessage]] = msgspec.json.Decoder(ClientMessage)
_server_decoder: Final[msgspec.json.Decoder[ServerMessage]] = msgspec.json.Decoder(ServerMessage)


def encode(message: msgspec.Struct) -> str:
    """Serialize once; the result is sent as-is to every recipient."""
    return _encoder.encode(message).decode()


class Refusal(Exception):
    """A frame that is refused with an `error` message (the connection stays open)."""

    def __init__(self, code: str, message: str, request_id: RequestId = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


def _request_id(raw: str | bytes) -> RequestId:
    """Best-effort `id` of a refused frame so the client can match the error."""
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return None
    if isinstance(value, dict):
        rid = value.get("id")
        if isinstance(rid, int | str) and not isinstance(rid, bool):
            return rid
    return None


def decode_client(raw: str | bytes) -> ClientMessage:
    """The message in a client text frame, or Refusal with the error code to answer."""
    try:
        return _client_decoder.decode(raw)
    except msgspec.ValidationError as exc:
        text = str(exc)
        rid = _request_id(raw)
        if text.endswith("at `$.type`") or "missing required field `type`" in text:
            raise Refusal(UNKNOWN_TYPE, f"unknown or missing message type: {text}", rid) from exc
        raise Refusal(INVALID_MESSAGE, text, rid) from exc
    except msgspec.DecodeError as exc:
        raise Refusal(INVALID_JSON, f"frame is not valid JSON: {exc}") from exc


def decode_server(raw: str | bytes) -> ServerMessage:
    """A server frame (for clients: the reference headset client and the tests)."""
    return _server_decoder.decode(raw)


# --- reply builders ---------------------------------------------------------------------------


def error(code: str, message: str, request_id: RequestId = None) -> str:
    return encode(Error(id=request_id, error=ErrorBody(code=code, message=message)))


def time_reply(request: TimeRequest, t1: int, t2: int) -> str:
    return encode(TimeReply(id=request.id, t0=request.t0, t1=t1, t2=t2))


def result_ok(request_id: RequestId, state: SessionState) -> str:
    return encode(Result(id=request_id, ok=True, state=state))


def result_error(request_id: RequestId, code: str, message: str) -> str:
    return encode(Result(id=request_id, ok=False, error=ErrorBody(code=code, message=message)))


def event_ack(stream: str, seq: int) -> str:
    return encode(EventAck(stream=stream, seq=seq))
