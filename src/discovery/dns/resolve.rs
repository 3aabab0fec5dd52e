//! Resolving the discovery name into handshake targets (IP and handshake port).
//!
//! A plain name (a headless Service) is queried for A and AAAA records; every address
//! becomes a target on `--discovery-port`. An SRV name (`_service._proto.name`) is
//! queried for SRV records; each record's target host is resolved (A and AAAA) and the
//! record's port is used as the handshake port of that host. That is what Kubernetes
//! publishes for a named Service port: `_discovery._udp.<service>` gives each pod with
//! the discovery port, and it lets hosts run the handshake on different ports.
//!
//! Built on hickory-resolver, which reads /etc/resolv.conf (search domains, ndots, name
//! servers) like the libc resolver but is asynchronous and exposes SRV records and the
//! distinction between "no such records" and "the server did not answer".

use std::{
    collections::BTreeSet,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use hickory_resolver::{
    config::{NameServerConfig, ResolveHosts, ResolverConfig},
    net::runtime::TokioRuntimeProvider,
    net::NetError,
    proto::rr::{RData, RecordType},
    TokioResolver,
};

/// Most targets taken from one answer; the rest is ignored with a warning.
pub const MAX_TARGETS: usize = 1024;
/// Most SRV records followed per round (each costs two more lookups).
const MAX_SRV_RECORDS: usize = 256;
/// Per-query timeout; a round must not hang on a dead server.
const QUERY_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("--dns-server `{0}` is not IP or IP:PORT (for example 10.96.0.10 or 127.0.0.1:5353)")]
    BadServer(String),
    #[error("--discovery-service `{0}` is not a valid DNS name")]
    BadName(String),
    #[error(
        "cannot read the system resolver configuration (/etc/resolv.conf): {0}; set --dns-server"
    )]
    System(String),
    #[error("DNS lookup of {name} ({rtype}) failed: {message}")]
    Lookup {
        name: String,
        rtype: &'static str,
        message: String,
    },
}

/// What to ask DNS for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// A and AAAA of a name; the handshake port is `--discovery-port`.
    Host { name: String, port: u16 },
    /// SRV records; each gives a host and its handshake port.
    Srv { name: String },
}

impl Query {
    /// `_service._proto.rest` is an SRV name; anything else is a host name.
    pub fn parse(name: &str, discovery_port: u16) -> Result<Query, ResolveError> {
        let name = name.trim();
        let labels: Vec<&str> = name.trim_end_matches('.').split('.').collect();
        let valid = !name.is_empty()
            && name.len() <= 253
            && labels
                .iter()
                .all(|l| !l.is_empty() && l.len() <= 63 && !l.contains(char::is_whitespace));
        if !valid {
            return Err(ResolveError::BadName(name.to_string()));
        }
        let srv = labels.len() >= 3 && labels[0].starts_with('_') && labels[1].starts_with('_');
        Ok(if srv {
            Query::Srv {
                name: name.to_string(),
            }
        } else {
            Query::Host {
                name: name.to_string(),
                port: discovery_port,
            }
        })
    }

    pub fn name(&self) -> &str {
        match self {
            Query::Host { name, .. } | Query::Srv { name } => name,
        }
    }
}

/// Parses `--dns-server`: `IP`, `IP:PORT` or `[IPv6]:PORT`.
pub fn parse_server(s: &str) -> Result<SocketAddr, ResolveError> {
    let s = s.trim();
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    Err(ResolveError::BadServer(s.to_string()))
}

/// A resolver that never serves a stale answer across rounds: discovery must see a
/// scale-down at the next round, so our own cache is cleared before each one (the DNS
/// server's and any node-local cache's TTLs still apply; see docs/OPERATIONS.md).
pub struct Resolver {
    inner: TokioResolver,
}

/// The outcome of one round of lookups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolution {
    pub targets: BTreeSet<SocketAddr>,
    /// The A lookup failed (not "no records": the server did not answer or refused):
    /// the previous IPv4 targets should be kept rather than lost.
    pub v4_failed: bool,
    /// Same for AAAA.
    pub v6_failed: bool,
    /// More targets than [`MAX_TARGETS`] were offered.
    pub truncated: bool,
}

impl Resolution {
    /// Nothing at all could be learned this round.
    pub fn failed_entirely(&self) -> bool {
        self.v4_failed && self.v6_failed
    }
}

