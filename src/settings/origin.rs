//! Where each value came from, so that an error names what the user actually set: the
//! flag (`--idle-timeout-ms`) or the environment variable (`PEAT_SIDECAR_IDLE_TIMEOUT_MS`).
//!
//! [`parse_cli`] is the one entry point for the command line: it treats an empty
//! `PEAT_SIDECAR_*` variable as unset (systemd's `X=` in an environment file), names the
//! variable in clap's own errors about a value that came from one, and records the
//! origins of `run`'s values in [`RunArgs::origins`].

use std::ffi::OsString;

use clap::{
    error::{ContextKind, ContextValue},
    CommandFactory, FromArgMatches,
};

use crate::config::{Cli, Command, Origins};

/// Parses the command line (`argv[0]` included) and the `PEAT_SIDECAR_*` variables.
pub fn parse_cli<I, T>(argv: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let argv: Vec<OsString> = argv.into_iter().map(Into::into).collect();
    let mut cmd = ignore_empty_env(Cli::command());
    let matches = cmd
        .try_get_matches_from_mut(&argv)
        .map_err(|e| name_the_variable(e, &cmd, &argv))?;
    let mut cli = Cli::from_arg_matches(&matches).map_err(|e| e.format(&mut cmd))?;
    if let Command::Publish(p) = &cli.command {
        if p.ttl.is_some() && !p.retain {
            let mut publish = cmd.find_subcommand("publish").unwrap_or(&cmd).clone();
            return Err(publish.error(
                clap::error::ErrorKind::MissingRequiredArgument,
                "--ttl needs --retain: only retained values expire (a live message is \
                 delivered once and never stored, so it has nothing to expire)",
            ));
        }
    }
    if let (Command::Run(args), Some(("run", sub))) = (&mut cli.command, matches.subcommand()) {
        if let Some(run) = cmd.find_subcommand("run") {
            args.origins = Origins::from_matches(run, sub);
        }
    }
    Ok(cli)
}

/// An empty (or blank) variable counts as unset, for every variable: clap would
/// otherwise parse "" and fail, or take it as a value.
fn ignore_empty_env(cmd: clap::Command) -> clap::Command {
    let blank = |var: &std::ffi::OsStr| {
        std::env::var_os(var).is_some_and(|v| v.to_str().is_some_and(|s| s.trim().is_empty()))
    };
    let mut cmd = cmd.mut_args(|a| match a.get_env() {
        Some(var) if blank(var) => a.env(None::<&'static str>),
        _ => a,
    });
    let subs: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    for name in subs {
        cmd = cmd.mut_subcommand(name, ignore_empty_env);
    }
    cmd
}

/// clap names the flag in an invalid-value error even when the value came from the
/// variable; say the variable instead, as that is what the user must fix. A secret's
/// value (`--shared-key`) is not repeated: the message may end up in a journal.
fn name_the_variable(mut err: clap::Error, cmd: &clap::Command, argv: &[OsString]) -> clap::Error {
    let Some(ContextValue::String(shown)) = err.get(ContextKind::InvalidArg).cloned() else {
        return err;
    };
    // An argument prints its value names only once built (clap panics otherwise).
    let mut cmd = cmd.clone();
    cmd.build();
    let mut args = cmd
        .get_arguments()
        .chain(cmd.get_subcommands().flat_map(|s| s.get_arguments()))
        .filter(|a| a.get_env().is_some() && a.get_long().is_some());
    let Some(arg) = args.find(|a| a.to_string() == shown) else {
        return err;
    };
    if arg.is_hide_env_values_set() && err.get(ContextKind::InvalidValue).is_some() {
        let hidden = ContextValue::String("(hidden)".into());
        err.insert(ContextKind::InvalidValue, hidden);
    }
    let (Some(var), Some(long)) = (arg.get_env(), arg.get_long()) else {
        return err;
    };
    let flag = format!("--{long}");
    let on_command_line = argv.iter().any(|a| {
        a.to_str()
            .is_some_and(|a| a == flag || a.starts_with(&format!("{flag}=")))
    });
    if !on_command_line && std::env::var_os(var).is_some() {
        let named = format!("{} (environment variable)", var.to_string_lossy());
        err.insert(ContextKind::InvalidArg, ContextValue::String(named));
    }
    err
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_flag_by_default_and_the_variable_when_set_from_it() {
        let mut o = Origins::default();
        assert_eq!(o.name("idle_timeout_ms"), "--idle-timeout-ms");
        assert_eq!(o.name("peers"), "--peer");
        o.set_env("idle_timeout_ms", "PEAT_SIDECAR_IDLE_TIMEOUT_MS");
        assert_eq!(o.name("idle_timeout_ms"), "PEAT_SIDECAR_IDLE_TIMEOUT_MS");
    }

    #[test]
    fn errors_of_any_subcommand_are_rendered() {
        for argv in [
            &["peat-sidecar", "connect", "nothex@127.0.0.1:1"][..],
            &["peat-sidecar", "run", "--keep-alive-ms", "1"],
            &["peat-sidecar", "status", "--api", "http://x"],
        ] {
            let err = parse_cli(argv).unwrap_err().to_string();
            assert!(err.contains("invalid value"), "{argv:?}: {err}");
        }
    }

    #[test]
    fn a_bad_secret_is_not_repeated() {
        let argv = [
            "peat-sidecar",
            "run",
            "--shared-key",
            "c2VjcmV0LXRvby1zaG9ydA==",
        ];
        let err = parse_cli(argv).unwrap_err().to_string();
        assert!(!err.contains("c2VjcmV0LXRvby1zaG9ydA"), "{err}");
        assert!(
            err.contains("--shared-key") && err.contains("32 bytes"),
            "{err}"
        );
    }

    #[test]
    fn command_line_values_are_named_by_flag() {
        let cli = parse_cli(["peat-sidecar", "run", "--keep-alive-ms", "2000"]).unwrap();
        let Command::Run(args) = cli.command else {
            panic!("run expected")
        };
        assert_eq!(args.keep_alive_ms, 2000);
        assert_eq!(args.origins.name("keep_alive_ms"), "--keep-alive-ms");
    }
}
