#!/usr/bin/env python3
"""Zenoh peers for the `pubsub` benchmark (bench/scenarios/zenoh.rs): the anchor that
peat-sidecar's data plane is compared with on the same namespace LAN.

Peer mode, multicast scouting (224.0.0.224:7446), reliable with congestion control
BLOCK (no drops: the same promise as a throughput run through the sidecar).
Payloads start with the send time (unix ns, little endian), as in pubsub.rs.

    zenoh_pubsub.py sub --key 'lat/**' --count N      # prints {"ready"}, {"warm"}, then the result
    zenoh_pubsub.py pub --key lat/x --size 1024 --rate 100 --count N --go FILE

The publisher puts on KEY/../warm every 200 ms until FILE exists (the harness creates
it once every subscriber printed {"warm"}), then the measured messages.
"""

import argparse
import json
import os
import struct
import sys
import threading
import time

import zenoh


def out(obj):
    print(json.dumps(obj), flush=True)


def session():
    conf = zenoh.Config()
    conf.insert_json5("mode", '"peer"')
    conf.insert_json5("scouting/multicast/enabled", "true")
    return zenoh.open(conf)


def sub(args):
    lat, state = [], {"count": 0, "first": 0, "last": 0, "warm": False}
    done = threading.Event()

    def on(sample):
        now = time.time_ns()
        key = str(sample.key_expr)
        if key.endswith("/warm"):
            if not state["warm"]:
                state["warm"] = True
                out({"warm": True})
            return
        data = bytes(sample.payload.to_bytes())
        (sent,) = struct.unpack_from("<Q", data, 0)
        lat.append((now - sent) / 1e6)
        state["count"] += 1
        state["first"] = state["first"] or now
        state["last"] = now
        if state["count"] >= args.count:
            done.set()

    with session() as s:
        s.declare_subscriber(args.key, on)
        out({"ready": True})
        deadline = time.time() + args.timeout
        last_seen = (0, time.time())
        while not done.wait(0.2) and time.time() < deadline:
            # Stop when nothing came for --idle seconds after the first message.
            if state["count"] != last_seen[0]:
                last_seen = (state["count"], time.time())
            elif state["count"] and time.time() - last_seen[1] > args.idle:
                break
        out({"lat_ms": lat if args.samples else [], "count": state["count"],
             "first_ns": state["first"], "last_ns": state["last"]})


def pub(args):
    base = args.key.rsplit("/", 1)[0]
    with session() as s:
        p = s.declare_publisher(args.key, congestion_control=zenoh.CongestionControl.BLOCK)
        w = s.declare_publisher(base + "/warm")
        while not os.path.exists(args.go):
            w.put(struct.pack("<Q", time.time_ns()))
            time.sleep(0.2)
        pad = b"a" * (max(args.size, 16) - 8)
        period = 1.0 / args.rate if args.rate else 0.0
        start = time.time_ns()
        nxt = time.monotonic()
        for _ in range(args.count):
            if period:
                nxt += period
                delay = nxt - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            p.put(struct.pack("<Q", time.time_ns()) + pad)
        out({"start_ns": start, "end_ns": time.time_ns()})
        # Let the last messages leave before the session closes.
        time.sleep(1.0)


def main():
    ap = argparse.ArgumentParser()
    sp = ap.add_subparsers(dest="cmd", required=True)
    a = sp.add_parser("sub")
    a.add_argument("--key", required=True)
    a.add_argument("--count", type=int, required=True)
    a.add_argument("--idle", type=float, default=5.0)
    a.add_argument("--timeout", type=float, default=300.0)
    a.add_argument("--samples", action="store_true", help="print every latency")
    b = sp.add_parser("pub")
    b.add_argument("--key", required=True)
    b.add_argument("--size", type=int, default=1024)
    b.add_argument("--rate", type=float, default=0, help="messages/s; 0 = as fast as it goes")
    b.add_argument("--count", type=int, required=True)
    b.add_argument("--go", required=True)
    args = ap.parse_args()
    sub(args) if args.cmd == "sub" else pub(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
