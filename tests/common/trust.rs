//! Helpers of the member-certificate tests (tests/trust.rs, tests/revocation.rs): the
//! `authority` commands, and options of nodes that present certificates.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use super::{netns::Lan, wait_until, Opts, Sidecar, BIN};

/// Runs `peat-sidecar ARGS`; returns (exit code, stdout, stderr).
pub fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn ok(args: &[&str]) -> String {
    let (code, out, err) = run(args);
    assert_eq!(code, 0, "{args:?}: {err}");
    out
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// An authority directory made by `authority init`.
pub fn authority(dir: &Path, name: &str) -> PathBuf {
    let a = dir.join(name);
    let out = ok(&["authority", "init", "--out", s(&a)]);
    assert!(out.contains("key id"), "{out}");
    a
}

/// `authority issue` for `id`; returns the certificate file.
pub fn issue(auth: &Path, id: &str, name: &str, valid_for: &str, out: &Path) -> PathBuf {
    ok(&[
        "authority",
        "issue",
        "--authority",
        s(auth),
        "--endpoint-id",
        id,
        "--name",
        name,
        "--valid-for",
        valid_for,
        "--publish",
        "tracks/**",
        "--out",
        s(out),
    ]);
    out.to_path_buf()
}

/// A certificate for host `i` of `e`, named `n<i>`, with `rights` (`--publish P`,
/// `--subscribe P`, `--valid-for D`; the authority's defaults otherwise), in `dir`.
pub fn issue_for(e: &Enrolment, i: usize, rights: &[&str], dir: &Path) -> PathBuf {
    let out = dir.join(format!("n{i}.cert"));
    let name = format!("n{i}");
    let mut args = vec!["authority", "issue", "--authority", s(&e.auth)];
    args.extend([
        "--endpoint-id",
        &e.ids[i],
        "--name",
        &name,
        "--out",
        s(&out),
    ]);
    args.extend(rights);
    ok(&args);
    out
}

/// Options of a node in namespace `i` with trust flags.
pub fn node_opts(lan: &Lan, i: usize, peers: &[String], extra: &[&str]) -> Opts {
    let mut o = Opts {
        netns: Some(lan.ns(i).to_string()),
        bind: Some(std::net::SocketAddr::from((lan.addr(i, 0), 9470))),
        peers: peers.to_vec(),
        ..Opts::default()
    };
    o.extra = extra.iter().map(|s| s.to_string()).collect();
    o
}

/// Waits until `node`'s log holds a line with all of `needles`.
pub async fn wait_log(node: &Sidecar, needles: &[&str], timeout: Duration) -> bool {
    wait_until(timeout, || async {
        node.log()
            .lines()
            .any(|l| needles.iter().all(|n| l.contains(n)))
    })
    .await
    .is_some()
}

/// Waits until `node` holds no connection to `id`.
pub async fn cut_off(node: &Sidecar, id: &str, timeout: Duration) -> bool {
    wait_until(timeout, || async {
        !node.connected().await.contains(&id.to_string())
    })
    .await
    .is_some()
}

/// A formation's material: an authority in `t/auth`, and the data dirs (`t/n0`, ...)
/// and endpoint ids of `n` nodes, made before any node starts so that certificates
/// can name them.
pub struct Enrolment {
    pub auth: PathBuf,
    /// The authority's public key file.
    pub key: PathBuf,
    pub dirs: Vec<PathBuf>,
    pub ids: Vec<String>,
}

pub fn enrol(t: &Path, n: usize) -> Enrolment {
    let auth = authority(t, "auth");
    let key = auth.join("authority.pub");
    let dirs: Vec<PathBuf> = (0..n).map(|i| t.join(format!("n{i}"))).collect();
    let ids = dirs.iter().map(|d| super::endpoint_id(d)).collect();
    Enrolment {
        auth,
        key,
        dirs,
        ids,
    }
}
