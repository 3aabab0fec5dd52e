#!/usr/bin/env python3
"""Counts mDNS packets on the wire, by source address and kind, for the flapping test.

usage: mdns_count.py --iface-addr IP --seconds N
Prints one JSON object: {"SRC": {"query": n, "response": n}, ...}
"""
import argparse
import json
import socket
import struct
import time

ap = argparse.ArgumentParser()
ap.add_argument("--iface-addr", required=True)
ap.add_argument("--seconds", type=float, required=True)
a = ap.parse_args()

s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
s.bind(("224.0.0.251", 5353))
mreq = socket.inet_aton("224.0.0.251") + socket.inet_aton(a.iface_addr)
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
print(json.dumps({"ready": True}), flush=True)
counts = {}
end = time.monotonic() + a.seconds
while True:
    left = end - time.monotonic()
    if left <= 0:
        break
    s.settimeout(left)
    try:
        data, (src, _port) = s.recvfrom(9000)
    except socket.timeout:
        break
    if len(data) < 12:
        continue
    flags = struct.unpack("!H", data[2:4])[0]
    kind = "response" if flags & 0x8000 else "query"
    c = counts.setdefault(src, {"query": 0, "response": 0})
    c[kind] += 1
print(json.dumps(counts), flush=True)
