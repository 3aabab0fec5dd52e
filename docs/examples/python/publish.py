#!/usr/bin/env python3
"""Publishes COUNT messages "hello 0", "hello 1", ... on TOPIC through a peat-sidecar.

    python3 publish.py --api tcp://127.0.0.1:50051 --topic demo/greetings --count 5
    python3 publish.py --topic config/site --key mode --retain --value '{"mode":"patrol"}'
"""

import argparse
import sys

import peat_stubs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--api", default="tcp://127.0.0.1:50051", help="the sidecar's API")
    ap.add_argument("--topic", required=True)
    ap.add_argument("--key", default="", help="the key within the topic (none by default)")
    ap.add_argument("--count", type=int, default=1)
    ap.add_argument("--value", help="one payload instead of hello N")
    ap.add_argument("--retain", action="store_true", help="keep it as retained state")
    ap.add_argument("--ttl", type=int, default=0, help="seconds until a retained value expires")
    args = ap.parse_args()

    pb, rpc = peat_stubs.load()
    import grpc

    try:
        publish(args, pb, rpc)
    except grpc.RpcError as e:
        peat_stubs.rpc_failed("publish", e)
    except KeyboardInterrupt:
        return 130
    return 0


def publish(args, pb, rpc):
    with peat_stubs.channel(args.api) as ch:
        stub = rpc.SidecarStub(ch)

        def requests():
            for i in range(args.count):
                value = args.value if args.value is not None else f"hello {i}"
                yield pb.PublishRequest(topic=args.topic, key=args.key, payload=value.encode(),
                                        retain=args.retain, ttl_secs=args.ttl)

        if args.count == 1:
            r = stub.Publish(next(requests()), timeout=10)
            print(f"published seq={r.seq}")
        else:
            # One client stream for many messages: far cheaper than a call each.
            r = stub.PublishStream(requests(), timeout=60)
            print(f"published {r.published} messages, last seq={r.last_seq}")


if __name__ == "__main__":
    sys.exit(main())
