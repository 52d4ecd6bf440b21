"""The box as a DNS-SD service: the one place that converts between the box and a zeroconf
`ServiceInfo` (service type, instance name, TXT keys of PROTOCOL.md "Discovery")."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Final

from zeroconf import ServiceInfo

SERVICE_TYPE: Final = "_vrlms._tcp.local."
# Protocol version in TXT `v`; a headset ignores boxes with a version it does not speak.
PROTOCOL_VERSION: Final = "1"
API_PATH: Final = "/api/"
WS_PATH: Final = "/websocket/"
# A DNS label holds at most 63 bytes; Android NSD and Bonjour reject longer instance names.
MAX_INSTANCE_BYTES: Final = 63
# python-zeroconf renames on conflict by appending "-2", "-3", ... to the instance name; keep
# room for that suffix so a renamed name still fits in one label.
RENAME_ROOM_BYTES: Final = 4
# Each TXT string is at most 255 bytes; Android NSD and Unity plugins expect short values.
MAX_TXT_VALUE_BYTES: Final = 200
_FINGERPRINT: Final = re.compile(r"[0-9a-f]{64}")
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")


def truncate_utf8(text: str, max_bytes: int) -> str:
    """`text` cut to at most `max_bytes` UTF-8 bytes, never inside a character."""
    encoded = text.encode()
    if len(encoded) <= max_bytes:
        return text
    return encoded[:max_bytes].decode(errors="ignore")


def instance_label(name: str) -> str:
    """The DNS-SD instance name for a box name: no control characters, no leading or trailing
    space, and short enough that zeroconf's conflict suffix still fits in 63 bytes."""
    clean = _CONTROL.sub(" ", name).strip() or "VR Classroom"
    return truncate_utf8(clean, MAX_INSTANCE_BYTES - RENAME_ROOM_BYTES).rstrip()


def normalize_fingerprint(fingerprint: str) -> str:
    """A SHA-256 fingerprint as 64 lowercase hex digits (accepts `AB:CD:...` too)."""
    digits = fingerprint.replace(":", "").strip().lower()
    if not _FINGERPRINT.fullmatch(digits):
        raise ValueError(f"not a SHA-256 fingerprint: {fingerprint!r}")
    return digits


@dataclass(frozen=True, slots=True)
class FoundBox:
    """A box seen on the network: what a headset needs to connect to it."""

    name: str
    addresses: list[str]
    port: int
    txt: dict[str, str]
    host: str = ""

    @property
    def box_id(self) -> str:
        return self.txt.get("id", "")

    @property
    def tls(self) -> bool:
        return self.txt.get("tls") == "1"

    def base_url(self) -> str:
        """URL of the box on its first address (IPv4 preferred), e.g. http://10.0.0.5:8080."""
        ordered = sorted(self.addresses, key=lambda a: ipaddress.ip_address(a).version)
        if not ordered:
            raise ValueError(f"box {self.name!r} has no address")
        host = ordered[0]
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class BoxAdvert:
    """What the box announces. `to_service_info` and `found_box` are the only translations
    between this and DNS-SD records."""

    box_id: str
    name: str
    port: int
    addresses: tuple[str, ...] = ()
    tls: bool = False
    # SHA-256 of the TLS certificate (hex); only advertised when tls is on.
    fingerprint: str | None = None
    # Set when the box serves a single org.
    org_slug: str | None = None
    # The instance name zeroconf settled on (after conflict renames); defaults to `name`.
    instance: str | None = field(default=None)

    @property
    def instance_name(self) -> str:
        return self.instance if self.instance is not None else instance_label(self.name)

    @property
    def service_name(self) -> str:
        return f"{self.instance_name}.{SERVICE_TYPE}"

    @property
    def host_name(self) -> str:
        # Unique per box (two boxes called "Room 12" must not share a host name, which zeroconf
        # does not conflict-check), ASCII, and never the machine's 127.0.1.1 hostname alias.
        short = re.sub(r"[^a-z0-9]", "", self.box_id.lower())[:12] or "box"
        return f"vrlms-{short}.local."

    def txt(self) -> dict[str, str]:
        """The TXT keys of PROTOCOL.md, in a stable order."""
        values = {
            "v": PROTOCOL_VERSION,
            "id": self.box_id,
            "name": truncate_utf8(_CONTROL.sub(" ", self.name).strip(), MAX_INSTANCE_BYTES),
            "api": API_PATH,
            "ws": WS_PATH,
            "tls": "1" if self.tls else "0",
        }
        if self.tls and self.fingerprint:
            values["fp"] = normalize_fingerprint(self.fingerprint)
        if self.org_slug:
            values["org"] = truncate_utf8(self.org_slug, MAX_TXT_VALUE_BYTES)
        return values

    def to_service_info(self) -> ServiceInfo:
        return ServiceInfo(
            SERVICE_TYPE,
            self.service_name,
            port=self.port,
            properties={k.encode("ascii"): v.encode() for k, v in self.txt().items()},
            server=self.host_name,
            parsed_addresses=list(self.addresses),
        )

    @staticmethod
    def settled_instance(info: ServiceInfo) -> str:
        """The instance part of a (possibly renamed) service name."""
        name: str = info.name
        suffix = "." + SERVICE_TYPE
        return name[: -len(suffix)] if name.endswith(suffix) else name

    @staticmethod
    def found_box(info: ServiceInfo) -> FoundBox:
        """Decode a resolved ServiceInfo; undecodable TXT bytes are replaced, never fatal."""
        txt: dict[str, str] = {}
        for key, value in (info.properties or {}).items():
            if not isinstance(key, bytes):
                continue
            txt[key.decode("ascii", errors="replace").lower()] = (
                value.decode(errors="replace") if isinstance(value, bytes) else ""
            )
        return FoundBox(
            name=BoxAdvert.settled_instance(info),
            addresses=[str(a) for a in info.parsed_scoped_addresses()],
            port=int(info.port or 0),
            txt=txt,
            host=str(info.server or ""),
        )
