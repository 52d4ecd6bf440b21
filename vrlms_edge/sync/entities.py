"""What travels between box and org server, in which direction, and how a payload maps to a row.

Down (the org server authors; read-only on an enrolled box): the org itself, users, the
catalog, classes and enrollments. Up (the box authors): devices, sessions, attendance,
results and event summaries (domain/event_summaries.py; raw events stay on the box). Lists
are in dependency order: a parent comes before the rows that refer to it, so
a page applied in this order never breaks a foreign key.

A payload is every column of the row as JSON (`outbox.row_payload`); `decode_values` turns it
back into column values, ignoring keys the model does not have.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from sqlalchemy import inspect
from sqlalchemy.orm import ColumnProperty

from vrlms_edge.store.models import (
    Attendance,
    Base,
    Class,
    Course,
    Device,
    Enrollment,
    EventSummary,
    Lesson,
    Module,
    Org,
    Result,
    Session,
    SessionLesson,
    User,
    UTCDateTime,
)

DOWN: Final[dict[str, type[Base]]] = {
    "orgs": Org,
    "users": User,
    "courses": Course,
    "modules": Module,
    "lessons": Lesson,
    "classes": Class,
    "enrollments": Enrollment,
}
UP: Final[dict[str, type[Base]]] = {
    "devices": Device,
    "sessions": Session,
    "session_lessons": SessionLesson,
    "attendance": Attendance,
    "results": Result,
    "event_summaries": EventSummary,
}
RANK: Final[dict[str, int]] = {name: i for i, name in enumerate([*DOWN, *UP])}
# Models whose rows the org server authors (refused on an enrolled box, recorded in the
# org server's change log).
ORG_AUTHORED: Final[tuple[type[Base], ...]] = tuple(DOWN.values())


class PayloadError(ValueError):
    """A payload that does not fit its model (wrong types, missing id)."""


def org_of(model: type[Base], values: dict[str, Any]) -> Any:
    return values.get("id") if model is Org else values.get("org_id")


def decode_values(model: type[Base], payload: dict[str, Any]) -> dict[str, Any]:
    """Column values for `model` from a JSON payload. Raises PayloadError."""
    if not isinstance(payload.get("id"), str) or not payload["id"]:
        raise PayloadError("payload without a string id")
    values: dict[str, Any] = {}
    for prop in inspect(model).column_attrs:
        if prop.key not in payload:
            continue
        raw = payload[prop.key]
        values[prop.key] = _decode(prop, raw)
    return values


def _decode(prop: ColumnProperty[Any], raw: Any) -> Any:
    column = prop.columns[0]
    if raw is None:
        if not column.nullable:
            raise PayloadError(f"{prop.key} may not be null")
        return None
    if isinstance(column.type, UTCDateTime):
        if not isinstance(raw, str):
            raise PayloadError(f"{prop.key}: expected an ISO 8601 time")
        try:
            value = datetime.fromisoformat(raw)
        except ValueError as exc:
            raise PayloadError(f"{prop.key}: {exc}") from exc
        if value.tzinfo is None:
            raise PayloadError(f"{prop.key}: time without a zone")
        return value
    try:
        python_type = column.type.python_type
    except NotImplementedError:
        return raw
    if python_type is float and isinstance(raw, int) and not isinstance(raw, bool):
        return float(raw)
    if python_type is dict and not isinstance(raw, dict):
        raise PayloadError(f"{prop.key}: expected an object")
    if python_type in (str, int, bool, float) and type(raw) is not python_type:
        raise PayloadError(f"{prop.key}: expected {python_type.__name__}")
    if python_type is bytes:
        raise PayloadError(f"{prop.key}: binary columns do not travel")
    return raw


def references(model: type[Base]) -> dict[str, str]:
    """Foreign-key columns of a model (besides org_id) -> the table they point to."""
    refs: dict[str, str] = {}
    for prop in inspect(model).column_attrs:
        for column in prop.columns:
            for fk in column.foreign_keys:
                if prop.key != "org_id":
                    refs[prop.key] = str(fk.column.table.name)
    return refs


def model_for(table: str) -> type[Base] | None:
    return DOWN.get(table) or UP.get(table)
