"""The AsyncAPI 3.0 document of /websocket/, generated from the msgspec structs in
`live/protocol.py` (the same ones that validate every frame), so docs cannot drift."""

from __future__ import annotations

from typing import Any, Final

import msgspec

from vrlms_edge import __version__
from vrlms_edge.live import protocol
from vrlms_edge.web.openapi import schema_hook

# Binary frames are not a msgspec struct: describe them here.
_JPEG_MESSAGE: Final = {
    "name": "view",
    "title": "JPEG view",
    "summary": "A binary frame: one JPEG of the headset's current view (latest wins).",
    "contentType": "image/jpeg",
    "payload": {"type": "string", "format": "binary"},
}


def _message(struct: type[msgspec.Struct], name: str) -> dict[str, Any]:
    doc = (struct.__doc__ or "").strip()
    return {
        "name": name,
        "title": struct.__name__,
        "summary": doc.splitlines()[0] if doc else struct.__name__,
        "contentType": "application/json",
        "payload": {"$ref": f"#/components/schemas/{struct.__name__}"},
    }


def asyncapi_document(server_url: str = "ws://{host}") -> dict[str, Any]:
    types = protocol.CLIENT_MESSAGES + protocol.SERVER_MESSAGES
    _, schemas = msgspec.json.schema_components(
        types, ref_template="#/components/schemas/{name}", schema_hook=schema_hook
    )
    messages: dict[str, Any] = {}
    client: list[str] = []
    server: list[str] = []
    for struct in protocol.CLIENT_MESSAGES:
        key = f"client_{struct.__struct_config__.tag}"
        messages[key] = _message(struct, key)
        client.append(key)
    for struct in protocol.SERVER_MESSAGES:
        key = f"server_{struct.__struct_config__.tag}"
        messages[key] = _message(struct, key)
        server.append(key)
    messages["client_view"] = _JPEG_MESSAGE
    client.append("client_view")
    close_codes = "\n".join(
        f"- {code}: {reason}" for code, reason in sorted(protocol.CLOSE_REASONS.items())
    )
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "vrlms-edge live classroom",
            "version": __version__,
            "description": (
                "Session state, clock sync, acks, events, status and views between the "
                "classroom box, headsets and teachers. Protocol version "
                f"{protocol.PROTOCOL_VERSION}. Error codes: "
                + ", ".join(protocol.ERROR_CODES)
                + ".\n\nClose codes:\n"
                + close_codes
            ),
        },
        "servers": {
            "box": {
                "host": server_url.split("://", 1)[-1],
                "protocol": "ws",
                "description": "The classroom box (found by mDNS, _vrlms._tcp).",
            }
        },
        "channels": {
            "live": {
                "address": "/websocket/",
                "description": (
                    "Token in `Authorization: Bearer` or `?token=`. The server speaks first "
                    "(`welcome`); requests may carry `id`, echoed in the reply."
                ),
                "messages": {k: {"$ref": f"#/components/messages/{k}"} for k in messages},
            }
        },
        "operations": {
            "clientSends": {
                "action": "receive",
                "channel": {"$ref": "#/channels/live"},
                "summary": "Frames a headset or teacher sends to the box.",
                "messages": [{"$ref": f"#/channels/live/messages/{k}"} for k in client],
            },
            "serverSends": {
                "action": "send",
                "channel": {"$ref": "#/channels/live"},
                "summary": "Frames the box sends.",
                "messages": [{"$ref": f"#/channels/live/messages/{k}"} for k in server],
            },
        },
        "components": {"schemas": schemas, "messages": messages},
    }
