//! `dns` (prefix bd; no namespaces: like tests/dns.rs it runs on loopback addresses
//! 127.77.200.x, a block no test uses, with dnsmasq on 127.0.0.1): a sidecar in dns
//! mode serves as the existing node; each round a fresh sidecar starts before its
//! record exists, then its address is added to dnsmasq's hosts file (SIGHUP), and the
//! time runs until the existing node lists it with source dns and is connected to it.
//! For each `--discovery-interval` given.

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use crate::{
    common::{dnsmasq::Dnsmasq, free_port, free_port_on, Opts, Sidecar},
    report::Measurement,
    scenarios::{
        util::{connected_to_all, poll, secs},
        Ctx,
    },
};

const NAME: &str = "peat.test";

fn ip(n: u8) -> IpAddr {
    IpAddr::from([127, 77, 200, n])
}

pub async fn run(ctx: &Ctx) -> anyhow::Result<Vec<Measurement>> {
    let intervals: &[u64] = if ctx.args.quick { &[1] } else { &[1, 5] };
    let rounds = ctx.rounds(2, 10);
    let mut out = vec![];
    for &iv in intervals {
        out.push(measure(iv, rounds).await?);
    }
    Ok(out)
}

async fn measure(interval: u64, rounds: usize) -> anyhow::Result<Measurement> {
    let (a_ip, b_ip) = (ip(1), ip(2));
    let dport = free_port_on(&[a_ip, b_ip]);
    let dns = Dnsmasq::try_start(&[]).map_err(anyhow::Error::msg)?;
    dns.try_set(NAME, &[a_ip]).map_err(anyhow::Error::msg)?;
    let a = dns_sidecar("a", a_ip, dport, interval, &dns).await;
    let (mut samples, mut missed) = (vec![], 0);
    for r in 0..rounds {
        let b = dns_sidecar(&format!("b{r}"), b_ip, dport, interval, &dns).await;
        // Let a's query run once more without b, so rounds start at random phases of
        // a's interval (as a real record would).
        tokio::time::sleep(Duration::from_millis(300 + 700 * (r as u64 % 3))).await;
        let t0 = Instant::now();
        dns.try_set(NAME, &[a_ip, b_ip])
            .map_err(anyhow::Error::msg)?;
        // b found a at its own start (a is in the record): what the record adds is
        // a finding b. Timed until a lists b with source dns and they are connected.
        let ok = poll(
            Duration::from_secs(interval + 20),
            Duration::from_millis(20),
            || async {
                a.peer(&b.id)
                    .await
                    .is_some_and(|p| p.sources.iter().any(|s| s == "dns"))
                    && connected_to_all(&a, std::slice::from_ref(&b.id)).await
            },
        )
        .await;
        match ok {
            Some(_) => samples.push(secs(t0.elapsed())),
            None => missed += 1,
        }
        drop(b);
        dns.try_set(NAME, &[a_ip]).map_err(anyhow::Error::msg)?;
    }
    let mut note = format!(
        "{rounds} rounds; b's record added (dnsmasq SIGHUP) -> a found b by dns and \
         is connected to it (b, started earlier, found a at once); \
         --discovery-interval {interval}; loopback"
    );
    if missed > 0 {
        note += &format!("; {missed} rounds ran out");
    }
    Ok(Measurement::new(
        "dns",
        "peat-sidecar",
        &format!("record_to_found_s_i{interval}"),
        2,
        "s",
        samples,
    )
    .note(note))
}

async fn dns_sidecar(
    name: &str,
    addr: IpAddr,
    dport: u16,
    interval: u64,
    dns: &Dnsmasq,
) -> Sidecar {
    Sidecar::start(
        name,
        Opts {
            bind: Some(SocketAddr::new(addr, free_port())),
            extra: vec![
                "--discovery-mode".into(),
                "dns".into(),
                "--discovery-service".into(),
                NAME.into(),
                "--discovery-interval".into(),
                interval.to_string(),
                "--discovery-port".into(),
                dport.to_string(),
                "--dns-server".into(),
                dns.server(),
            ],
            ..Default::default()
        },
    )
    .await
}
