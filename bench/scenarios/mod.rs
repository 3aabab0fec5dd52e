//! The scenarios. Each one builds its own LAN of namespaces (with a prefix of its
//! own, `b` + two letters, so that they never collide with the tests' prefixes),
//! measures, tears the LAN down and returns its measurements.
//!
//! To add one: write `async fn run(ctx: &Ctx) -> anyhow::Result<Vec<Measurement>>` in a
//! module here and list it in [`ALL`].

pub mod avahi;
pub mod iroh_join;
pub mod iroh_node;
pub mod pcap;
pub mod traffic;

use std::{future::Future, pin::Pin};

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
}

/// Every scenario, in the order they run.
pub const ALL: &[Scenario] = &[
    Scenario {
        name: "iroh-join",
        about: "join latency and SIGKILL noticed, through iroh + iroh-mdns-address-lookup",
        run: |c| Box::pin(iroh_join::run(c)),
    },
    Scenario {
        name: "traffic",
        about: "steady-state mDNS packets and bytes per node per minute: peat-sidecar, avahi, iroh",
        run: |c| Box::pin(traffic::run(c)),
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
        match (s.run)(&ctx).await {
            Ok(ms) => report.results.extend(ms),
            Err(e) => report.failures.push(Failure {
                scenario: s.name.into(),
                error: format!("{e:#}"),
            }),
        }
        eprintln!("=== {} done in {:.0?}", s.name, t0.elapsed());
    }
    Ok(report)
}
