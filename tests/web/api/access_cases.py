"""One entry per /api/ route for the access matrix (test_access_matrix.py): how to call it on
the objects of an org. A route added without an entry here fails the matrix test.

`scoped=True`: the request names objects of the org it is built for, so built for another
org it must answer 404 to every role that may call the route at all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final


@dataclass(frozen=True)
class Ids:
    org_slug: str
    class_id: str
    session_id: str
    lesson_id: str
    module_id: str
    course_id: str
    student_id: str
    teacher_id: str
    device_id: str


Request = tuple[str, dict[str, Any] | None]

ANYONE: Final = None
EVERY_ROLE: Final = frozenset({"student", "teacher", "admin"})
STAFF: Final = frozenset({"teacher", "admin"})
ADMIN: Final = frozenset({"admin"})


@dataclass(frozen=True)
class Case:
    build: Callable[[Ids], Request]
    scoped: bool = True


def fixed(path: str, body: dict[str, Any] | None = None) -> Case:
    return Case(lambda ids: (path, body), scoped=False)


def _session_cmd(name: str, **extra: Any) -> Case:
    return Case(lambda ids: (f"/api/session/{name}/", {"session_id": ids.session_id, **extra}))


CASES: dict[tuple[str, str], Case] = {
    # system
    ("GET", "/api/health"): fixed("/api/health"),
    ("GET", "/api/openapi.json"): fixed("/api/openapi.json"),
    # sync with the org server
    ("GET", "/api/sync/status"): fixed("/api/sync/status"),
    ("POST", "/api/sync/now"): fixed("/api/sync/now"),
    ("GET", "/api/docs"): fixed("/api/docs"),
    # accounts
    ("POST", "/api/login/"): fixed("/api/login/", {"nickname": "nobody", "pin": "0000"}),
    ("POST", "/api/logout/"): fixed("/api/logout/"),
    ("GET", "/api/me/"): fixed("/api/me/"),
    # catalog
    ("GET", "/api/courses/"): fixed("/api/courses/"),
    ("GET", "/api/courses/{course_id}/"): Case(lambda i: (f"/api/courses/{i.course_id}/", None)),
    ("POST", "/api/courses/"): fixed("/api/courses/", {"title": "New course"}),
    ("PATCH", "/api/courses/{course_id}/"): Case(
        lambda i: (f"/api/courses/{i.course_id}/", {"title": "Renamed"})
    ),
    ("DELETE", "/api/courses/{course_id}/"): Case(lambda i: (f"/api/courses/{i.course_id}/", None)),
    ("POST", "/api/modules/"): Case(
        lambda i: ("/api/modules/", {"course_id": i.course_id, "title": "M"})
    ),
    ("PATCH", "/api/modules/{module_id}/"): Case(
        lambda i: (f"/api/modules/{i.module_id}/", {"title": "Renamed"})
    ),
    ("DELETE", "/api/modules/{module_id}/"): Case(lambda i: (f"/api/modules/{i.module_id}/", None)),
    ("GET", "/api/lessons/"): fixed("/api/lessons/"),
    ("GET", "/api/lessons/{lesson_id}/"): Case(lambda i: (f"/api/lessons/{i.lesson_id}/", None)),
    ("POST", "/api/lessons/"): Case(
        lambda i: (
            "/api/lessons/",
            {"module_id": i.module_id, "title": "L", "apk_package": "com.example.l"},
        )
    ),
    ("PATCH", "/api/lessons/{lesson_id}/"): Case(
        lambda i: (f"/api/lessons/{i.lesson_id}/", {"title": "Renamed"})
    ),
    ("DELETE", "/api/lessons/{lesson_id}/"): Case(lambda i: (f"/api/lessons/{i.lesson_id}/", None)),
    # classes
    ("GET", "/api/classes/"): fixed("/api/classes/"),
    ("GET", "/api/classes/{class_id}/"): Case(lambda i: (f"/api/classes/{i.class_id}/", None)),
    ("POST", "/api/classes/"): Case(
        lambda i: ("/api/classes/", {"name": "New class", "teacher_id": i.teacher_id})
    ),
    ("PATCH", "/api/classes/{class_id}/"): Case(
        lambda i: (f"/api/classes/{i.class_id}/", {"name": "Renamed"})
    ),
    ("DELETE", "/api/classes/{class_id}/"): Case(lambda i: (f"/api/classes/{i.class_id}/", None)),
    ("POST", "/api/classes/{class_id}/enroll/"): Case(
        lambda i: (f"/api/classes/{i.class_id}/enroll/", {"user_ids": [i.student_id]})
    ),
    ("POST", "/api/classes/{class_id}/unenroll/"): Case(
        lambda i: (f"/api/classes/{i.class_id}/unenroll/", {"user_ids": [i.student_id]})
    ),
    ("GET", "/api/classes/{class_id}/timetable.ics"): Case(
        lambda i: (f"/api/classes/{i.class_id}/timetable.ics", None)
    ),
    # users
    ("GET", "/api/users/"): fixed("/api/users/"),
    ("GET", "/api/users/{user_id}/"): Case(lambda i: (f"/api/users/{i.student_id}/", None)),
    ("POST", "/api/users/"): fixed(
        "/api/users/",
        {"role": "student", "nickname": "matrix-new", "display_name": "New", "pin": "4321"},
    ),
    ("POST", "/api/users/{user_id}/disable/"): Case(
        lambda i: (f"/api/users/{i.student_id}/disable/", None)
    ),
    ("POST", "/api/users/{user_id}/enable/"): Case(
        lambda i: (f"/api/users/{i.student_id}/enable/", None)
    ),
    ("POST", "/api/users/{user_id}/pin/"): Case(
        lambda i: (f"/api/users/{i.student_id}/pin/", {"pin": "1234"})
    ),
    ("POST", "/api/users/{user_id}/password/"): Case(
        lambda i: (f"/api/users/{i.teacher_id}/password/", {"password": "another-long-secret"})
    ),
    # devices
    ("POST", "/api/devices/register/"): Case(
        lambda i: ("/api/devices/register/", {"device_id": "matrix-hs", "org": i.org_slug}),
        scoped=False,
    ),
    ("GET", "/api/devices/"): fixed("/api/devices/"),
    ("GET", "/api/devices/{device}/"): Case(lambda i: (f"/api/devices/{i.device_id}/", None)),
    ("POST", "/api/devices/{device}/approve/"): Case(
        lambda i: (f"/api/devices/{i.device_id}/approve/", None)
    ),
    ("POST", "/api/devices/{device}/block/"): Case(
        lambda i: (f"/api/devices/{i.device_id}/block/", None)
    ),
    ("POST", "/api/devices/{device}/bind/"): Case(
        lambda i: (f"/api/devices/{i.device_id}/bind/", {"user_id": i.student_id})
    ),
    ("POST", "/api/devices/{device}/unbind/"): Case(
        lambda i: (f"/api/devices/{i.device_id}/unbind/", None)
    ),
    # sessions
    ("POST", "/api/session/create/"): Case(
        lambda i: ("/api/session/create/", {"class_id": i.class_id})
    ),
    ("POST", "/api/session/addLesson/"): Case(
        lambda i: (
            "/api/session/addLesson/",
            {"session_id": i.session_id, "lesson_id": i.lesson_id},
        )
    ),
    ("POST", "/api/session/removeLesson/"): Case(
        lambda i: (
            "/api/session/removeLesson/",
            {"session_id": i.session_id, "lesson_id": i.lesson_id},
        )
    ),
    ("POST", "/api/session/reorder/"): Case(
        lambda i: ("/api/session/reorder/", {"session_id": i.session_id, "lesson_ids": []})
    ),
    ("POST", "/api/session/update/"): _session_cmd("update", title="T"),
    ("PATCH", "/api/sessions/{session_id}/"): Case(
        lambda i: (f"/api/sessions/{i.session_id}/", {"title": "T"})
    ),
    ("POST", "/api/session/start/"): _session_cmd("start"),
    ("POST", "/api/session/pause/"): _session_cmd("pause"),
    ("POST", "/api/session/stop/"): _session_cmd("stop"),
    ("POST", "/api/session/launch/"): _session_cmd("launch"),
    ("POST", "/api/session/seek/"): _session_cmd("seek", position_ms=1000),
    ("POST", "/api/session/attention/"): _session_cmd("attention", on=True),
    ("GET", "/api/sessions/"): Case(lambda i: (f"/api/sessions/?class_id={i.class_id}", None)),
    ("GET", "/api/sessions/{session_id}/"): Case(
        lambda i: (f"/api/sessions/{i.session_id}/", None)
    ),
    # live classroom
    ("GET", "/api/sessions/{session_id}/live"): Case(
        lambda i: (f"/api/sessions/{i.session_id}/live", None)
    ),
    ("GET", "/api/asyncapi.json"): fixed("/api/asyncapi.json"),
    # tracking
    ("POST", "/api/events/"): Case(
        lambda i: (
            "/api/events/",
            {
                "device_id": i.device_id,
                "stream": "matrix",
                "events": [{"seq": 1, "kind": "click", "t_ms": 1, "data": {"target": "sun"}}],
            },
        )
    ),
    ("GET", "/api/results/"): Case(lambda i: (f"/api/results/?session_id={i.session_id}", None)),
    ("GET", "/api/results.csv"): Case(
        lambda i: (f"/api/results.csv?session_id={i.session_id}", None)
    ),
    ("GET", "/api/sessions/{session_id}/analytics"): Case(
        lambda i: (f"/api/sessions/{i.session_id}/analytics", None)
    ),
    ("GET", "/api/events/export"): Case(
        lambda i: (f"/api/events/export?session_id={i.session_id}", None)
    ),
    ("GET", "/api/devices/{device}/frame.jpg"): Case(
        lambda i: (f"/api/devices/{i.device_id}/frame.jpg", None)
    ),
}


# Who may call each route: the access policy, written down independently of the route tables.
WHO: dict[tuple[str, str], frozenset[str] | None] = {
    ("GET", "/api/health"): ANYONE,
    ("GET", "/api/sync/status"): ADMIN,
    ("POST", "/api/sync/now"): ADMIN,
    ("POST", "/api/login/"): ANYONE,
    ("POST", "/api/logout/"): EVERY_ROLE,
    ("GET", "/api/me/"): EVERY_ROLE,
    ("GET", "/api/courses/"): EVERY_ROLE,
    ("GET", "/api/courses/{course_id}/"): EVERY_ROLE,
    ("POST", "/api/courses/"): ADMIN,
    ("PATCH", "/api/courses/{course_id}/"): ADMIN,
    ("DELETE", "/api/courses/{course_id}/"): ADMIN,
    ("POST", "/api/modules/"): ADMIN,
    ("PATCH", "/api/modules/{module_id}/"): ADMIN,
    ("DELETE", "/api/modules/{module_id}/"): ADMIN,
    ("GET", "/api/lessons/"): EVERY_ROLE,
    ("GET", "/api/lessons/{lesson_id}/"): EVERY_ROLE,
    ("POST", "/api/lessons/"): ADMIN,
    ("PATCH", "/api/lessons/{lesson_id}/"): ADMIN,
    ("DELETE", "/api/lessons/{lesson_id}/"): ADMIN,
    ("GET", "/api/classes/"): EVERY_ROLE,
    ("GET", "/api/classes/{class_id}/"): EVERY_ROLE,
    ("POST", "/api/classes/"): ADMIN,
    ("PATCH", "/api/classes/{class_id}/"): ADMIN,
    ("DELETE", "/api/classes/{class_id}/"): ADMIN,
    ("POST", "/api/classes/{class_id}/enroll/"): STAFF,
    ("POST", "/api/classes/{class_id}/unenroll/"): STAFF,
    ("GET", "/api/users/"): STAFF,
    ("GET", "/api/users/{user_id}/"): STAFF,
    ("POST", "/api/users/"): ADMIN,
    ("POST", "/api/users/{user_id}/disable/"): ADMIN,
    ("POST", "/api/users/{user_id}/enable/"): ADMIN,
    ("POST", "/api/users/{user_id}/pin/"): ADMIN,
    ("POST", "/api/users/{user_id}/password/"): ADMIN,
    ("POST", "/api/devices/register/"): ANYONE,
    ("GET", "/api/devices/"): STAFF,
    ("GET", "/api/devices/{device}/"): STAFF,
    ("POST", "/api/devices/{device}/approve/"): STAFF,
    ("POST", "/api/devices/{device}/block/"): STAFF,
    ("POST", "/api/devices/{device}/bind/"): STAFF,
    ("POST", "/api/devices/{device}/unbind/"): STAFF,
    ("POST", "/api/session/create/"): STAFF,
    ("POST", "/api/session/addLesson/"): STAFF,
    ("POST", "/api/session/removeLesson/"): STAFF,
    ("POST", "/api/session/reorder/"): STAFF,
    ("POST", "/api/session/update/"): STAFF,
    ("PATCH", "/api/sessions/{session_id}/"): STAFF,
    ("POST", "/api/session/start/"): STAFF,
    ("POST", "/api/session/pause/"): STAFF,
    ("POST", "/api/session/stop/"): STAFF,
    ("POST", "/api/session/launch/"): STAFF,
    ("POST", "/api/session/seek/"): STAFF,
    ("POST", "/api/session/attention/"): STAFF,
    ("GET", "/api/sessions/"): EVERY_ROLE,
    ("GET", "/api/sessions/{session_id}/"): EVERY_ROLE,
    ("GET", "/api/classes/{class_id}/timetable.ics"): EVERY_ROLE,
    ("GET", "/api/openapi.json"): ANYONE,
    ("GET", "/api/docs"): ANYONE,
    ("GET", "/api/sessions/{session_id}/live"): STAFF,
    ("GET", "/api/asyncapi.json"): ANYONE,
    ("POST", "/api/events/"): EVERY_ROLE,
    ("GET", "/api/results/"): EVERY_ROLE,
    ("GET", "/api/results.csv"): EVERY_ROLE,
    ("GET", "/api/sessions/{session_id}/analytics"): STAFF,
    ("GET", "/api/events/export"): EVERY_ROLE,
    ("GET", "/api/devices/{device}/frame.jpg"): STAFF,
}
