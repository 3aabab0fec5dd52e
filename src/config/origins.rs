//! Where each value of `run` came from, recorded while the command line is parsed
//! (`settings::parse_cli`), so that an error names what the user actually set: the flag
//! (`--idle-timeout-ms`) or the environment variable (`PEAT_SIDECAR_IDLE_TIMEOUT_MS`).

use std::collections::HashMap;

use clap::{parser::ValueSource, Args};

use super::RunArgs;

/// For each setting of `run` (by its clap id), the name the user knows it by.
#[derive(Debug, Clone)]
pub struct Origins {
    /// Long flag of each id, `--` included.
    flags: HashMap<String, String>,
    /// Ids whose value came from the environment, with the variable's name.
    from_env: HashMap<String, String>,
}

impl Default for Origins {
    fn default() -> Self {
        let cmd = RunArgs::augment_args(clap::Command::new("run"));
        let flags = cmd
            .get_arguments()
            .filter_map(|a| Some((a.get_id().to_string(), format!("--{}", a.get_long()?))))
            .collect();
        Origins {
            flags,
            from_env: HashMap::new(),
        }
    }
}

impl Origins {
    /// Reads which values of `run` came from the environment.
    pub fn from_matches(cmd: &clap::Command, m: &clap::ArgMatches) -> Self {
        let mut o = Origins::default();
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            let from_env = matches!(m.try_contains_id(id), Ok(true))
                && m.value_source(id) == Some(ValueSource::EnvVariable);
            if let (true, Some(var)) = (from_env, arg.get_env()) {
                o.from_env
                    .insert(id.to_string(), var.to_string_lossy().into_owned());
            }
        }
        o
    }

    /// The flag or variable that set `id` (the flag when it kept its default).
    pub fn name(&self, id: &str) -> String {
        if let Some(var) = self.from_env.get(id) {
            return var.clone();
        }
        self.flags
            .get(id)
            .cloned()
            .unwrap_or_else(|| format!("--{}", id.replace('_', "-")))
    }

    /// Records that `id` came from `var` (tests build settings without a command line).
    pub fn set_env(&mut self, id: &str, var: &str) {
        self.from_env.insert(id.to_string(), var.to_string());
    }
}
