//! Discovery mode dns against a real DNS server (dnsmasq from Debian) on loopback.
//!
//! Every sidecar runs on its own loopback address 127.77.T.N (T: one block per test, so
//! tests run in parallel without sharing addresses); all of a test's sidecars use the
//! same handshake port, as pods behind a headless Service do. dnsmasq serves the
//! headless name from an hosts file that the test rewrites and reloads with SIGHUP.
//! Traffic stays on loopback.

mod common;

use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    process::Command,
    time::{Duration, Instant},
};

use common::{dnsmasq::Dnsmasq, free_port, free_port_on, wait_until, Opts, Sidecar};
use peat_sidecar::discovery::dns::{
    resolve::{Query, Resolver},
    wire,
};

/// Discovery interval of the sidecars in these tests (seconds).
const INTERVAL: u64 = 2;
/// Slack on top of one interval for process scheduling on a loaded 2-core machine:
/// handshakes and dials on loopback take milliseconds.
const SLACK: Duration = Duration::from_secs(2);
const NAME: &str = "peat.test";

fn ip(block: u8, n: u8) -> IpAddr {
    IpAddr::from([127, 77, block, n])
}

/// A sidecar in dns mode on `addr`, resolving `service` through `dns`.
async fn dns_sidecar(
    name: &str,
    addr: IpAddr,
    app: &str,
    dport: u16,
    dns: &Dnsmasq,
    service: &str,
) -> Sidecar {
    Sidecar::start(
        name,
        Opts {
            app_id: app.into(),
            bind: Some(SocketAddr::new(addr, free_port())),
            extra: vec![
                "--discovery-mode".into(),
                "dns".into(),
                "--discovery-service".into(),
                service.into(),
                "--discovery-interval".into(),
                INTERVAL.to_string(),
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

/// Whether `of` knows `peer` through `source`.
/// Waits (15 s at most) until a and b list each other with source dns and are
/// connected.
async fn found_each_other(a: &Sidecar, b: &Sidecar) -> Option<Duration> {
    wait_until(Duration::from_secs(15), || async {
        a.lists_with_source(&b.id, "dns").await
            && b.lists_with_source(&a.id, "dns").await
            && is_connected(a, b).await
    })
    .await
}

async fn is_connected(of: &Sidecar, peer: &Sidecar) -> bool {
    of.connected().await.contains(&peer.id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_up_and_scale_down() {
    if common::skip::without_program("dnsmasq", "apt-get install dnsmasq-base") {
        return;
    }
    let (a_ip, b_ip, c_ip) = (ip(1, 11), ip(1, 12), ip(1, 13));
    let dport = free_port_on(&[a_ip, b_ip, c_ip]);
    let dns = Dnsmasq::start(&[]);
    dns.set(NAME, &[a_ip, b_ip]);
    let a = dns_sidecar("a", a_ip, "test", dport, &dns, NAME).await;
    let b = dns_sidecar("b", b_ip, "test", dport, &dns, NAME).await;
    let both = found_each_other(&a, &b).await;
    assert!(
        both.is_some(),
        "a and b did not find each other through dns"
    );

    // Scale up: c starts before its record exists (like a pod whose address is not
    // published yet), then the record appears.
    let c = dns_sidecar("c", c_ip, "test", dport, &dns, NAME).await;
    tokio::time::sleep(Duration::from_secs(INTERVAL)).await;
    assert!(
        !a.lists_with_source(&c.id, "dns").await,
        "a found c through dns before c had a record"
    );
    dns.set(NAME, &[a_ip, b_ip, c_ip]);
    let t0 = Instant::now();
    let up = wait_until(
        Duration::from_secs(INTERVAL) + SLACK + Duration::from_secs(10),
        || async {
            a.lists_with_source(&c.id, "dns").await
                && b.lists_with_source(&c.id, "dns").await
                && is_connected(&a, &c).await
                && is_connected(&b, &c).await
        },
    )
    .await
    .expect("a and b did not find c through dns after its record was added");
    eprintln!(
        "scale-up: c found through dns and connected after {:?} (interval {INTERVAL} s)",
        t0.elapsed()
    );
    assert!(
        up <= Duration::from_secs(INTERVAL) + SLACK,
        "scale-up took {up:?}; it must take at most one interval ({INTERVAL} s) plus scheduling slack"
    );

    // Scale down: b's record goes away; b keeps running, so its connections live on.
    dns.set(NAME, &[a_ip, c_ip]);
    let t0 = Instant::now();
    let down = wait_until(
        Duration::from_secs(INTERVAL) + SLACK + Duration::from_secs(10),
        || async {
            !a.lists_with_source(&b.id, "dns").await && !c.lists_with_source(&b.id, "dns").await
        },
    )
    .await
    .expect("b was not lost for dns after its record was removed");
    eprintln!("scale-down: b lost for dns after {:?}", t0.elapsed());
    assert!(
        down <= Duration::from_secs(INTERVAL) + SLACK,
        "scale-down took {down:?}"
    );
    assert!(
        is_connected(&a, &b).await,
        "a dropped its live connection to b"
    );
    assert!(
        is_connected(&c, &b).await,
        "c dropped its live connection to b"
    );
    assert!(
        a.log().contains("peer lost by dns"),
        "no `lost` line in a's log"
    );
    assert!(a.log().contains("address left the DNS answer"));
    // c itself is still found through dns.
    assert!(a.lists_with_source(&c.id, "dns").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_sidecars_and_other_apps_are_skipped() {
    if common::skip::without_program("dnsmasq", "apt-get install dnsmasq-base") {
        return;
    }
    let (a_ip, b_ip, d_ip) = (ip(2, 11), ip(2, 12), ip(2, 13));
    let silent_ip = ip(2, 20); // nothing listens there
    let echo_ip = ip(2, 21); // a UDP echo service: answers, but not a sidecar
    let dport = free_port_on(&[a_ip, b_ip, d_ip, silent_ip, echo_ip]);
    let echo = UdpSocket::bind((echo_ip, dport)).unwrap();
    echo.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let echo_thread = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            let mut echoed = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok((n, from)) = echo.recv_from(&mut buf) {
                    let _ = echo.send_to(&buf[..n], from);
                    echoed += 1;
                }
            }
            echoed
        })
    };

    let dns = Dnsmasq::start(&[]);
    dns.set(NAME, &[a_ip, b_ip, d_ip, silent_ip, echo_ip]);
    let a = dns_sidecar("a", a_ip, "test", dport, &dns, NAME).await;
    let b = dns_sidecar("b", b_ip, "test", dport, &dns, NAME).await;
    let d = dns_sidecar("d", d_ip, "other", dport, &dns, NAME).await;
    assert!(
        wait_until(Duration::from_secs(15), || async {
            is_connected(&a, &b).await && is_connected(&b, &a).await
        })
        .await
        .is_some(),
        "a and b did not connect"
    );
    // Let several rounds pass: the skips must hold and the log lines must not repeat.
    tokio::time::sleep(Duration::from_secs(3 * INTERVAL + 1)).await;

    for (x, y) in [(&a, &d), (&b, &d), (&d, &a), (&d, &b)] {
        assert!(
            x.peer(&y.id).await.is_none(),
            "{} knows {} of another app id",
            x.name,
            y.name
        );
    }
    assert_eq!(
        d.status().await.counters.unwrap().dials_started,
        0,
        "d dialled someone"
    );
    assert_eq!(a.connected().await, vec![b.id.clone()]);

    let log = a.log();
    let silent = format!("{silent_ip}:{dport}");
    let silent_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&silent) && l.contains("does not answer the discovery handshake"))
        .collect();
    assert_eq!(
        silent_lines.len(),
        1,
        "the silent address must be logged exactly once:\n{log}"
    );
    let echo_addr = format!("{echo_ip}:{dport}");
    let echo_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&echo_addr) && l.contains("rejected a discovery handshake answer"))
        .collect();
    assert_eq!(
        echo_lines.len(),
        1,
        "the echo service must be logged exactly once:\n{log}"
    );
    assert!(echo_lines[0].contains("wrong size"), "{}", echo_lines[0]);
    let other: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("skipping a sidecar of another app id") && l.contains(&d.id))
        .collect();
    assert_eq!(
        other.len(),
        1,
        "d must be logged once as another app id:\n{log}"
    );
    assert!(other[0].contains("other_app_id=other"));
    assert!(d.log().contains("skipping a sidecar of another app id"));

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let echoed = echo_thread.join().unwrap();
    assert!(
        echoed >= 3,
        "the echo service was asked {echoed} times; it must be retried every round"
    );
}

