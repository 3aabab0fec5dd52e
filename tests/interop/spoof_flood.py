#!/usr/bin/env python3
"""A hostile mDNS announcer for tests/hostile.rs (python-zeroconf).

Publishes COUNT fake `_peat-sidecar._udp.local.` instances that look exactly like real
sidecars (TXT v=1, the formation's app_id, a valid Ed25519 endpoint id) but point at
addresses no host owns, by default off-link ones in 198.18.0.0/15 (RFC 2544), so that
every dial to them fails without the victim's kernel trying ARP for them. Each instance is added to
zeroconf's registry without probing (a liar does not probe), so zeroconf answers the
victim's follow-up queries for it, and is announced unsolicited, in bursts of --burst
instances every --pause seconds.

With --impostor ID the records instead carry that (real) endpoint id and --addr, the
attacker's own address: the impostor test.

Prints JSON lines on stdout: {"ready": true} once the socket is up, then progress
({"published": n, "seconds": t}) after every burst and a final {"done": true, ...}.
Runs until killed or --seconds pass, so that the records stay answered.

usage: spoof_flood.py --app-id ID --subnet 198.18.0 --first 100 --last 250
                      [--count 10000] [--burst 250] [--pause 0.1] [--seconds 600]
       spoof_flood.py --app-id ID --impostor ENDPOINT_ID --addr IP --port P
"""
import argparse
import asyncio
import json
import os
import random
import socket
import sys
import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from zeroconf import IPVersion, ServiceInfo
from zeroconf.asyncio import AsyncZeroconf

TYPE = "_peat-sidecar._udp.local."
# Instances per announcement: about 4 x 300 bytes fit one 1500-byte packet.
PER_RESPONSE = 4


def fake_endpoint_id():
    # A real Ed25519 public key: a random 32-byte string is not a valid curve point
    # half of the time and would be dropped as malformed before reaching the peer table.
    key = Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def make_info(i, app_id, eid, addr, port):
    # The same naming scheme as a real sidecar (src/discovery/mdns/txt.rs).
    name = f"peat-{eid[:32]}"
    return ServiceInfo(
        TYPE,
        f"{name}.{TYPE}",
        addresses=[socket.inet_aton(addr)],
        port=port,
        properties={"v": "1", "app_id": app_id, "endpoint_id": eid},
        server=f"{name}-{i}.local.",
    )


def emit(obj):
    print(json.dumps(obj), flush=True)


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--app-id", required=True)
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--subnet", default="198.18.0", help="first three octets")
    ap.add_argument("--first", type=int, default=100)
    ap.add_argument("--last", type=int, default=100)
    ap.add_argument("--port", type=int, default=9470)
    ap.add_argument("--burst", type=int, default=100)
    ap.add_argument("--pause", type=float, default=0.05)
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--impostor", help="announce this endpoint id at --addr")
    ap.add_argument("--addr", help="the attacker's address (with --impostor)")
    a = ap.parse_args()

    azc = AsyncZeroconf(ip_version=IPVersion.V4Only)
    zc = azc.zeroconf
    emit({"ready": True, "pid": os.getpid()})
    t0 = time.monotonic()
    if a.impostor:
        specs = [(a.impostor, a.addr)]
    else:
        specs = [
            (fake_endpoint_id(), f"{a.subnet}.{random.randint(a.first, a.last)}")
            for _ in range(a.count)
        ]
    published = 0
    for start in range(0, len(specs), a.burst):
        out = None
        for i, (eid, addr) in enumerate(specs[start:start + a.burst], start):
            info = make_info(i, a.app_id, eid, addr, a.port)
            zc.registry.async_add(info)
            # PTR + SRV + TXT + A, as an announcement (RFC 6762 8.3) carries them; a few
            # instances per response (zeroconf splits what does not fit one packet).
            if out is None:
                out = zc.generate_service_broadcast(info, None)
            else:
                zc._add_broadcast_answer(out, info, None)
            published += 1
            if (i + 1) % PER_RESPONSE == 0:
                zc.async_send(out)
                out = None
        if out is not None:
            zc.async_send(out)
        emit({"published": published, "seconds": round(time.monotonic() - t0, 3)})
        await asyncio.sleep(a.pause)
    emit({"done": True, "published": published, "seconds": round(time.monotonic() - t0, 3)})
    try:
        await asyncio.sleep(max(0.0, a.seconds - (time.monotonic() - t0)))
    finally:
        await azc.async_close()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    sys.exit(0)
