"""Role x route x foreign-org matrix over EVERY registered /api/ route.

For each route (from the route tables the app installs) and each caller (no token, student,
teacher, admin): a caller whose role the route does not declare gets 401/403; a caller it
does declare, naming another org's objects, gets 404; lists never show another org's ids.
A route without an entry in access_cases.CASES fails this test.
"""

from __future__ import annotations

from typing import Any

from tests.conftest import RunningBox
from tests.web.api.access_cases import CASES, WHO, Ids
from tests.world import OrgWorld, bearer, make_device, make_org, token
from vrlms_edge.app import api_registries
from vrlms_edge.domain import sessions
from vrlms_edge.domain.principal import Principal
from vrlms_edge.keys import CLOCK, DB
from vrlms_edge.store.models import Module, Role
from vrlms_edge.web.routing import ApiRoute

ROLES = (Role.student, Role.teacher, Role.admin)


def api_routes() -> list[ApiRoute]:
    return [r for reg in api_registries() for r in reg.routes if r.path.startswith("/api/")]


def test_every_api_route_has_a_matrix_entry(box: RunningBox) -> None:
    declared = {(r.method, r.path) for r in api_routes()}
    # Every /api/ route the running app serves is declared in a route table (no strays).
    served = {
        (route.method, route.resource.canonical)
        for route in box.app.router.routes()
        if route.resource is not None
        and route.resource.canonical.startswith("/api/")
        and route.method != "HEAD"
    }
    assert served == declared
    missing = sorted(declared - set(CASES))
    assert not missing, f"routes without an access matrix entry: {missing}"
    stale = sorted(set(CASES) - declared)
    assert not stale, f"matrix entries for routes that do not exist: {stale}"
    assert set(WHO) == declared
    for route in api_routes():
        declared_roles = None if route.roles is None else {r.value for r in route.roles}
        assert declared_roles == WHO[(route.method, route.path)], (route.method, route.path)


async def ids_of(box: RunningBox, world: OrgWorld) -> Ids:
    actor = Principal(
        user_id=world.teacher.id,
        org_id=world.org.id,
        role=Role.teacher,
        nickname=world.teacher.nickname,
        display_name="",
        token_id="",
    )
    session = await sessions.create_session(
        box.app[DB],
        actor,
        sessions.NewSession(class_id=world.klass.id, lesson_ids=[world.lessons[0].id]),
        now=box.app[CLOCK].now(),
    )
    device = await make_device(box.app[DB], world, f"{world.slug}-hs1")
    lesson = world.lessons[0]
    return Ids(
        org_slug=world.slug,
        class_id=world.klass.id,
        session_id=session.id,
        lesson_id=lesson.id,
        module_id=lesson.module_id,
        course_id=(await _course_of(box, lesson.module_id)),
        student_id=world.students[0].id,
        teacher_id=world.teacher.id,
        device_id=device.id,
    )


async def _course_of(box: RunningBox, module_id: str) -> str:
    async with box.app[DB].read() as s:
        module = await s.get(Module, module_id)
        assert module is not None
        return module.course_id


async def call(
    box: RunningBox, method: str, path: str, body: dict[str, Any] | None, tok: str | None
) -> tuple[int, str]:
    headers = bearer(tok) if tok else {}
    async with box.http.request(method, path, json=body, headers=headers) as resp:
        return resp.status, await resp.text()


async def test_role_route_foreign_org_matrix(box: RunningBox) -> None:
    db = box.app[DB]
    home = await make_org(db, "home")
    away = await make_org(db, "away", prefix="a-")
    home_ids = await ids_of(box, home)
    away_ids = await ids_of(box, away)
    foreign_values = [v for v in vars(away_ids).values() if v != away_ids.org_slug]
    tokens = {
        Role.student: await token(box.http, home.students[0], org="home"),
        Role.teacher: await token(box.http, home.teacher, org="home"),
        Role.admin: await token(box.http, home.admin, org="home"),
    }
    logout_user = {
        Role.student: home.students[1],
        Role.teacher: home.other_teacher,
        Role.admin: home.admin,
    }
    failures: list[str] = []
    checked = 0
    for route in api_routes():
        case = CASES[(route.method, route.path)]
        own_path, own_body = case.build(home_ids)
        away_path, away_body = case.build(away_ids)
        label = f"{route.method} {route.path}"
        who = WHO[(route.method, route.path)]
        if who is not None:
            status, text = await call(box, route.method, own_path, own_body, None)
            checked += 1
            if status != 401:
                failures.append(f"{label} without token: {status} {text[:120]}")
        for role in ROLES:
            tok = tokens[role]
            if route.path == "/api/logout/":
                # Logging out revokes the token: use a fresh one of the same role.
                tok = await token(box.http, logout_user[role], org="home")
            allowed = who is None or role.value in who
            if not allowed:
                status, text = await call(box, route.method, own_path, own_body, tok)
                checked += 1
                if status != 403 or '"forbidden"' not in text:
                    failures.append(f"{label} as {role}: {status} (want 403) {text[:120]}")
                continue
            if case.scoped:
                status, text = await call(box, route.method, away_path, away_body, tok)
                checked += 1
                if status != 404:
                    failures.append(f"{label} as {role} on another org: {status} {text[:160]}")
                continue
            status, text = await call(box, route.method, own_path, own_body, tok)
            checked += 1
            if status >= 500:
                failures.append(f"{label} as {role}: {status} {text[:160]}")
            leaked = [v for v in foreign_values if v in text]
            if leaked:
                failures.append(f"{label} as {role} shows another org's ids {leaked}")
    assert not failures, "\n".join(failures)
    assert checked > 3 * len(api_routes())
