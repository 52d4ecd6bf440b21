"""BoxAdvert <-> zeroconf ServiceInfo: TXT keys and encoding, instance name limits, and the
decoding a headset does (round trip through real DNS records)."""

from __future__ import annotations

import pytest
from zeroconf import DNSIncoming, DNSOutgoing, ServiceInfo, const

from vrlms_edge.discovery.service import (
    MAX_INSTANCE_BYTES,
    SERVICE_TYPE,
    BoxAdvert,
    FoundBox,
    instance_label,
    normalize_fingerprint,
    truncate_utf8,
)

BOX_ID = "0ae1eaa4-bbec-4719-8670-3490889d57d7"
FP = "AB:" * 31 + "CD"


def advert(**overrides: object) -> BoxAdvert:
    values: dict[str, object] = {
        "box_id": BOX_ID,
        "name": "Room 12",
        "port": 8443,
        "addresses": ("10.0.0.5", "fe80::1"),
    }
    values.update(overrides)
    return BoxAdvert(**values)  # type: ignore[arg-type]


def test_service_info_has_type_port_host_and_txt_keys() -> None:
    info = advert().to_service_info()
    assert info.type == SERVICE_TYPE == "_vrlms._tcp.local."
    assert info.name == "Room 12._vrlms._tcp.local."
    assert info.port == 8443
    assert info.server == "vrlms-0ae1eaa4bbec.local."
    assert sorted(info.parsed_addresses()) == ["10.0.0.5", "fe80::1"]
    assert info.properties == {
        b"v": b"1",
        b"id": BOX_ID.encode(),
        b"name": b"Room 12",
        b"api": b"/api/",
        b"ws": b"/websocket/",
        b"tls": b"0",
    }


def test_txt_is_ascii_keys_and_short_values() -> None:
    txt = advert(name="Sala ñ " + "x" * 200, tls=True, fingerprint=FP, org_slug="school-7").txt()
    assert all(key.isascii() and len(key) <= 9 for key in txt)
    assert all(len(f"{k}={v}".encode()) <= 255 for k, v in txt.items())
    assert len(txt["name"].encode()) <= MAX_INSTANCE_BYTES


def test_fingerprint_only_with_tls_and_normalized() -> None:
    assert "fp" not in advert(fingerprint=FP).txt()
    txt = advert(tls=True, fingerprint=FP).txt()
    assert txt["tls"] == "1"
    assert txt["fp"] == "ab" * 31 + "cd"
    assert "fp" not in advert(tls=True).txt()  # TLS without a known fingerprint yet
    with pytest.raises(ValueError, match="SHA-256"):
        normalize_fingerprint("abc")


def test_org_only_when_given() -> None:
    assert "org" not in advert().txt()
    assert advert(org_slug="north-school").txt()["org"] == "north-school"


def test_truncation_never_splits_a_character() -> None:
    assert truncate_utf8("Raum-ÄÖÜ", 6) == "Raum-"  # Ä is 2 bytes: not cut in half
    assert truncate_utf8("abc", 63) == "abc"
    name = "Класс " * 20
    label = instance_label(name)
    assert len(label.encode()) <= MAX_INSTANCE_BYTES - 4
    assert label.encode().decode() == label
    # Room left for zeroconf's conflict suffix: the renamed label still fits.
    assert len(f"{label}-99".encode()) <= MAX_INSTANCE_BYTES


def test_instance_label_cleans_control_characters() -> None:
    assert instance_label("Room\n12\t") == "Room 12"
    assert instance_label("   ") == "VR Classroom"


def test_round_trip_through_dns_records() -> None:
    """What the headset decodes from the wire equals what the box meant."""
    original = advert(tls=True, fingerprint=FP, org_slug="north", name="Räume 1.2")
    info = original.to_service_info()
    out = DNSOutgoing(const._FLAGS_QR_RESPONSE | const._FLAGS_AA)
    now = 0.0
    out.add_answer_at_time(info.dns_pointer(), now)
    out.add_answer_at_time(info.dns_service(), now)
    out.add_answer_at_time(info.dns_text(), now)
    for record in info.dns_addresses():
        out.add_answer_at_time(record, now)
    incoming = DNSIncoming(out.packets()[0])
    by_type = {r.type: r for r in incoming.answers()}
    srv, txt = by_type[const._TYPE_SRV], by_type[const._TYPE_TXT]
    received = ServiceInfo(
        SERVICE_TYPE,
        srv.name,
        port=srv.port,  # type: ignore[attr-defined]
        properties=txt.text,  # type: ignore[attr-defined]
        server=srv.server,  # type: ignore[attr-defined]
        addresses=[r.address for r in incoming.answers() if r.type in (1, 28)],  # type: ignore[attr-defined]
    )
    found = BoxAdvert.found_box(received)
    assert found == FoundBox(
        name="Räume 1.2",
        addresses=found.addresses,
        port=8443,
        txt=original.txt(),
        host="vrlms-0ae1eaa4bbec.local.",
    )
    assert sorted(found.addresses) == ["10.0.0.5", "fe80::1"]
    assert found.tls and found.box_id == BOX_ID
    assert found.base_url() == "https://10.0.0.5:8443"


def test_undecodable_txt_is_replaced_not_fatal() -> None:
    info = ServiceInfo(
        SERVICE_TYPE,
        "Box._vrlms._tcp.local.",
        port=80,
        properties={b"v": b"\xff\xfe", b"ID": b"x", b"flag": None},
        server="x.local.",
    )
    found = BoxAdvert.found_box(info)
    assert found.txt["v"] == "\ufffd\ufffd"
    assert found.txt["id"] == "x"  # keys compared case-insensitively (RFC 6763 s6.4)
    assert found.txt["flag"] == ""
    with pytest.raises(ValueError, match="no address"):
        found.base_url()


def test_ipv6_only_box_url_uses_brackets() -> None:
    box = FoundBox(name="b", addresses=["fe80::1%2"], port=80, txt={"tls": "0"})
    assert box.base_url() == "http://[fe80::1%2]:80"
