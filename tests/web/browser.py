#!/usr/bin/env python3
"""Drives headless Chromium through the DevTools protocol over a pipe (no WebSocket
library needed) and reports what the operator's page shows.

    browser.py URL CONTROL_DIR

Opens URL in a tablet-sized window and prints one JSON line on stdout each time the
drawn view changes: {"t": seconds, "view": {...}}, where the view is read from the DOM
(the graph's nodes, links and link labels as drawn, the peer table, the topics with
their rates, the live badge, the event count), not from the page's variables. A file CONTROL_DIR/shot holding a path asks for a
screenshot there ({"screenshot": path} when done). Runs until killed; Chromium dies
with it (PR_SET_PDEATHSIG).
"""
import base64
import ctypes
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

VIEW = r"""JSON.stringify({
  nodes: [...document.querySelectorAll('#graph .node')].map(g => ({
    id: g.dataset.id, kind: g.dataset.kind, bridge: g.dataset.bridge === 'true'})),
  links: [...document.querySelectorAll('#graph .link')].map(l => ({
    a: l.dataset.a, b: l.dataset.b, state: l.dataset.state})),
  labels: Object.fromEntries([...document.querySelectorAll('#graph .linklabel')].map(t => [
    t.dataset.peer, [...t.querySelectorAll('tspan')].map(s => s.textContent).join(' · ')])),
  rows: [...document.querySelectorAll('#peers tbody tr')].map(r => ({
    id: r.dataset.id, state: r.dataset.state, loss: r.cells[4].textContent})),
  live: document.getElementById('live').textContent,
  events: [...document.querySelectorAll('#events li')].slice(0, 30).map(l => l.dataset.kind),
  topics: [...document.querySelectorAll('#topics tbody tr')].map(r => ({
    topic: r.cells[0].textContent, rate: r.cells.length > 1 ? r.cells[1].textContent : ''})),
  retained: document.querySelectorAll('#retained tbody tr').length,
})"""


def chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    sys.exit("no chromium found: apt-get install chromium (scripts/apt-packages.txt)")


class Browser:
    def __init__(self, width, height, control):
        self.profile = tempfile.mkdtemp(prefix="chromium-", dir=control)
        to_r, to_w = os.pipe()    # we write, Chromium reads on fd 3
        from_r, from_w = os.pipe()  # Chromium writes on fd 4, we read

        def child():
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
            # Copies first: a pipe may already sit on fd 3 or 4 (close-on-exec).
            r, w = os.dup(to_r), os.dup(from_w)
            os.dup2(r, 3)
            os.dup2(w, 4)

        self.proc = subprocess.Popen(
            [chromium(), "--headless=new", "--no-sandbox", "--disable-gpu",
             "--no-first-run", "--disable-extensions", "--disable-background-networking",
             f"--user-data-dir={self.profile}", f"--window-size={width},{height}",
             "--remote-debugging-pipe", "about:blank"],
            preexec_fn=child, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(self.profile, "chromium.log"), "w"),
            close_fds=False)
        os.close(to_r)
        os.close(from_w)
        self.out = os.fdopen(to_w, "wb", buffering=0)
        self.inp = os.fdopen(from_r, "rb", buffering=0)
        self.buf = b""
        self.next_id = 0

    def call(self, method, params=None, session=None):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self.out.write(json.dumps(msg).encode() + b"\0")
        while True:
            while b"\0" not in self.buf:
                chunk = self.inp.read(65536)
                if not chunk:
                    sys.exit("chromium closed the DevTools pipe")
                self.buf += chunk
            raw, self.buf = self.buf.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})


def main():
    url, control = sys.argv[1], sys.argv[2]
    width, height = 1024, 1366  # a tablet, portrait
    b = Browser(width, height, control)
    target = b.call("Target.createTarget", {"url": "about:blank"})["targetId"]
    s = b.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    b.call("Emulation.setDeviceMetricsOverride",
           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
           session=s)
    b.call("Page.navigate", {"url": url}, session=s)
    start = time.monotonic()
    last = None
    while True:
        try:
            r = b.call("Runtime.evaluate", {"expression": VIEW, "returnByValue": True},
                       session=s)
            view = json.loads(r["result"]["value"])
        except (RuntimeError, KeyError, ValueError) as e:
            view = {"error": str(e)}
        if view != last:
            print(json.dumps({"t": round(time.monotonic() - start, 2), "view": view}),
                  flush=True)
            last = view
        req = os.path.join(control, "shot")
        if os.path.exists(req):
            path = open(req).read().strip()
            os.remove(req)
            shot = b.call("Page.captureScreenshot", {"format": "png"}, session=s)
            with open(path, "wb") as f:
                f.write(base64.b64decode(shot["data"]))
            print(json.dumps({"screenshot": path}), flush=True)
        time.sleep(0.25)


if __name__ == "__main__":
    main()
