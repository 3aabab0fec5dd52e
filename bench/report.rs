//! Results: one [`Measurement`] per (scenario, subject, metric, N), printed as a table
//! and written as JSON together with the machine it was taken on.

use std::{path::Path, path::PathBuf, time::SystemTime};

use serde::Serialize;

/// One measured point: the samples of one metric for one subject at one size.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    /// Scenario name, e.g. `join`.
    pub scenario: String,
    /// What was measured: `peat-sidecar`, `iroh-mdns`, `avahi`.
    pub subject: String,
    /// Metric within the scenario, e.g. `join_s`, `packets_per_node_min`.
    pub metric: String,
    /// Number of nodes on the LAN (0 where it does not apply).
    pub n: usize,
    /// Unit of the samples: `s`, `MB`, `packets/min`, `bytes/min`, `%`, `rounds`.
    pub unit: String,
    pub samples: Vec<f64>,
    pub p50: f64,
    pub p95: f64,
    /// Anything a reader needs to interpret the figure (e.g. "2 of 10 runs timed out").
    pub note: String,
}

impl Measurement {
    pub fn new(
        scenario: &str,
        subject: &str,
        metric: &str,
        n: usize,
        unit: &str,
        samples: Vec<f64>,
    ) -> Measurement {
        let p50 = percentile(&samples, 0.50);
        let p95 = percentile(&samples, 0.95);
        Measurement {
            scenario: scenario.into(),
            subject: subject.into(),
            metric: metric.into(),
            n,
            unit: unit.into(),
            samples,
            p50,
            p95,
            note: String::new(),
        }
    }

    pub fn note(mut self, note: impl Into<String>) -> Measurement {
        self.note = note.into();
        self
    }
}

/// Nearest-rank percentile; NaN for no samples.
pub fn percentile(samples: &[f64], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut v = samples.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let idx = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[idx]
}

/// A scenario that could not run to the end.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub scenario: String,
    pub error: String,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub date_unix: u64,
    pub commit: String,
    pub machine: String,
    pub cpus: usize,
    pub command: String,
    pub quick: bool,
    pub results: Vec<Measurement>,
    pub failures: Vec<Failure>,
}

impl Report {
    pub fn new(quick: bool) -> Report {
        Report {
            date_unix: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            commit: cmd_out("git", &["rev-parse", "--short", "HEAD"]),
            machine: cmd_out("uname", &["-srm"]),
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            command: std::env::args().collect::<Vec<_>>().join(" "),
            quick,
            ..Report::default()
        }
    }

    pub fn failed(&self) -> bool {
        !self.failures.is_empty()
    }

    pub fn table(&self) -> String {
        let mut out = format!(
            "\n{:<12} {:<13} {:<26} {:>3} {:>10} {:>10} {:>4} {:<10} note\n",
            "scenario", "subject", "metric", "N", "p50", "p95", "runs", "unit"
        );
        for m in &self.results {
            out += &format!(
                "{:<12} {:<13} {:<26} {:>3} {:>10.3} {:>10.3} {:>4} {:<10} {}\n",
                m.scenario,
                m.subject,
                m.metric,
                m.n,
                m.p50,
                m.p95,
                m.samples.len(),
                m.unit,
                m.note
            );
        }
        for f in &self.failures {
            out += &format!("FAILED {}: {}\n", f.scenario, f.error);
        }
        out
    }

    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, serde_json::to_vec_pretty(self)?)?;
        Ok(())
    }
}

pub fn default_json_path() -> PathBuf {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/bench")
        .join(format!("{secs}.json"))
}

fn cmd_out(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
