//! The rule for tests that need root (tests/common/skip.rs): a normal user's
//! `cargo test` skips them with one line each and passes, root runs them, and under CI
//! a test that cannot run fails. Checked on this very binary, run as a normal user
//! (`setpriv` to nobody when the test runs as root).

#[path = "common/skip.rs"]
#[allow(dead_code)]
mod skip;

use std::process::{Command, Output};

use skip::{decide, Decision};

#[test]
fn the_rule_runs_skips_or_fails() {
    assert_eq!(decide("t", None, false), Decision::Run);
    assert_eq!(decide("t", None, true), Decision::Run);
    assert_eq!(
        decide("t", Some("root (network namespaces)"), false),
        Decision::Skip("SKIP t: needs root (network namespaces)".into())
    );
    match decide("t", Some("root (network namespaces)"), true) {
        Decision::Fail(m) => assert!(m.contains("t cannot run: it needs root"), "{m}"),
        other => panic!("under CI a missing requirement must fail, got {other:?}"),
    }
}

/// Run only by [`a_normal_user_skips_with_one_line_and_ci_fails`], as another user.
#[test]
#[ignore = "a probe that the test below runs as a normal user"]
fn probe() {
    if skip::without_root("network namespaces") {
        return;
    }
    println!("probe ran as root");
}

/// Runs [`probe`] in a copy of this binary, as the current user if it is not root,
/// else as nobody (uid 65534).
fn probe_as_normal_user(ci: Option<&str>) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("skip-probe");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    let mut cmd = if skip::is_root() {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&exe);
        c
    } else {
        Command::new(&exe)
    };
    cmd.args(["--ignored", "--exact", "probe"]).env_remove("CI");
    if let Some(v) = ci {
        cmd.env("CI", v);
    }
    cmd.output()
        .expect("run the probe (setpriv is in util-linux)")
}

#[test]
fn a_normal_user_skips_with_one_line_and_ci_fails() {
    let out = probe_as_normal_user(None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let skips: Vec<&str> = stderr.lines().filter(|l| l.starts_with("SKIP")).collect();
    assert_eq!(
        skips,
        ["SKIP probe: needs root (network namespaces)"],
        "{stderr}"
    );

    let out = probe_as_normal_user(Some("true"));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success(),
        "under CI the probe must fail:\n{all}"
    );
    assert!(!all.contains("SKIP"), "{all}");
    assert!(
        all.contains("probe cannot run: it needs root (network namespaces)"),
        "{all}"
    );
}

#[test]
fn root_skips_nothing() {
    if skip::without_root("to show that root runs everything") {
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "probe", "--nocapture"])
        .env("CI", "true")
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{all}");
    assert!(
        all.contains("probe ran as root") && !all.contains("SKIP"),
        "{all}"
    );
}