impl Resolver {
    pub fn new(server: Option<&str>) -> Result<Resolver, ResolveError> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = match server {
            Some(s) => {
                let addr = parse_server(s)?;
                let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
                for c in &mut ns.connections {
                    c.port = addr.port();
                }
                let mut config = ResolverConfig::default();
                config.name_servers = vec![ns];
                let mut b = TokioResolver::builder_with_config(config, provider);
                // An explicit server is the whole truth: no /etc/hosts.
                b.options_mut().use_hosts_file = ResolveHosts::Never;
                b
            }
            None => {
                TokioResolver::builder(provider).map_err(|e| ResolveError::System(e.to_string()))?
            }
        };
        let opts = builder.options_mut();
        opts.timeout = QUERY_TIMEOUT;
        opts.attempts = 2;
        let inner = builder
            .build()
            .map_err(|e| ResolveError::System(e.to_string()))?;
        Ok(Resolver { inner })
    }

    /// Resolves the query into handshake targets.
    pub async fn resolve(&self, query: &Query) -> Result<Resolution, ResolveError> {
        self.inner.clear_cache();
        match query {
            Query::Host { name, port } => Ok(self.host(name, *port).await),
            Query::Srv { name } => self.srv(name).await,
        }
    }

    /// A and AAAA of one name, concurrently. An error of one family is reported in
    /// the resolution, not as a failure of the whole.
    async fn host(&self, name: &str, port: u16) -> Resolution {
        let (a, aaaa) = tokio::join!(
            self.addrs(name, RecordType::A),
            self.addrs(name, RecordType::AAAA)
        );
        let mut res = Resolution::default();
        for (r, failed) in [(a, &mut res.v4_failed), (aaaa, &mut res.v6_failed)] {
            match r {
                Ok(ips) => {
                    for ip in ips {
                        if res.targets.len() >= MAX_TARGETS {
                            res.truncated = true;
                            break;
                        }
                        res.targets.insert(SocketAddr::new(ip, port));
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "DNS lookup failed");
                    *failed = true;
                }
            }
        }
        res
    }

    async fn srv(&self, name: &str) -> Result<Resolution, ResolveError> {
        let lookup = match self.inner.lookup(name, RecordType::SRV).await {
            Ok(l) => Some(l),
            Err(e) if e.is_no_records_found() => None,
            Err(e) => return Err(lookup_error(name, "SRV", &e)),
        };
        let mut records: Vec<(String, u16)> = lookup
            .iter()
            .flat_map(|l| l.answers().iter())
            .filter_map(|r| match &r.data {
                RData::SRV(srv) => Some((srv.target.to_string(), srv.port)),
                _ => None,
            })
            .collect();
        records.sort();
        records.dedup();
        let mut res = Resolution::default();
        if records.len() > MAX_SRV_RECORDS {
            records.truncate(MAX_SRV_RECORDS);
            res.truncated = true;
        }
        for (target, port) in records {
            if port == 0 {
                continue;
            }
            let sub = self.host(&target, port).await;
            // SRV mode keeps it simple: a host whose lookup failed fails the round,
            // so that a flaky server never makes peers look lost.
            if sub.v4_failed && sub.v6_failed {
                return Err(ResolveError::Lookup {
                    name: target,
                    rtype: "A/AAAA",
                    message: "no answer".into(),
                });
            }
            res.truncated |= sub.truncated;
            for t in sub.targets {
                if res.targets.len() >= MAX_TARGETS {
                    res.truncated = true;
                    break;
                }
                res.targets.insert(t);
            }
        }
        Ok(res)
    }

    /// Addresses of one record type; "no such records" is an empty answer.
    async fn addrs(&self, name: &str, rtype: RecordType) -> Result<Vec<IpAddr>, ResolveError> {
        match self.inner.lookup(name, rtype).await {
            Ok(l) => Ok(l
                .answers()
                .iter()
                .filter_map(|r| match (&r.data, rtype) {
                    (RData::A(a), RecordType::A) => Some(IpAddr::V4(a.0)),
                    (RData::AAAA(a), RecordType::AAAA) => Some(IpAddr::V6(a.0)),
                    _ => None,
                })
                .collect()),
            Err(e) if e.is_no_records_found() => Ok(vec![]),
            Err(e) => Err(lookup_error(
                name,
                if rtype == RecordType::A { "A" } else { "AAAA" },
                &e,
            )),
        }
    }
}

fn lookup_error(name: &str, rtype: &'static str, e: &NetError) -> ResolveError {
    ResolveError::Lookup {
        name: name.to_string(),
        rtype,
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_kinds() {
        assert_eq!(
            Query::parse("peat-sidecar-headless.peat-system.svc.cluster.local", 9471).unwrap(),
            Query::Host {
                name: "peat-sidecar-headless.peat-system.svc.cluster.local".into(),
                port: 9471
            }
        );
        assert_eq!(
            Query::parse("_discovery._udp.peat.test.", 9471).unwrap(),
            Query::Srv {
                name: "_discovery._udp.peat.test.".into()
            }
        );
        // One underscore label is not SRV (it is an odd but legal host name).
        assert!(matches!(
            Query::parse("_x.peat.test", 1).unwrap(),
            Query::Host { .. }
        ));
        assert!(Query::parse("", 1).is_err());
        assert!(Query::parse("a..b", 1).is_err());
        assert!(Query::parse(&"a".repeat(64), 1).is_err());
        assert!(Query::parse("has space.x", 1).is_err());
    }

    #[test]
    fn server_forms() {
        assert_eq!(
            parse_server("10.96.0.10").unwrap(),
            "10.96.0.10:53".parse().unwrap()
        );
        assert_eq!(
            parse_server("127.0.0.1:5353").unwrap(),
            "127.0.0.1:5353".parse().unwrap()
        );
        assert_eq!(
            parse_server("[::1]:5353").unwrap(),
            "[::1]:5353".parse().unwrap()
        );
        assert_eq!(
            parse_server("fd00::10").unwrap(),
            "[fd00::10]:53".parse().unwrap()
        );
        assert!(parse_server("dns.example").is_err());
    }
}
