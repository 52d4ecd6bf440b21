"""The aiohttp application both roles start from (the box, create_app; the org server,
create_cloud_app): error middleware, body limit, settings, clock, login gate, broadcast,
templates and static files.

They share route tables (login, roster, catalog) whose handlers read this state, so it is set
in this one place: an org server once lacked the login gate and answered logins with a 500.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Final

import aiohttp_jinja2
import jinja2
from aiohttp import web

from vrlms_edge.config import Settings
from vrlms_edge.domain.auth import LoginGate
from vrlms_edge.domain.sessions import NoBroadcast
from vrlms_edge.keys import BROADCAST, CLOCK, LOGIN_GATE, SETTINGS, STARTED
from vrlms_edge.live.clock import ServerClock
from vrlms_edge.web.middleware import error_middleware

WEB_DIR: Final = Path(__file__).parent


def base_application(
    settings: Settings,
    *,
    clock: ServerClock | None = None,
    templates: Sequence[Path] = (),
) -> web.Application:
    """A new application with the shared state set; `templates`: directories searched before
    the box's own templates."""
    app = web.Application(middlewares=[error_middleware], client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[CLOCK] = clock or ServerClock()
    app[STARTED] = app[CLOCK].monotonic()
    app[LOGIN_GATE] = LoginGate()
    # Until the live hub replaces it (box) or for good (org server: no headsets to follow).
    app[BROADCAST] = NoBroadcast(settings.start_lead_floor_ms)
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader([*templates, WEB_DIR / "templates"]),
        autoescape=jinja2.select_autoescape(default=True),
    )
    app.router.add_static("/static/", WEB_DIR / "static", name="static")
    return app
