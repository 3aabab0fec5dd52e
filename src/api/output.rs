//! What the client prints: lines on stdout that end quietly when the reader goes away
//! (`peat-sidecar peers | head`), durations and timestamps for people.

use std::{
    fmt,
    io::{self, Write},
};

/// Why a line could not be printed.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The reader closed the pipe: not an error for the user, the command just ends.
    #[error("standard output was closed")]
    Closed,
    #[error("cannot write to standard output: {0}")]
    Io(io::Error),
}

/// Prints one line. Rust ignores SIGPIPE, so a closed pipe shows up here as EPIPE,
/// where `println!` would panic.
pub fn line(args: fmt::Arguments<'_>) -> Result<(), OutputError> {
    let mut out = io::stdout().lock();
    out.write_fmt(args)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush())
        .map_err(|e| match e.kind() {
            io::ErrorKind::BrokenPipe => OutputError::Closed,
            _ => OutputError::Io(e),
        })
}

/// `outln!(...)`: `println!` that returns an [`OutputError`] instead of panicking.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::api::output::line(format_args!($($arg)*))
    };
}

/// "3h 12m 5s", "2d 0h 4m 1s", "42s".
pub fn human_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m {s}s"),
        _ => format!("{d}d {h}h {m}m {s}s"),
    }
}

/// Local time with milliseconds, for `watch`: "2026-12-01 22:40:01.123".
pub fn timestamp(unix_ms: u64) -> String {
    use chrono::TimeZone;
    i64::try_from(unix_ms)
        .ok()
        .and_then(|ms| chrono::Local.timestamp_millis_opt(ms).single())
        .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f").to_string())
        .unwrap_or_else(|| "-".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(human_duration(0), "0s");
        assert_eq!(human_duration(65), "1m 5s");
        assert_eq!(human_duration(3 * 3600 + 12 * 60 + 5), "3h 12m 5s");
        assert_eq!(human_duration(86_400 + 61), "1d 0h 1m 1s");
    }

    #[test]
    fn timestamps_have_millis() {
        let t = timestamp(1_764_628_801_123);
        assert!(t.ends_with(".123"), "{t}");
        assert_eq!(t.len(), 23, "{t}");
    }
}
