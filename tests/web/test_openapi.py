"""GET /api/openapi.json and GET /api/docs: generated from the route tables."""

from __future__ import annotations

from tests.conftest import RunningBox
from vrlms_edge.app import api_registries


async def test_document_covers_every_route_with_roles_and_schemas(box: RunningBox) -> None:
    async with box.http.get("/api/openapi.json") as resp:
        assert resp.status == 200
        doc = await resp.json()
    assert doc["openapi"].startswith("3.1")
    routes = [r for reg in api_registries() for r in reg.routes]
    for route in routes:
        op = doc["paths"][route.path][route.method.lower()]
        if route.roles is None:
            assert op["security"] == []
        else:
            assert op["security"][0] == {"bearerAuth": []}
            assert sorted(op["x-roles"]) == sorted(r.value for r in route.roles)
            assert "401" in op["responses"] and "403" in op["responses"]
        if route.body is not None:
            ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            assert ref.rsplit("/", 1)[-1] in doc["components"]["schemas"]
            assert {"400", "413", "422"} <= set(op["responses"])
    login = doc["paths"]["/api/login/"]["post"]
    assert "Retry-After" in login["responses"]["429"]["headers"]
    answer = doc["components"]["schemas"]["LoginAnswer"]
    assert set(answer["required"]) == {"token", "role", "user", "org", "expires_at"}
    sessions = doc["paths"]["/api/sessions/"]["get"]["parameters"]
    assert {p["name"] for p in sessions} >= {"class_id", "from", "to", "upcoming", "limit"}


async def test_docs_page_is_rendered_by_the_box(box: RunningBox) -> None:
    async with box.http.get("/api/docs") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/html"
        html = await resp.text()
    assert "POST /api/login/" in html.replace("</code>", "").replace("<code>", "")
    assert 'id="schema-LoginAnswer"' in html
    assert "Roles: admin, teacher." in html
    # Self-contained: no scripts or styles from elsewhere.
    assert "http://" not in html.replace("http://127.0.0.1", "")
    assert "https://" not in html
