//! A one-shot legacy-unicast query at start (RFC 6762 §6.7), so that a joining node
//! hears every peer at once.
//!
//! Why: a responder must not multicast a record within one second of its last
//! multicast of it (RFC 6762 §6), and mdns-sd drops such answers. A node that starts
//! within a second of a peer's periodic re-announcement (or of its answer to someone
//! else's query) therefore gets that peer's answer only with its second browse query,
//! a second later: that was the p95 of a join (docs/PERFORMANCE.md). A query sent from
//! a port other than 5353 is a "legacy" query: responders (mdns-sd, avahi,
//! python-zeroconf) answer it at once, by unicast to the asking port, with neither the
//! rate limit nor the 20-120 ms delay of shared answers.
//!
//! The answers are hints for the mdns source (`super::Task::on_hint`): they pass the same
//! TXT checks as browse results, and a peer that only a hint reported is forgotten after
//! [`HINT_TTL`] unless the browse confirms it. Nothing here dials.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6},
    time::Duration,
};

use hickory_proto::{
    op::Message,
    rr::{RData, Record},
};
use tokio::{net::UdpSocket, sync::mpsc};
use tracing::debug;

use super::SERVICE_TYPE;

/// How long answers are collected. mdns-sd answers legacy queries within a
/// millisecond; slower responders still beat the browse query's 1 s retry.
pub const COLLECT_FOR: Duration = Duration::from_millis(800);

/// How long a peer known only from a hint is kept without the browse confirming it:
/// the TTL responders give legacy answers (RFC 6762 §6.7: at most 10 s).
pub const HINT_TTL: Duration = Duration::from_secs(10);

/// Largest mDNS message we read (RFC 6762 §17: 9000 bytes).
const MAX_MESSAGE: usize = 9000;

const MDNS_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 251);
const MDNS_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0xfb);
const MDNS_PORT: u16 = 5353;

/// TXT strings split at the first `=`; `None` for a key without `=`.
pub type TxtPairs = Vec<(String, Option<Vec<u8>>)>;

/// One service instance as a legacy answer described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hint {
    /// Full instance name, lower case, with the trailing dot (as mdns-sd spells it).
    pub fullname: String,
    pub txt: TxtPairs,
    pub port: u16,
    /// Addresses of the SRV target, with the interface index they came in on (for
    /// IPv6 link-local addresses).
    pub addrs: Vec<(IpAddr, u32)>,
}

/// Where to ask: an interface's IPv4 address, or an interface index for IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    V4(Ipv4Addr),
    V6 { index: u32 },
}

/// The query: one PTR question for our service type, id 0 and no flags (RFC 6762
/// §18.1: a multicast query's id is ignored). Built by hand: 12 header bytes and
/// one question.
pub fn query_bytes() -> Vec<u8> {
    let mut q = vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in SERVICE_TYPE.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&[0, 12, 0, 1]); // PTR, IN
    q
}

