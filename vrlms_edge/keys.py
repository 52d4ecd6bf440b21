"""Typed application state: every shared part of the running box is a web.AppKey."""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from vrlms_edge.config import Settings
from vrlms_edge.domain.box import BoxInfo
from vrlms_edge.domain.sessions import StateBroadcast
from vrlms_edge.live.clock import ServerClock
from vrlms_edge.live.hub import Hub
from vrlms_edge.live.ingest import EventIngest
from vrlms_edge.live.liveview import LiveView
from vrlms_edge.live.sinks import FrameSinks
from vrlms_edge.store.db import Database
from vrlms_edge.sync.worker import SyncWorker
from vrlms_edge.tls import TlsIdentity

SETTINGS: Final = web.AppKey("settings", Settings)
DB: Final = web.AppKey("db", Database)
CLOCK: Final = web.AppKey("clock", ServerClock)
BOX: Final = web.AppKey("box", BoxInfo)
# Monotonic time at start-up, for uptime.
STARTED: Final = web.AppKey("started", float)
# Where committed session states go (the live hub once it runs; NoBroadcast before).
BROADCAST: Final = web.AppKey("broadcast", StateBroadcast)
# The OpenAPI document of the API, built once from the route tables (web/openapi.py).
OPENAPI: Final = web.AppKey("openapi", dict[str, Any])
# Only set with the `tls` setting: the certificate, its SSL context and its SHA-256 fingerprint
# (hex of the DER certificate; advertised as mDNS TXT `fp`). Read with app.get(TLS).
TLS: Final = web.AppKey("tls", TlsIdentity)
# The event ingest queue and its batch writer (live/ingest.py).
INGEST: Final = web.AppKey("ingest", EventIngest)
# Headsets' latest status and view frames, and the teachers' class pictures (live/liveview.py).
LIVEVIEW: Final = web.AppKey("liveview", LiveView)
# The live classroom: rooms, connections and the broadcast (web/ws.py installs it).
HUB: Final = web.AppKey("hub", Hub)
# Where inbound headset frames go (events, status, JPEG views): see live/sinks.py.
FRAME_SINKS: Final = web.AppKey("frame_sinks", FrameSinks)
# The background sync with the org server (wake() asks for a run now).
SYNC: Final = web.AppKey("sync", SyncWorker)
