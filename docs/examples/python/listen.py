#!/usr/bin/env python3
"""Prints the messages matching PATTERN that any app in the formation publishes.

    python3 listen.py --api tcp://127.0.0.1:50051 --pattern 'demo/**'
    python3 listen.py --pattern 'config/*' --retained     # current state first

With --json: one object per line: {"subscribed": true} once the subscription
stands, then {"topic", "key", "publisher", "seq", "retained", "deleted", "text"} per
message ("text" is "<deleted>" for a Delete),
{"missed": N} when this reader was too slow and N messages were dropped for it, and
{"retained_done": true} after the retained entries.
"""

import argparse
import json
import sys
import time

import peat_stubs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--api", default="tcp://127.0.0.1:50051", help="the sidecar's API")
    ap.add_argument("--pattern", default="**", help="topic pattern: * one segment, ** any rest")
    ap.add_argument("--retained", action="store_true", help="first the retained entries")
    ap.add_argument("--json", action="store_true", help="one JSON object per line")
    args = ap.parse_args()

    pb, rpc = peat_stubs.load()
    import grpc

    def out(obj, text):
        print(json.dumps(obj) if args.json else text, flush=True)

    with peat_stubs.channel(args.api) as ch:
        stub = rpc.SidecarStub(ch)
        call = stub.Subscribe(pb.SubscribeRequest(pattern=args.pattern, retained=args.retained))
        # The sidecar answers with headers once the subscription is registered; a call
        # that failed (no sidecar, bad pattern) returns from this too, but ended.
        call.initial_metadata()
        if not call.is_active():
            sys.exit(f"subscribe failed: {call.code().name}: {call.details()}")
        out({"subscribed": True}, f"subscribed to {args.pattern}")
        try:
            for d in call:
                kind = d.WhichOneof("kind")
                if kind == "missed":
                    out({"missed": d.missed}, f"missed {d.missed} messages")
                elif kind == "retained_done":
                    out({"retained_done": True}, "-- end of retained entries --")
                elif kind == "message":
                    m = d.message
                    try:
                        text = "<deleted>" if m.deleted else m.payload.decode("utf-8")
                    except UnicodeDecodeError:
                        text = f"<{len(m.payload)} bytes>"
                    age_ms = int(time.time() * 1000) - m.published_unix_ms
                    out({"topic": m.topic, "key": m.key, "publisher": m.publisher, "seq": m.seq,
                         "retained": m.retained, "deleted": m.deleted, "text": text},
                        f"{m.topic} {m.key or '-'} {m.publisher[:10]} {age_ms}ms {text}")
        except KeyboardInterrupt:
            call.cancel()
        except grpc.RpcError as e:
            # The stream broke off: the sidecar stopped or the connection went.
            peat_stubs.rpc_failed("subscribe", e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
