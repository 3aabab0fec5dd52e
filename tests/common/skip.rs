//! Tests that need root or a Debian tool: for a normal user `cargo test` skips them,
//! printing one line per test (`SKIP <test>: needs root (network namespaces)`), and
//! passes; under CI (the `CI` variable set, as CI services set `CI=true`) a test that
//! cannot run is a failure, never a skip.
//!
//! A test starts with `if common::skip::without_root("network namespaces") { return; }`.
//! The line goes straight to the process's stderr, past libtest's capture, so that
//! `cargo test` shows it without `--nocapture`.

use std::io::Write;

/// What to do with a test whose requirement is missing (`None`: it is met).
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    Run,
    /// The line to print.
    Skip(String),
    /// The message to fail with.
    Fail(String),
}

/// The rule, without I/O: `missing` says what the test needs and lacks, `ci` whether
/// this is a CI run.
pub fn decide(test: &str, missing: Option<&str>, ci: bool) -> Decision {
    match missing {
        None => Decision::Run,
        Some(why) if ci => Decision::Fail(format!(
            "{test} cannot run: it needs {why}, and CI (the CI variable is set) skips \
             nothing; run the tests as root with the packages of scripts/apt-packages.txt \
             (scripts/test.sh installs them)"
        )),
        Some(why) => Decision::Skip(format!("SKIP {test}: needs {why}")),
    }
}

/// Whether this is a CI run: `CI` set to anything but empty, `0` or `false`.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The running test's name: libtest runs each test on a thread named after it.
fn test_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("this test")
        .to_string()
}

/// Applies the rule to the running test: true when it must return at once (skipped);
/// panics under CI.
pub fn unless(missing: Option<&str>) -> bool {
    match decide(&test_name(), missing, in_ci()) {
        Decision::Run => false,
        Decision::Skip(line) => {
            // Straight to fd 2: libtest captures only the print macros.
            let _ = writeln!(std::io::stderr().lock(), "{line}");
            true
        }
        Decision::Fail(msg) => panic!("{msg}"),
    }
}

/// Skips (or, under CI, fails) the running test unless it runs as root; `what` says
/// what root is needed for, such as "network namespaces".
pub fn without_root(what: &str) -> bool {
    let why = format!("root ({what})");
    unless((!is_root()).then_some(why.as_str()))
}

/// Whether `prog` is on PATH or in /usr/sbin or /sbin (a normal user's PATH often
/// lacks them).
pub fn has_program(prog: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(std::path::PathBuf::from))
        .any(|d| d.join(prog).is_file())
}

/// Skips (or fails under CI) unless the program `prog` is installed; `install` is the
/// command that installs it, for the line printed.
pub fn without_program(prog: &str, install: &str) -> bool {
    let why = format!("{prog} ({install})");
    unless((!has_program(prog)).then_some(why.as_str()))
}
