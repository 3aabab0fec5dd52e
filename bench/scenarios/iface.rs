//! `iface` (prefix bi): a sidecar gets an address on a second LAN segment while it
//! runs (`Lan::attach_now`, IPv6 DAD still running); timed until the peer that lives
//! only on that segment has found it by mDNS (it was announced there), and until both
//! are connected. Each round deletes the interface and starts both sidecars afresh.

use std::time::{Duration, Instant};

use crate::{
    common::{netns, netns::Lan, Sidecar},
    report::Measurement,
    scenarios::{
        util::{connected_to_all, mdns_opts, poll, secs},
        Ctx,
    },
};

pub async fn run(ctx: &Ctx) -> anyhow::Result<Vec<Measurement>> {
    let rounds = ctx.rounds(2, 10);
    let mut lan = Lan::new("bi", 1);
    let seg1 = lan.add_segment();
    let other = lan.add_host(seg1);
    let (mut found, mut connected, mut missed) = (vec![], vec![], 0);
    for r in 0..rounds {
        let a = Sidecar::start(&format!("a{r}"), mdns_opts(&lan, 0)).await;
        let b = Sidecar::start(&format!("b{r}"), mdns_opts(&lan, other)).await;
        // No shared segment yet; let both settle into their idle state.
        tokio::time::sleep(Duration::from_secs(2)).await;
        anyhow::ensure!(
            b.peer(&a.id).await.is_none(),
            "round {r}: b knew a before they shared a segment"
        );
        let t0 = Instant::now();
        lan.attach_now(0, seg1);
        let every = Duration::from_millis(20);
        let f = poll(Duration::from_secs(30), every, || async {
            b.lists_with_source(&a.id, "mdns").await
        })
        .await;
        let c = poll(Duration::from_secs(30), every, || async {
            connected_to_all(&a, std::slice::from_ref(&b.id)).await
                && connected_to_all(&b, std::slice::from_ref(&a.id)).await
        })
        .await;
        let c_at = t0.elapsed();
        match (f, c) {
            (Some(f), Some(_)) => {
                found.push(secs(f));
                connected.push(secs(c_at));
            }
            _ => missed += 1,
        }
        if std::env::var_os("BENCH_SHOW_LOGS").is_some() {
            eprintln!("--- a log ---\n{}\n--- b log ---\n{}", a.log(), b.log());
        }
        drop((a, b));
        // Remove eth1 (its veth peer in the switch goes with it) for the next round.
        netns::sh(&["ip", "-n", lan.ns(0), "link", "del", &format!("eth{seg1}")]);
        // The next eth1 has a new MAC under the same address: without a flush, the
        // peer's stale ARP entry would blackhole the first dials for seconds, which
        // measures the kernel's neighbour timers and not the sidecar.
        netns::sh(&["ip", "-n", lan.ns(other), "neigh", "flush", "all"]);
    }
    let note = |what: &str| {
        let mut s = format!("{rounds} rounds; {what}");
        if missed > 0 {
            s += &format!("; {missed} rounds ran out (30 s)");
        }
        s
    };
    Ok(vec![
        Measurement::new("iface", "peat-sidecar", "announced_s", 2, "s", found)
            .note(note("address added -> the peer there found us by mDNS")),
        Measurement::new("iface", "peat-sidecar", "connected_s", 2, "s", connected)
            .note(note("address added -> both connected over it")),
    ])
}
