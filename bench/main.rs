//! The benchmark harness: discovery latency, scale, traffic and footprint of
//! peat-sidecar, side by side with the alternatives a user would pick instead, on a
//! LAN of network namespaces (tests/common/netns.rs). One command runs it (as root):
//!
//!     sudo cargo bench --bench discovery                  # the full set
//!     sudo cargo bench --bench discovery -- --quick       # small N, few rounds
//!     sudo cargo bench --bench discovery -- --only join,leave --sizes 3,10
//!
//! It prints a table and writes JSON (default `target/bench/<unix time>.json`, or
//! `--json PATH`) so that runs can be compared across commits. CI runs
//! `cargo test --bench discovery -- --quick` (debug build): that checks the harness
//! works, it asserts no timing. Results and targets: docs/PERFORMANCE.md.
//!
//! The machine is shared and noisy: compare medians and ratios taken in one run.

#[path = "../tests/common/mod.rs"]
mod common;
mod neigh;
mod report;
mod scenarios;

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser, Debug, Clone)]
#[command(about = "peat-sidecar discovery benchmarks (needs root: network namespaces)")]
pub struct Args {
    /// Small N and few rounds: checks that every scenario runs (used by CI).
    #[arg(long)]
    pub quick: bool,
    /// Run only these scenarios (comma separated); `--list` shows them.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Skip these scenarios (comma separated).
    #[arg(long, value_delimiter = ',')]
    pub skip: Vec<String>,
    /// Mesh sizes for the scenarios that scale with N (default per scenario).
    #[arg(long, value_delimiter = ',')]
    pub sizes: Vec<usize>,
    /// Rounds per measured point (default per scenario; at least 10 for small N).
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Time limit per scenario in seconds (default 240 with --quick, else 3600); a
    /// scenario that runs out fails, and its sidecars and namespaces are removed.
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Where to write the JSON results.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// List the scenarios and exit.
    #[arg(long)]
    pub list: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    pub bench: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.list {
        for s in scenarios::ALL {
            println!("{:<14} {}", s.name, s.about);
        }
        return Ok(());
    }
    common::netns::require_root();
    // Held until main returns or unwinds: the limits are restored either way (a
    // scenario's panic or timeout is caught inside and does not end the run). Without
    // it, meshes of 30 and more lose neighbour entries and never complete.
    let _neigh = match neigh::NeighLimits::raise_for(scenarios::largest_n(&args)) {
        Ok(g) => Some(g),
        Err(e) => {
            eprintln!("warning: {e:#}; large meshes may not complete");
            None
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(scenarios::run_selected(&args))?;
    print!("{}", report.table());
    let path = args.json.clone().unwrap_or_else(report::default_json_path);
    report.write_json(&path)?;
    println!("results written to {}", path.display());
    if report.failed() {
        anyhow::bail!("some scenarios failed; see the table above");
    }
    Ok(())
}
