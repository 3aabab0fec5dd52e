#!/usr/bin/env python3
"""An independent mDNS peer for the interop test (python-zeroconf).

Publishes `_peat-sidecar._udp.local.` records given on the command line and browses the
same type, printing every resolved service as one JSON line on stdout, until killed or
--seconds pass.

usage: zeroconf_peer.py --addr IP --seconds N [--publish NAME PORT k=v,k=v]...
"""
import argparse
import json
import socket
import sys
import time

from zeroconf import ServiceBrowser, ServiceInfo, ServiceListener, Zeroconf, IPVersion

TYPE = "_peat-sidecar._udp.local."


class Listener(ServiceListener):
    def __init__(self, zc):
        self.zc = zc

    def _report(self, type_, name):
        info = self.zc.get_service_info(type_, name, timeout=2000)
        if info is None:
            return
        txt = {}
        for k, v in (info.properties or {}).items():
            txt[k.decode(errors="replace")] = None if v is None else v.decode(errors="replace")
        print(json.dumps({
            "name": name,
            "port": info.port,
            "addresses": info.parsed_addresses(),
            "server": info.server,
            "txt": txt,
        }), flush=True)

    def add_service(self, zc, type_, name):
        self._report(type_, name)

    def update_service(self, zc, type_, name):
        self._report(type_, name)

    def remove_service(self, zc, type_, name):
        print(json.dumps({"removed": name}), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--addr", required=True)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--publish", nargs=3, action="append", default=[],
                    metavar=("NAME", "PORT", "TXT"))
    a = ap.parse_args()
    zc = Zeroconf(ip_version=IPVersion.V4Only)
    infos = []
    for i, (name, port, txt) in enumerate(a.publish):
        props = dict(kv.split("=", 1) for kv in txt.split(",") if kv)
        info = ServiceInfo(
            TYPE,
            f"{name}.{TYPE}",
            addresses=[socket.inet_aton(a.addr)],
            port=int(port),
            properties=props,
            server=f"zc-{i}-{name[:20]}.local.",
        )
        zc.register_service(info)
        infos.append(info)
    print(json.dumps({"ready": True}), flush=True)
    ServiceBrowser(zc, TYPE, Listener(zc))
    try:
        time.sleep(a.seconds)
    finally:
        for info in infos:
            zc.unregister_service(info)
        zc.close()


if __name__ == "__main__":
    sys.exit(main())
