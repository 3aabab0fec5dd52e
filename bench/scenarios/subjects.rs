//! What `pubsub` runs its parts with: this build; older builds (`BENCH_OLD_BIN`), for
//! the comparison with the old code in one run; and this build with member
//! certificates on every node (`PUBSUB_CERTS=1`), for what the trust checks cost.

use std::path::PathBuf;

use super::util::mdns_opts;
use crate::common::{
    netns::Lan,
    trust::{enrol, issue_for, s},
    Opts, Sidecar,
};

pub struct Subject {
    pub name: String,
    bin: Option<PathBuf>,
    certs: Option<Certs>,
}

/// An authority and a data dir with its certificate per host.
struct Certs {
    key: PathBuf,
    dirs: Vec<PathBuf>,
    certs: Vec<PathBuf>,
    _tmp: tempfile::TempDir,
}

impl Certs {
    /// Enrols `n` hosts, each allowed every topic.
    fn new(n: usize) -> anyhow::Result<Certs> {
        let tmp = tempfile::tempdir()?;
        let e = enrol(tmp.path(), n);
        let all = ["--publish", "**", "--subscribe", "**", "--valid-for", "1d"];
        let certs = (0..n).map(|i| issue_for(&e, i, &all, tmp.path())).collect();
        Ok(Certs {
            key: e.key,
            dirs: e.dirs,
            certs,
            _tmp: tmp,
        })
    }
}

impl Subject {
    /// Every subject the environment asks for; `hosts` is the most a part starts.
    pub fn all(hosts: usize) -> anyhow::Result<Vec<Subject>> {
        let mut v = vec![Subject::of("peat-sidecar", None)];
        if std::env::var_os("PUBSUB_CERTS").is_some() {
            let mut certs = Subject::of("peat-sidecar-certs", None);
            certs.certs = Some(Certs::new(hosts)?);
            v.push(certs);
        }
        let olds = std::env::var("BENCH_OLD_BIN").unwrap_or_default();
        for old in olds.split(',').filter(|s| !s.is_empty()) {
            let (label, path) = old.split_once('=').unwrap_or(("old", old));
            v.push(Subject::of(
                &format!("peat-sidecar-{label}"),
                Some(path.into()),
            ));
        }
        Ok(v)
    }

    fn of(name: &str, bin: Option<PathBuf>) -> Subject {
        Subject {
            name: name.into(),
            bin,
            certs: None,
        }
    }

    pub fn opts(&self, lan: &Lan, i: usize) -> Opts {
        let mut o = Opts {
            bin: self.bin.clone(),
            ..mdns_opts(lan, i)
        };
        if let Some(c) = &self.certs {
            let (key, cert) = (s(&c.key), s(&c.certs[i]));
            o.extra
                .extend(["--authority-key", key, "--member-cert", cert].map(String::from));
        }
        o
    }

    /// Starts host `i`'s sidecar with `opts` (from [`Subject::opts`]): in its enrolled
    /// data dir when it has a certificate.
    pub async fn start(&self, name: &str, i: usize, opts: Opts) -> Sidecar {
        match &self.certs {
            Some(c) => Sidecar::start_in(name, &c.dirs[i], opts).await,
            None => Sidecar::start(name, opts).await,
        }
    }

    pub async fn start_on(
        &self,
        lan: &Lan,
        hosts: std::ops::Range<usize>,
        tag: &str,
    ) -> Vec<Sidecar> {
        let mut v = Vec::new();
        for i in hosts {
            v.push(self.start(&format!("{tag}{i}"), i, self.opts(lan, i)).await);
        }
        v
    }
}