/// Answers handshake requests on `addr` the way `mode` says, from a test thread.
fn fake_responder(addr: SocketAddr, mode: Fake) -> std::thread::JoinHandle<()> {
    let sock = UdpSocket::bind(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut buf = [0u8; 1500];
        while Instant::now() < deadline {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                continue;
            };
            let Ok(nonce) = wire::decode_request(&buf[..n]) else {
                continue;
            };
            let answer = match &mode {
                Fake::WrongKey { claimed, port } => {
                    // Signed by a fresh key, then the claimed id put in its place.
                    let forger = iroh::SecretKey::generate();
                    let mut a = wire::encode_answer(&forger, &nonce, "test", *port).unwrap();
                    a[38..70].copy_from_slice(claimed.as_bytes());
                    a
                }
                Fake::Replay(captured) => captured.clone(),
                Fake::ReplayPatched(captured) => {
                    let mut a = captured.clone();
                    a[6..38].copy_from_slice(&nonce);
                    a
                }
                Fake::Relay(real) => {
                    // Forwards the question to the real sidecar and returns its answer:
                    // a correct answer, which the asker must accept.
                    let s = UdpSocket::bind((real.ip(), 0)).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                    s.send_to(&buf[..n], real).unwrap();
                    let mut r = [0u8; 1500];
                    match s.recv_from(&mut r) {
                        Ok((m, _)) => r[..m].to_vec(),
                        Err(_) => continue,
                    }
                }
            };
            let _ = sock.send_to(&answer, from);
        }
    })
}

