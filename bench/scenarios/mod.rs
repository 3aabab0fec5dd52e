//! The scenarios. Each one builds its own LAN of namespaces (with a prefix of its
//! own, `b` + two letters, so that they never collide with the tests' prefixes; `radio`
//! uses `lc`, `ld`, `le`, which no test uses), measures, tears the LAN down and returns its measurements.
//!
//! To add one: write `async fn run(ctx: &Ctx) -> anyhow::Result<Vec<Measurement>>` in a
//! module here and list it in [`ALL`].

pub mod avahi;
pub mod dns;
pub mod footprint;
pub mod gossip;
pub mod idle;
pub mod iface;
pub mod iroh_join;
pub mod iroh_node;
pub mod join;
pub mod leave;
pub mod origins;
pub mod pcap;
pub mod pubsub;
pub mod radio;
pub mod subjects;
pub mod thin;
pub mod traffic;
pub mod util;
pub mod zenoh;

use std::{future::Future, panic::AssertUnwindSafe, pin::Pin, time::Duration};

use futures::FutureExt;

use crate::{
    report::{Failure, Measurement, Report},
    Args,
};

pub type RunFn =
    for<'a> fn(&'a Ctx) -> Pin<Box<dyn Future<Output = anyhow::Result<Vec<Measurement>>> + 'a>>;

pub struct Scenario {
    pub name: &'static str,
    pub about: &'static str,
    pub run: RunFn,
}

/// What a scenario gets: the command line, and helpers that read it.
pub struct Ctx {
    pub args: Args,
}

impl Ctx {
    /// The sizes to measure: `--sizes` if given, else `quick` in quick mode, else `full`.
    pub fn sizes(&self, quick: &[usize], full: &[usize]) -> Vec<usize> {
        if !self.args.sizes.is_empty() {
            self.args.sizes.clone()
        } else if self.args.quick {
            quick.to_vec()
        } else {
            full.to_vec()
        }
    }

    /// Rounds per point: `--rounds` if given, else `quick` in quick mode, else `full`.
    pub fn rounds(&self, quick: usize, full: usize) -> usize {
        self.args
            .rounds
            .unwrap_or(if self.args.quick { quick } else { full })
    }

    /// How long one scenario may run: `--timeout` if given, else 4 min in quick mode
    /// (a stuck scenario must not eat the CI budget) and 1 h in a full run.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(
            self.args
                .timeout
                .unwrap_or(if self.args.quick { 240 } else { 3600 }),
        )
    }
}

/// The largest LAN any selected scenario builds: `--sizes`, else the largest default
/// (`join` and `iroh-join` go to 50; in quick mode nothing exceeds 5).
pub fn largest_n(args: &Args) -> usize {
    match args.sizes.iter().max() {
        Some(&n) => n,
        None if args.quick => 5,
        None => 50,
    }
}

/// Every scenario, in the order they run.
pub const ALL: &[Scenario] = &[
    Scenario {
        name: "join",
        about: "new node -> connected to all N-1 and they to it; N started at once -> full mesh",
        run: |c| Box::pin(join::run(c)),
    },
    Scenario {
        name: "leave",
        about: "SIGTERM -> goodbye seen / out of tables; SIGKILL -> connection closed",
        run: |c| Box::pin(leave::run(c)),
    },
    Scenario {
        name: "iface",
        about: "address on a new segment -> announced there, peer found and connected",
        run: |c| Box::pin(iface::run(c)),
    },
    Scenario {
        name: "footprint",
        about: "idle RSS, CPU and threads per sidecar in a mesh; binary size per arch",
        run: |c| Box::pin(footprint::run(c)),
    },
    Scenario {
        name: "gossip",
        about: "a chain of N (--peer to the next) in mode gossip -> full mesh",
        run: |c| Box::pin(gossip::run(c)),
    },
    Scenario {
        name: "dns",
        about: "record added to dnsmasq -> peer connected, per --discovery-interval",
        run: |c| Box::pin(dns::run(c)),
    },
    Scenario {
        name: "iroh-join",
        about: "join latency and SIGKILL noticed, through iroh + iroh-mdns-address-lookup",
        run: |c| Box::pin(iroh_join::run(c)),
    },
    Scenario {
        name: "idle",
        about: "idle bytes per node per minute on the wire (QUIC/mDNS/beacon/other); kill -9 and SIGTERM noticed; old keep-alive side by side",
        run: |c| Box::pin(idle::run(c)),
    },
    Scenario {
        name: "traffic",
        about: "steady-state mDNS packets and bytes per node per minute: peat-sidecar, avahi, iroh",
        run: |c| Box::pin(traffic::run(c)),
    },
    Scenario {
        name: "radio",
        about: "lossy channel (30 %, 100 ± 50 ms) -> full mesh, false departures; idle at 10 %; 64 kbit/s thin link",
        run: |c| Box::pin(radio::run(c)),
    },
    Scenario {
        name: "pubsub",
        about: "data plane: latency, throughput, bytes per publish, retained sync, bridge hop; vs Zenoh",
        run: |c| Box::pin(pubsub::run(c)),
    },
    Scenario {
        name: "thin",
        about: "thin links: urgent messages under a bulk flood on a 64 kbit/s link, with and without classes",
        run: |c| Box::pin(thin::run(c)),
    },
    Scenario {
        name: "origins",
        about: "signed origins: the publisher's signature and a receiver's check, per message (in process)",
        run: |c| Box::pin(origins::run(c)),
    },
];

pub async fn run_selected(args: &Args) -> anyhow::Result<Report> {
    for name in args.only.iter().chain(&args.skip) {
        if !ALL.iter().any(|s| s.name == name) {
            anyhow::bail!("no scenario named `{name}`; `--list` shows them");
        }
    }
    let ctx = Ctx { args: args.clone() };
    let mut report = Report::new(args.quick);
    for s in ALL {
        if (!args.only.is_empty() && !args.only.iter().any(|n| n == s.name))
            || args.skip.iter().any(|n| n == s.name)
        {
            continue;
        }
        eprintln!("=== {}: {}", s.name, s.about);
        let t0 = std::time::Instant::now();
        // A panic (the test helpers panic on a sidecar that does not start) or a
        // timeout fails this scenario only. Either way its future is dropped, and with
        // it its sidecars (killed) and its namespaces (deleted).
        let run = AssertUnwindSafe((s.run)(&ctx)).catch_unwind();
        let error = match tokio::time::timeout(ctx.timeout(), run).await {
            Ok(Ok(Ok(ms))) => {
                report.results.extend(ms);
                None
            }
            Ok(Ok(Err(e))) => Some(format!("{e:#}")),
            Ok(Err(panic)) => Some(format!(
                "panicked: {}",
                panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("?")
            )),
            Err(_) => Some(format!("timed out after {:?}", ctx.timeout())),
        };
        if let Some(error) = error {
            eprintln!("=== {} FAILED: {error}", s.name);
            report.failures.push(Failure {
                scenario: s.name.into(),
                error,
            });
        }
        eprintln!("=== {} done in {:.0?}", s.name, t0.elapsed());
    }
    Ok(report)
}