/// Asks on every target and sends what comes back to `tx` until [`COLLECT_FOR`] has
/// passed. A target that cannot be used (its address just went away, no IPv6) is
/// skipped: the browse still covers it.
pub async fn ask(targets: Vec<Target>, tx: mpsc::Sender<Hint>) {
    let query = query_bytes();
    let mut tasks = tokio::task::JoinSet::new();
    for t in targets {
        let (query, tx) = (query.clone(), tx.clone());
        tasks.spawn(async move {
            if let Err(e) = ask_one(t, &query, tx).await {
                debug!(target = ?t, error = %e, "mdns: one-shot query not sent");
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

async fn ask_one(t: Target, query: &[u8], tx: mpsc::Sender<Hint>) -> std::io::Result<()> {
    let sock = bind(t)?;
    let dest = match t {
        Target::V4(_) => SocketAddr::from((MDNS_V4, MDNS_PORT)),
        Target::V6 { index } => SocketAddrV6::new(MDNS_V6, MDNS_PORT, 0, index).into(),
    };
    sock.send_to(query, dest).await?;
    let index = match t {
        Target::V4(_) => 0,
        Target::V6 { index } => index,
    };
    let mut buf = vec![0u8; MAX_MESSAGE];
    let deadline = tokio::time::Instant::now() + COLLECT_FOR;
    while let Ok(r) = tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await {
        let (n, from) = r?;
        let hints = parse_answer(&buf[..n], index);
        debug!(%from, bytes = n, instances = hints.len(), "mdns: one-shot query answered");
        for h in hints {
            if tx.send(h).await.is_err() {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// A UDP socket on an ephemeral port (that is what makes the query a legacy one)
/// whose multicasts leave through the target interface.
fn bind(t: Target) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = match t {
        Target::V4(addr) => {
            let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
            s.set_multicast_if_v4(&addr)?;
            s.set_multicast_ttl_v4(255)?;
            s.bind(&SocketAddr::from((addr, 0)).into())?;
            s
        }
        Target::V6 { index } => {
            let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
            s.set_only_v6(true)?;
            s.set_multicast_if_v6(index)?;
            s.set_multicast_hops_v6(255)?;
            s.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)).into())?;
            s
        }
    };
    sock.set_nonblocking(true)?;
    UdpSocket::from_std(sock.into())
}

fn norm(name: &str) -> String {
    let mut n = name.to_ascii_lowercase();
    if !n.ends_with('.') {
        n.push('.');
    }
    n
}

/// The instances of our service type that one response describes (PTR answers with
/// their SRV, TXT and address records from any section). Instances without an SRV
/// record or an address are left out: the browse resolves them. Anything malformed
/// yields nothing; this never panics on what the network sends.
pub fn parse_answer(bytes: &[u8], if_index: u32) -> Vec<Hint> {
    let Ok(msg) = Message::from_vec(bytes) else {
        return Vec::new();
    };
    let records: Vec<&Record> = msg.answers.iter().chain(&msg.additionals).collect();
    let service = norm(SERVICE_TYPE);
    let mut srv: HashMap<String, (u16, String)> = HashMap::new();
    let mut txt: HashMap<String, TxtPairs> = HashMap::new();
    let mut addrs: HashMap<String, Vec<(IpAddr, u32)>> = HashMap::new();
    let mut instances: Vec<String> = Vec::new();
    for r in &records {
        let name = norm(&r.name.to_string());
        match &r.data {
            RData::PTR(p) if name == service => {
                let inst = norm(&p.0.to_string());
                if !instances.contains(&inst) {
                    instances.push(inst);
                }
            }
            RData::SRV(s) => {
                srv.insert(name, (s.port, norm(&s.target.to_string())));
            }
            RData::TXT(t) => {
                let pairs = t
                    .txt_data
                    .iter()
                    .map(|s| match s.iter().position(|b| *b == b'=') {
                        Some(i) => (
                            String::from_utf8_lossy(&s[..i]).into_owned(),
                            Some(s[i + 1..].to_vec()),
                        ),
                        None => (String::from_utf8_lossy(s).into_owned(), None),
                    })
                    .collect();
                txt.insert(name, pairs);
            }
            RData::A(a) => addrs.entry(name).or_default().push((IpAddr::V4(a.0), 0)),
            RData::AAAA(a) => addrs
                .entry(name)
                .or_default()
                .push((IpAddr::V6(a.0), if_index)),
            _ => {}
        }
    }
    instances
        .into_iter()
        .filter_map(|inst| {
            let (port, target) = srv.get(&inst)?.clone();
            let a = addrs.get(&target)?.clone();
            Some(Hint {
                txt: txt.get(&inst).cloned().unwrap_or_default(),
                fullname: inst,
                port,
                addrs: a,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::{
        op::{MessageType, OpCode},
        rr::{
            rdata::{A, PTR, SRV, TXT},
            Name,
        },
    };

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn response(extra: impl FnOnce(&mut Message)) -> Vec<u8> {
        let inst = "peat-abc._peat-sidecar._udp.local.";
        let mut m = Message::new(0, MessageType::Response, OpCode::Query);
        m.add_answer(Record::from_rdata(
            name(SERVICE_TYPE),
            10,
            RData::PTR(PTR(name(inst))),
        ));
        m.add_additional(Record::from_rdata(
            name(inst),
            10,
            RData::SRV(SRV::new(0, 0, 9470, name("host-abc.local."))),
        ));
        m.add_additional(Record::from_rdata(
            name(inst),
            10,
            RData::TXT(TXT::new(vec![
                "v=1".into(),
                "app_id=demo".into(),
                "flag".into(),
            ])),
        ));
        extra(&mut m);
        m.to_vec().unwrap()
    }

    #[test]
    fn the_query_asks_for_our_service_type() {
        let q = Message::from_vec(&query_bytes()).unwrap();
        assert_eq!(q.queries.len(), 1);
        assert_eq!(norm(&q.queries[0].name().to_string()), norm(SERVICE_TYPE));
    }

    #[test]
    fn an_answer_with_srv_txt_and_address_is_a_hint() {
        let bytes = response(|m| {
            m.add_additional(Record::from_rdata(
                name("HOST-abc.local."),
                10,
                RData::A(A(Ipv4Addr::new(10, 0, 0, 2))),
            ));
        });
        let hints = parse_answer(&bytes, 3);
        assert_eq!(
            hints,
            vec![Hint {
                fullname: "peat-abc._peat-sidecar._udp.local.".into(),
                txt: vec![
                    ("v".into(), Some(b"1".to_vec())),
                    ("app_id".into(), Some(b"demo".to_vec())),
                    ("flag".into(), None),
                ],
                port: 9470,
                addrs: vec![("10.0.0.2".parse().unwrap(), 0)],
            }]
        );
    }

    #[test]
    fn an_instance_without_an_address_is_left_to_the_browse() {
        assert!(parse_answer(&response(|_| {}), 0).is_empty());
    }

    #[test]
    fn garbage_gives_nothing() {
        assert!(parse_answer(&[], 0).is_empty());
        assert!(parse_answer(&[0xff; 40], 0).is_empty());
        let mut truncated = response(|_| {});
        truncated.truncate(truncated.len() - 7);
        assert!(parse_answer(&truncated, 0).is_empty());
    }
}