enum Fake {
    WrongKey {
        claimed: iroh::EndpointId,
        port: u16,
    },
    Replay(Vec<u8>),
    ReplayPatched(Vec<u8>),
    Relay(SocketAddr),
}

/// A genuine answer of the sidecar at `target`, to a question of our own.
fn capture_answer(target: SocketAddr) -> Vec<u8> {
    let s = UdpSocket::bind((target.ip(), 0)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let nonce = [42u8; wire::NONCE_LEN];
    s.send_to(&wire::encode_request(&nonce), target).unwrap();
    let mut buf = [0u8; 1500];
    let (n, _) = s
        .recv_from(&mut buf)
        .expect("the real sidecar answers the handshake");
    let identity = wire::verify_answer(&buf[..n], &nonce).expect("the real answer verifies");
    assert_eq!(identity.app_id, "test");
    buf[..n].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_handshake_answers_are_rejected() {
    if common::skip::without_program("dnsmasq", "apt-get install dnsmasq-base") {
        return;
    }
    let a_ip = ip(3, 11);
    let e_ip = ip(3, 15); // the victim: a real sidecar that is not in DNS
    let (wrong_key, replay, patched, relay) = (ip(3, 21), ip(3, 22), ip(3, 23), ip(3, 24));
    let dport = free_port_on(&[a_ip, e_ip, wrong_key, replay, patched, relay]);
    let dns = Dnsmasq::start(&[]);
    let a = dns_sidecar("a", a_ip, "test", dport, &dns, NAME).await;
    // e resolves a name without records, so it finds (and dials) no one.
    let e = dns_sidecar("e", e_ip, "test", dport, &dns, "hidden.test").await;
    let e_id: iroh::EndpointId = e.id.parse().unwrap();
    let e_handshake = SocketAddr::new(e_ip, dport);
    let captured = capture_answer(e_handshake);

    let _f1 = fake_responder(
        SocketAddr::new(wrong_key, dport),
        Fake::WrongKey {
            claimed: e_id,
            port: e.bind.port(),
        },
    );
    let _f2 = fake_responder(
        SocketAddr::new(replay, dport),
        Fake::Replay(captured.clone()),
    );
    let _f3 = fake_responder(
        SocketAddr::new(patched, dport),
        Fake::ReplayPatched(captured),
    );
    let _f4 = fake_responder(SocketAddr::new(relay, dport), Fake::Relay(e_handshake));
    dns.set(NAME, &[a_ip, wrong_key, replay, patched, relay]);

    // The relayed (genuine) answer is accepted: e is found at the relay's address.
    let relay_iroh = SocketAddr::new(relay, e.bind.port()).to_string();
    let found = wait_until(
        Duration::from_secs(INTERVAL) + SLACK + Duration::from_secs(5),
        || async {
            a.peer(&e.id)
                .await
                .is_some_and(|p| p.addrs.contains(&relay_iroh))
        },
    )
    .await;
    assert!(
        found.is_some(),
        "a did not accept the relayed genuine answer:\n{}",
        a.log()
    );
    tokio::time::sleep(Duration::from_secs(2 * INTERVAL + 1)).await;

    // ... and none of the forged ones added anything.
    let peer = a
        .peer(&e.id)
        .await
        .expect("e is no longer in a's peer table");
    assert_eq!(
        peer.addrs,
        vec![relay_iroh],
        "a took an address from a forged answer"
    );
    assert_eq!(peer.sources, vec!["dns".to_string()]);
    let log = a.log();
    let line = |ip: IpAddr| -> String {
        let needle = format!("{ip}:{dport}");
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(&needle) && l.contains("rejected a discovery handshake answer"))
            .collect();
        assert_eq!(
            lines.len(),
            1,
            "{ip}: expected exactly one rejection line:\n{log}"
        );
        lines[0].to_string()
    };
    assert!(line(wrong_key).contains("signature does not verify"));
    assert!(line(replay).contains("another nonce"));
    assert!(line(patched).contains("signature does not verify"));
    let relay_addr = format!("{relay}:{dport}");
    assert!(
        !log.lines()
            .any(|l| l.contains(&relay_addr) && l.contains("rejected")),
        "the relayed genuine answer was rejected:\n{log}"
    );
    // e never heard of a through discovery (its own DNS name has no records).
    assert!(e
        .peer(&a.id)
        .await
        .is_none_or(|p| !p.sources.iter().any(|s| s == "dns")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_records_give_hosts_and_handshake_ports() {
    if common::skip::without_program("dnsmasq", "apt-get install dnsmasq-base") {
        return;
    }
    let (a_ip, b_ip) = (ip(4, 11), ip(4, 12));
    // Different handshake ports per host: only SRV can say so.
    let pa = free_port_on(&[a_ip]);
    let pb = free_port_on(&[b_ip]);
    let srv = "_discovery._udp.peat.test";
    let dns = Dnsmasq::start(&[
        format!("--host-record=a.peat.test,{a_ip}"),
        format!("--host-record=b.peat.test,{b_ip}"),
        format!("--srv-host={srv},a.peat.test,{pa}"),
        format!("--srv-host={srv},b.peat.test,{pb}"),
    ]);
    let a = dns_sidecar("a", a_ip, "test", pa, &dns, srv).await;
    let b = dns_sidecar("b", b_ip, "test", pb, &dns, srv).await;
    let ok = found_each_other(&a, &b).await;
    assert!(
        ok.is_some(),
        "a and b did not find each other through SRV records"
    );
    assert!(a.log().contains("kind=\"SRV\"") || a.log().contains("kind=SRV"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolver_asks_a_and_aaaa_and_tells_failure_from_absence() {
    if common::skip::without_program("dnsmasq", "apt-get install dnsmasq-base") {
        return;
    }
    let dns = Dnsmasq::start(&[]);
    let v4 = ip(5, 11);
    let v6: IpAddr = "fd00:77::11".parse().unwrap();
    dns.set(NAME, &[v4, v6]);
    let r = Resolver::new(Some(&dns.server())).unwrap();
    let q = Query::parse(NAME, 9471).unwrap();
    let res = r.resolve(&q).await.unwrap();
    assert_eq!(
        res.targets.iter().copied().collect::<Vec<_>>(),
        vec![SocketAddr::new(v4, 9471), SocketAddr::new(v6, 9471)]
    );
    assert!(!res.v4_failed && !res.v6_failed);
    // A name without records is an empty answer, not a failure.
    let none = r
        .resolve(&Query::parse("absent.test", 9471).unwrap())
        .await
        .unwrap();
    assert!(none.targets.is_empty() && !none.failed_entirely());
    // A server that does not answer is a failure (known peers are then kept).
    let dead = Resolver::new(Some(&format!("127.0.0.1:{}", free_port()))).unwrap();
    let res = dead.resolve(&q).await.unwrap();
    assert!(res.failed_entirely(), "{res:?}");
    // The records were fetched from dnsmasq, both types.
    let log = dns.log();
    assert!(
        log.contains(&format!("query[A] {NAME}")) && log.contains(&format!("query[AAAA] {NAME}")),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taken_discovery_port_fails_the_start() {
    let a_ip = ip(6, 11);
    let dport = free_port_on(&[a_ip]);
    let _squatter = UdpSocket::bind((a_ip, dport)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(common::BIN)
        .arg("run")
        .arg("--data-dir")
        .arg(dir.path())
        .arg("--bind")
        .arg(SocketAddr::new(a_ip, free_port()).to_string())
        .arg("--listen")
        .arg(format!("tcp://127.0.0.1:{}", free_port()))
        .args([
            "--discovery-mode",
            "dns",
            "--discovery-service",
            NAME,
            "--dns-server",
            "127.0.0.1:9",
        ])
        .arg("--discovery-port")
        .arg(dport.to_string())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "cannot bind UDP {a_ip}:{dport} for the discovery handshake"
        )) && err.contains("--discovery-port"),
        "{err}"
    );
}
