//! Python helpers from tests/interop/ run inside a network namespace, printing one JSON
//! object per line on stdout (python-zeroconf peers, the spoofing announcer).
//!
//! They run on [`python`]: the virtual environment that scripts/ci.d/00-deps.sh creates
//! in `target/venv` with the packages of scripts/pip-packages.txt (never the system
//! Python: Debian 12's refuses pip, PEP 668).

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use super::wait_until;

/// `target/venv` of this checkout, where scripts/ci.d/00-deps.sh puts the packages.
pub fn venv_python() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/venv/bin/python3")
}

/// The Python the tests run: `PEAT_TEST_PYTHON` if set, else the test venv's
/// ([`venv_python`]) if it exists, else `python3` on PATH (then the import check of
/// [`check_imports`] says how to create the venv).
pub fn python() -> OsString {
    match std::env::var_os("PEAT_TEST_PYTHON").filter(|v| !v.is_empty()) {
        Some(p) => p,
        None if venv_python().exists() => venv_python().into_os_string(),
        None => "python3".into(),
    }
}

/// None if [`python`] can import `modules` (comma-separated, as in an import
/// statement); else what is missing and how to get it, for a message or a SKIP line.
pub fn missing_imports(modules: &str) -> Option<String> {
    let py = python();
    let ok = Command::new(&py)
        .args(["-c", &format!("import {modules}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    (!ok).then(|| {
        format!(
            "the Python packages {modules}, which {} cannot import (create the test venv {} \
             with `sudo scripts/test.sh 00-deps`, or point PEAT_TEST_PYTHON at a Python \
             that has them)",
            Path::new(&py).display(),
            venv_python().display()
        )
    })
}

/// Fails the test unless [`python`] can import `modules`, saying how to get them.
pub fn check_imports(modules: &str) {
    if let Some(why) = missing_imports(modules) {
        panic!("this test needs {why}");
    }
}

pub struct PyScript {
    child: Child,
    out: PathBuf,
    err: PathBuf,
    _dir: tempfile::TempDir,
}

impl PyScript {
    /// Runs `tests/interop/<script>` with `args` in namespace `ns`, after checking that
    /// [`python`] can import `modules` (comma-separated, as in an import statement).
    pub fn start(ns: &str, modules: &str, script: &str, args: &[String]) -> PyScript {
        let path = format!("{}/tests/interop/{script}", env!("CARGO_MANIFEST_DIR"));
        PyScript::start_file(ns, modules, &path, args)
    }

    /// Runs the Python script at `path` (for the examples under docs/).
    pub fn start_file(ns: &str, modules: &str, path: &str, args: &[String]) -> PyScript {
        check_imports(modules);
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("script.out");
        let err = dir.path().join("script.err");
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(python())
            .arg(path)
            .args(args)
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .stdin(Stdio::null())
            .spawn()
            .expect("start python3");
        PyScript {
            child,
            out,
            err,
            _dir: dir,
        }
    }

    /// Every JSON line printed so far.
    pub fn lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// The first line that has `key`.
    pub fn has(&self, key: &str) -> Option<serde_json::Value> {
        self.lines().into_iter().find(|l| l.get(key).is_some())
    }

    /// Waits for a line with `key`; fails the test with the script's output if none
    /// comes within `timeout`.
    pub async fn wait_for(&self, key: &str, timeout: Duration) -> serde_json::Value {
        let found = wait_until(timeout, || async { self.has(key).is_some() }).await;
        assert!(
            found.is_some(),
            "the script printed no `{key}` within {timeout:?}; last line:\n{:?}\nstderr:\n{}",
            self.lines().last(),
            self.stderr()
        );
        self.has(key).unwrap_or_default()
    }
}

impl Drop for PyScript {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// python-zeroconf in its own namespace, as an independent mDNS implementation:
/// it browses for our service and publishes the given records.
pub fn zeroconf_peer(ns: &str, addr: &str, publish: &[(&str, u16, String)]) -> PyScript {
    let mut args: Vec<String> = ["--addr", addr, "--seconds", "60"]
        .map(String::from)
        .to_vec();
    for (name, port, txt) in publish {
        args.extend([
            "--publish".to_string(),
            name.to_string(),
            port.to_string(),
            txt.clone(),
        ]);
    }
    PyScript::start(ns, "zeroconf", "zeroconf_peer.py", &args)
}
