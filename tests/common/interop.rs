//! Python helpers from tests/interop/ run inside a network namespace, printing one JSON
//! object per line on stdout (python-zeroconf peers, the spoofing announcer).

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use super::wait_until;

pub struct PyScript {
    child: Child,
    out: PathBuf,
    err: PathBuf,
    _dir: tempfile::TempDir,
}

impl PyScript {
    /// Runs `tests/interop/<script>` with `args` in namespace `ns`, after checking that
    /// python3 can import `modules` (comma-separated, as in an import statement).
    pub fn start(ns: &str, modules: &str, script: &str, args: &[String]) -> PyScript {
        let path = format!("{}/tests/interop/{script}", env!("CARGO_MANIFEST_DIR"));
        PyScript::start_file(ns, modules, &path, args)
    }

    /// Runs the Python script at `path` (for the examples under docs/).
    pub fn start_file(ns: &str, modules: &str, path: &str, args: &[String]) -> PyScript {
        let ok = Command::new("python3")
            .args(["-c", &format!("import {modules}")])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(
            ok,
            "python3 with the packages {modules} is needed (scripts/pip-packages.txt)"
        );
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("script.out");
        let err = dir.path().join("script.err");
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "python3", path])
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
