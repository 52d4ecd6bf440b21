"""An mDNS client independent of python-zeroconf: one hand-built DNS-SD PTR query for
_vrlms._tcp.local. sent from an ephemeral port (a "legacy unicast" query, RFC 6762 s6.7), and
a minimal parser of the reply. Run inside a namespace:
`python -m tests.discovery.rawquery <this namespace's IPv4 address>`; prints JSON."""

from __future__ import annotations

import json
import socket
import struct
import sys
import time

GROUP = ("224.0.0.251", 5353)
SERVICE = "_vrlms._tcp.local."
TYPE_A, TYPE_PTR, TYPE_TXT, TYPE_SRV = 1, 12, 16, 33


def encode_name(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split("."):
        raw = label.encode()
        out += bytes([len(raw)]) + raw
    return out + b"\x00"


def query(query_id: int) -> bytes:
    header = struct.pack("!HHHHHH", query_id, 0, 1, 0, 0, 0)
    return header + encode_name(SERVICE) + struct.pack("!HH", TYPE_PTR, 1)


def read_name(packet: bytes, offset: int) -> tuple[str, int]:
    labels: list[str] = []
    end = None
    for _ in range(128):  # bounded: a malicious pointer loop cannot hang us
        length = packet[offset]
        if length == 0:
            offset += 1
            break
        if length & 0xC0 == 0xC0:
            pointer = struct.unpack_from("!H", packet, offset)[0] & 0x3FFF
            end = offset + 2 if end is None else end
            offset = pointer
            continue
        labels.append(packet[offset + 1 : offset + 1 + length].decode(errors="replace"))
        offset += 1 + length
    return ".".join(labels) + ".", end if end is not None else offset


def parse(packet: bytes) -> tuple[int, list[tuple[str, int, bytes, int]]]:
    query_id, _flags, qd, an, ns, ar = struct.unpack_from("!HHHHHH", packet)
    offset = 12
    for _ in range(qd):
        _, offset = read_name(packet, offset)
        offset += 4
    records = []
    for _ in range(an + ns + ar):
        name, offset = read_name(packet, offset)
        rtype, _rclass, _ttl, length = struct.unpack_from("!HHIH", packet, offset)
        offset += 10
        records.append((name, rtype, packet[offset : offset + length], offset))
        offset += length
    return query_id, records


def describe(packet: bytes) -> dict[str, object]:
    _, records = parse(packet)
    found: dict[str, object] = {"instances": [], "txt": {}, "srv": {}, "a": []}
    for name, rtype, data, offset in records:
        if rtype == TYPE_PTR and name.lower() == SERVICE:
            found["instances"].append(read_name(packet, offset)[0])  # type: ignore[attr-defined]
        elif rtype == TYPE_SRV:
            _prio, _weight, port = struct.unpack_from("!HHH", data)
            found["srv"][name] = {"port": port, "target": read_name(packet, offset + 6)[0]}  # type: ignore[index]
        elif rtype == TYPE_TXT:
            items, i = {}, 0
            while i < len(data):
                entry = data[i + 1 : i + 1 + data[i]].decode(errors="replace")
                key, _, value = entry.partition("=")
                items[key] = value
                i += 1 + data[i]
            found["txt"][name] = items  # type: ignore[index]
        elif rtype == TYPE_A:
            found["a"].append(socket.inet_ntoa(data))  # type: ignore[attr-defined]
    return found


def main(interface_ip: str, timeout_s: float = 3.0) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(interface_ip))
    sock.bind((interface_ip, 0))
    query_id = 0x5A17
    sock.sendto(query(query_id), GROUP)
    deadline = time.monotonic() + timeout_s
    replies = []
    while (remaining := deadline - time.monotonic()) > 0:
        sock.settimeout(remaining)
        try:
            packet, source = sock.recvfrom(9000)
        except TimeoutError:
            break
        if parse(packet)[0] == query_id:
            replies.append({"from": source[0], **describe(packet)})
            break
    print(json.dumps(replies))


if __name__ == "__main__":
    main(sys.argv[1])
