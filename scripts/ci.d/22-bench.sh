#!/usr/bin/env bash
# The benchmark harness at small N (bench/main.rs --quick): checks that every scenario
# still runs end to end; it asserts no timing (figures: docs/PERFORMANCE.md). Needs
# root for the namespaces. Budget: about 4 minutes (the harness stops a scenario after
# 240 s in quick mode). Each scenario removes its namespaces when it ends, fails or
# times out; the trap below also sweeps the harness's prefixes if the run is killed.
set -euo pipefail
cd "$(dirname "$0")/../.."

sweep() {
    # Namespaces of the bench prefixes (b + two letters, see bench/scenarios/mod.rs;
    # lc, ld, le for radio, ib for idle, dw? for pubsub): kill what still runs inside, then delete them.
    local ns
    for ns in $(ip netns list | awk '{print $1}' | grep -E '^(b[a-z]{1,2}|l[c-e]|ib|dw[a-z])-([0-9]+|sw)$' || true); do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
        ip netns del "$ns" 2>/dev/null || true
    done
}
trap sweep EXIT

cargo test --locked --bench discovery -- --quick --json target/bench/ci-quick.json
