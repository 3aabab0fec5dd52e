#!/usr/bin/env python3
"""Checks an `strace -f` log of peat-sidecar against the unit's seccomp and
address-family settings, as systemd would apply them:
SystemCallFilter=@system-service, then ~@privileged @resources;
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK.

It also checks the files: if UNIT sets ProcSubset=pid, only /proc/self and /proc/PID
stay visible; with ProtectSystem=strict only the data dir (StateDirectory=) and /tmp
(PrivateTmp=) are writable.

usage: syscalls.py TRACE BINARY_PATH DATA_DIR UNIT
Only calls made after the binary's execve count (the wrappers before it do not run
under systemd). Prints what it found; exits 1 if a call or family would be refused."""
import re
import subprocess
import sys

ALLOW_FAMILIES = {"AF_INET", "AF_INET6", "AF_UNIX", "AF_NETLINK"}


def groups():
    out = subprocess.run(["systemd-analyze", "syscall-filter"], capture_output=True,
                         text=True, check=True).stdout
    g, cur = {}, None
    for line in out.splitlines():
        if line.startswith("@"):
            cur = line.strip()
            g[cur] = set()
        elif cur and line.strip() and not line.strip().startswith("#"):
            g[cur].add(line.strip())
        elif not line.strip():
            cur = None
    return g


def expand(g, name, seen=None):
    seen = seen if seen is not None else set()
    out = set()
    for item in g.get(name, ()):
        if item.startswith("@"):
            if item not in seen:
                seen.add(item)
                out |= expand(g, item, seen)
        else:
            out.add(item)
    return out


def main():
    trace, binary, data_dir, unit = sys.argv[1], sys.argv[2], sys.argv[3].rstrip("/"), sys.argv[4]
    proc_subset_pid = re.search(r"^ProcSubset=pid", open(unit).read(), re.M) is not None
    g = groups()
    allowed = expand(g, "@system-service") - expand(g, "@privileged") - expand(g, "@resources")
    started = False
    calls, families = set(), set()
    hidden_proc, bad_writes = set(), set()
    open_re = re.compile(r'\b(?:open|openat|creat|stat|lstat|statx|newfstatat|access|readlink)\((?:AT_FDCWD, |\d+, )?"([^"]*)"(.*)')
    proc_ok = re.compile(r"^/proc/(self|thread-self|\d+)(/|$)")
    call_re = re.compile(r"^\d+\s+(?:\d+:\d+:\d+\.\d+\s+)?([a-z0-9_]+)\(")
    for line in open(trace, errors="replace"):
        if not started:
            if 'execve("' + binary in line and "= 0" in line:
                started = True
            continue
        m = call_re.match(line)
        if not m:
            continue
        calls.add(m.group(1))
        om = open_re.search(line)
        if om and "ENOENT" not in om.group(2):
            path, rest = om.group(1), om.group(2)
            if proc_subset_pid and path.startswith("/proc") and not proc_ok.match(path):
                hidden_proc.add(path)
            writes = re.search(r"O_WRONLY|O_RDWR|O_CREAT", rest) and m.group(1) in ("open", "openat", "creat")
            if writes and not (path.startswith(data_dir + "/") or path.startswith("/tmp/")):
                bad_writes.add(path)
        fm = re.search(r"\bsocket\((AF_[A-Z0-9]+)", line)
        if fm:
            families.add(fm.group(1))
    if not started:
        print(f"no execve of {binary} in {trace}")
        return 1
    bad_calls = sorted(c for c in calls if c not in allowed)
    bad_fams = sorted(families - ALLOW_FAMILIES)
    print(f"{len(calls)} distinct syscalls: {' '.join(sorted(calls))}")
    print(f"socket families: {' '.join(sorted(families))}")
    if bad_calls:
        print(f"refused by SystemCallFilter: {' '.join(bad_calls)}")
    if bad_fams:
        print(f"refused by RestrictAddressFamilies: {' '.join(bad_fams)}")
    if hidden_proc:
        print(f"/proc paths that ProcSubset=pid hides: {' '.join(sorted(hidden_proc))}")
    if bad_writes:
        print(f"writes outside the data dir (read-only under ProtectSystem=strict): {' '.join(sorted(bad_writes))}")
    return 1 if bad_calls or bad_fams or hidden_proc or bad_writes else 0


sys.exit(main())
