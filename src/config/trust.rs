//! The flags of member certificates: `run`'s (flattened into [`super::RunArgs`]) and
//! the `authority` subcommands that make certificates and revocations.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Subcommand};
use iroh::EndpointId;

use super::parse_endpoint_id;

/// `run`'s trust settings (checked in `settings::trust`).
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Member certificates")]
pub struct TrustArgs {
    /// The formation authority's public key (64 hex characters), or a file holding it
    /// (`authority.pub`). With it, every peer must present a member certificate signed
    /// by this authority, and this node presents its own (--member-cert). Without it,
    /// no certificates are checked.
    #[arg(
        long,
        env = "PEAT_SIDECAR_AUTHORITY_KEY",
        value_name = "KEY|FILE",
        requires = "member_cert"
    )]
    pub authority_key: Option<String>,

    /// This node's member certificate (from `peat-sidecar authority issue`). A file
    /// replaced on disk is used from the next connection on, without a restart.
    #[arg(
        long,
        env = "PEAT_SIDECAR_MEMBER_CERT",
        value_name = "FILE",
        requires = "authority_key"
    )]
    pub member_cert: Option<PathBuf>,

    /// How far clocks may be off: a peer's certificate is accepted this long before it
    /// begins and after it ends (radios often boot with a wrong clock). 90s, 10m, 2h, 1d.
    #[arg(long, env = "PEAT_SIDECAR_CERT_CLOCK_SKEW", value_name = "DURATION", default_value = "10m", value_parser = parse_skew)]
    pub cert_clock_skew: Duration,

    /// Revocation files (from `peat-sidecar authority revoke`), comma-separated or
    /// repeated: peers they name are refused. Re-read when a file changes.
    #[arg(
        long = "revocation",
        env = "PEAT_SIDECAR_REVOCATIONS",
        value_name = "FILE",
        value_delimiter = ',',
        requires = "authority_key"
    )]
    pub revocations: Vec<PathBuf>,
}

/// `peat-sidecar authority ...`.
#[derive(Debug, Args, Clone)]
pub struct AuthorityArgs {
    #[command(subcommand)]
    pub command: AuthorityCommand,
}

#[derive(Debug, Subcommand, Clone)]
pub enum AuthorityCommand {
    /// Create a formation authority: a new Ed25519 key pair in DIR (`authority.key`,
    /// mode 0600: keep it off the devices; `authority.pub`: give it to every device).
    Init {
        /// Directory to create the authority in (created, mode 0700; an existing
        /// authority is never overwritten).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Issue a member certificate for a device's endpoint id (`peat-sidecar id` on it).
    Issue(IssueArgs),
    /// Write a signed revocation of every certificate issued for an endpoint id.
    Revoke(RevokeArgs),
}

#[derive(Debug, Args, Clone)]
pub struct IssueArgs {
    /// The authority's directory (from `authority init`).
    #[arg(long, value_name = "DIR")]
    pub authority: PathBuf,

    /// The device's endpoint id: 64 hex characters, as `peat-sidecar id` prints it.
    #[arg(long, value_parser = parse_endpoint_id)]
    pub endpoint_id: EndpointId,

    /// A name for the device, for logs and `peers` (at most 64 bytes).
    #[arg(long)]
    pub name: String,

    /// A topic pattern the device may publish on; repeat for several. Default: `**`
    /// (every topic). Its node refuses its apps anything else, and every node refuses
    /// what it publishes outside them.
    #[arg(long, value_name = "PATTERN")]
    pub publish: Vec<String>,

    /// A topic pattern the device may receive; repeat for several. Default: `**`. Its
    /// peers send it nothing else (system topics aside).
    #[arg(long, value_name = "PATTERN")]
    pub subscribe: Vec<String>,

    /// How long the certificate is valid from now: 12h, 30d, 52w.
    #[arg(long, value_name = "DURATION", default_value = "90d", value_parser = parse_validity)]
    pub valid_for: Duration,

    /// Where to write the certificate (text; replaced atomically if it exists).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

#[derive(Debug, Args, Clone)]
pub struct RevokeArgs {
    /// The authority's directory (from `authority init`).
    #[arg(long, value_name = "DIR")]
    pub authority: PathBuf,

    /// The endpoint id to revoke: 64 hex characters.
    #[arg(value_name = "ID", value_parser = parse_endpoint_id)]
    pub endpoint_id: EndpointId,

    /// Where to write the revocation (text).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// Longest duration accepted anywhere: 100 years.
const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 86_400);

/// A duration: a whole number with a unit s, m, h, d or w (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let bad = || {
        format!("`{s}` is not a duration: give a whole number and a unit, s, m, h, d or w (for example 10m or 90d)")
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    let per = match unit.trim() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(bad()),
    };
    let d = Duration::from_secs(n.checked_mul(per).ok_or_else(bad)?);
    if d > MAX_DURATION {
        return Err(format!("`{s}` is longer than 100 years"));
    }
    Ok(d)
}

fn parse_skew(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d > Duration::from_secs(7 * 86_400) {
        return Err(format!(
            "`{s}` is more than a week: a clock that far off needs setting, not tolerating"
        ));
    }
    Ok(d)
}

fn parse_validity(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err("a certificate must be valid for more than 0 seconds".into()),
        d => Ok(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units_and_refuse_the_rest() {
        let s = Duration::from_secs;
        assert_eq!(parse_duration("90"), Ok(s(90)));
        assert_eq!(parse_duration("10m"), Ok(s(600)));
        assert_eq!(parse_duration("2h"), Ok(s(7200)));
        assert_eq!(parse_duration("90d"), Ok(s(90 * 86_400)));
        assert_eq!(parse_duration("1w"), Ok(s(604_800)));
        for bad in ["", "m", "10x", "-1m", "1.5h", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(parse_skew("8d").is_err());
        assert!(parse_validity("0s").is_err());
    }
}
