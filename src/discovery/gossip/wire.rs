//! Wire format of the gossip peer exchange.
//!
//! One exchange is one bidirectional stream (tag [`crate::node::streams::tag::GOSSIP`]):
//! the opener sends a [`Message`] and finishes its side, the other side answers with a
//! [`Message`] and finishes. A message is postcard (a compact, documented, stable serde
//! format) of
//!
//! ```text
//! Message { proto: u8 = 1, entries: Vec<Entry> }
//! Entry   { id: [u8; 32], version: u64, addrs: Vec<SocketAddr> }
//! ```
//!
//! `version` is stamped by the peer the entry describes (its clock in milliseconds,
//! strictly increasing), so versions of one peer compare, whoever relays them.
//!
//! Decoding never trusts the input: the caller reads at most `max_bytes` from the
//! stream, and [`decode`] then drops entries with an id that is not an Ed25519 point,
//! addresses nobody can dial, duplicates, and everything beyond the entry and address
//! bounds. Nothing here panics on any input (the unit tests feed it garbage).

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
};

use iroh::EndpointId;
use serde::{Deserialize, Serialize};

/// Version of this message layout. A receiver refuses other versions.
pub const PROTO: u8 = 1;
/// Most addresses carried or kept per entry.
pub const MAX_ADDRS_PER_ENTRY: usize = 8;
/// Smallest `--gossip-max-message-bytes`: room for a few entries.
pub const MIN_MESSAGE_BYTES: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct WireMessage {
    proto: u8,
    entries: Vec<WireEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct WireEntry {
    id: [u8; 32],
    version: u64,
    addrs: Vec<SocketAddr>,
}

/// One validated entry: a peer, how fresh the news is, where to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: EndpointId,
    pub version: u64,
    pub addrs: Vec<SocketAddr>,
}

/// Why a message was refused as a whole.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("message is not valid postcard: {0}")]
    Malformed(String),
    #[error("unknown gossip protocol version {0} (this sidecar speaks {PROTO})")]
    Version(u8),
}

/// What [`decode`] kept and what it threw away.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub entries: Vec<Entry>,
    /// Entries dropped: invalid id, no dialable address, duplicate, or over the bound.
    pub dropped: usize,
}

/// Whether `a` is worth sending to a peer or dialling at all.
pub fn dialable(a: &SocketAddr) -> bool {
    if a.port() == 0 {
        return false;
    }
    match a.ip() {
        IpAddr::V4(ip) => !(ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast()),
        // Link-local IPv6 needs a scope id, which does not survive the trip to another
        // host: such an address is useless to the receiver.
        IpAddr::V6(ip) => !(ip.is_unspecified() || ip.is_multicast() || ip.is_unicast_link_local()),
    }
}

/// Encodes `entries` in order, stopping before the message would exceed `max_bytes`
/// (callers put the most important entries first). Returns the bytes and how many
/// entries made it in.
pub fn encode(entries: &[Entry], max_bytes: usize) -> (Vec<u8>, usize) {
    let wire: Vec<WireEntry> = entries
        .iter()
        .map(|e| WireEntry {
            id: *e.id.as_bytes(),
            version: e.version,
            addrs: e
                .addrs
                .iter()
                .filter(|a| dialable(a))
                .take(MAX_ADDRS_PER_ENTRY)
                .copied()
                .collect(),
        })
        .collect();
    // Entry sizes vary with their addresses: size each one, then keep a prefix that fits.
    // The header is the proto byte plus the varint length (at most 5 bytes for a u32).
    let mut budget = max_bytes.saturating_sub(1 + 5);
    let mut n = 0;
    for e in &wire {
        let size = postcard::experimental::serialized_size(e).unwrap_or(usize::MAX);
        if size > budget {
            break;
        }
        budget -= size;
        n += 1;
    }
    let msg = WireMessage {
        proto: PROTO,
        entries: wire.into_iter().take(n).collect(),
    };
    // Serialising plain structs into a Vec cannot fail; an empty message is the safe
    // fallback should it ever.
    let bytes = postcard::to_stdvec(&msg).unwrap_or_else(|_| vec![PROTO, 0]);
    (bytes, n)
}

/// Decodes and validates a message of at most the bytes the caller allowed.
/// Keeps at most `max_entries` entries.
pub fn decode(bytes: &[u8], max_entries: usize) -> Result<Decoded, WireError> {
    // Check the version before the body so that a future layout gets a clear error.
    match bytes.first() {
        Some(&PROTO) => {}
        Some(&v) => return Err(WireError::Version(v)),
        None => return Err(WireError::Malformed("empty message".into())),
    }
    // serde preallocates at most a small, fixed amount for a claimed length, so a
    // forged length cannot make this allocate more than the input justifies.
    let msg: WireMessage =
        postcard::from_bytes(bytes).map_err(|e| WireError::Malformed(e.to_string()))?;
    let mut out = Decoded::default();
    let mut index: HashMap<EndpointId, usize> = HashMap::new();
    for w in msg.entries {
        let Ok(id) = EndpointId::from_bytes(&w.id) else {
            out.dropped += 1;
            continue;
        };
        let mut addrs: Vec<SocketAddr> = Vec::new();
        for a in w.addrs.into_iter().filter(dialable) {
            if addrs.len() >= MAX_ADDRS_PER_ENTRY {
                break;
            }
            if !addrs.contains(&a) {
                addrs.push(a);
            }
        }
        if let Some(&i) = index.get(&id) {
            // A duplicate id: keep the newer news.
            out.dropped += 1;
            if w.version > out.entries[i].version {
                out.entries[i].version = w.version;
                out.entries[i].addrs = addrs;
            }
            continue;
        }
        if out.entries.len() >= max_entries {
            out.dropped += 1;
            continue;
        }
        index.insert(id, out.entries.len());
        out.entries.push(Entry {
            id,
            version: w.version,
            addrs,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use iroh::SecretKey;

    fn id() -> EndpointId {
        SecretKey::generate().public()
    }

    fn entry(n: u16) -> Entry {
        Entry {
            id: id(),
            version: 1_000 + u64::from(n),
            addrs: vec![SocketAddr::from(([10, 0, 0, 1], 9000 + n))],
        }
    }

    #[test]
    fn round_trip() {
        let entries: Vec<Entry> = (0..10).map(entry).collect();
        let (bytes, n) = encode(&entries, 64 * 1024);
        assert_eq!(n, 10);
        let d = decode(&bytes, 100).unwrap();
        assert_eq!(d.entries, entries);
        assert_eq!(d.dropped, 0);
    }

    #[test]
    fn encode_respects_the_size_bound() {
        let entries: Vec<Entry> = (0..500).map(entry).collect();
        for max in [MIN_MESSAGE_BYTES, 4096, 10_000] {
            let (bytes, n) = encode(&entries, max);
            assert!(bytes.len() <= max, "{} > {max}", bytes.len());
            assert!(n > 0 && n < 500);
            let d = decode(&bytes, 1000).unwrap();
            assert_eq!(d.entries.len(), n);
            assert_eq!(d.entries[..], entries[..n]);
        }
        let (bytes, n) = encode(&entries, 0);
        assert_eq!(n, 0);
        assert_eq!(decode(&bytes, 10).unwrap().entries.len(), 0);
    }

    #[test]
    fn malformed_ids_and_undialable_addresses_are_dropped() {
        let good = entry(1);
        // Not every 32-byte string is an Ed25519 point; find one that is not.
        let bad_id = (0u8..=255)
            .map(|b| [b; 32])
            .find(|b| EndpointId::from_bytes(b).is_err())
            .unwrap();
        let msg = WireMessage {
            proto: PROTO,
            entries: vec![
                WireEntry {
                    id: bad_id,
                    version: 5,
                    addrs: vec![SocketAddr::from(([10, 0, 0, 9], 1))],
                },
                WireEntry {
                    id: *good.id.as_bytes(),
                    version: good.version,
                    addrs: vec![
                        SocketAddr::from(([0, 0, 0, 0], 9470)),
                        SocketAddr::from(([10, 0, 0, 2], 0)),
                        SocketAddr::from(([224, 0, 0, 251], 5353)),
                        "[fe80::1]:9470".parse().unwrap(),
                        good.addrs[0],
                        good.addrs[0],
                    ],
                },
            ],
        };
        let d = decode(&postcard::to_stdvec(&msg).unwrap(), 10).unwrap();
        assert_eq!(d.dropped, 1);
        assert_eq!(d.entries, vec![good]);
    }

    #[test]
    fn duplicates_keep_the_newest_and_entries_are_bounded() {
        let a = entry(1);
        let mut newer = a.clone();
        newer.version += 10;
        newer.addrs = vec![SocketAddr::from(([10, 0, 0, 7], 1))];
        let mut list = vec![a.clone(), newer.clone()];
        list.extend((2..50).map(entry));
        let (bytes, _) = encode(&list, 1 << 20);
        let d = decode(&bytes, 10).unwrap();
        assert_eq!(d.entries.len(), 10);
        assert_eq!(d.entries[0], newer);
        assert_eq!(d.dropped, 1 + 39);
    }

    #[test]
    fn too_many_addresses_are_cut() {
        let mut e = entry(1);
        e.addrs = (1..=40)
            .map(|p| SocketAddr::from(([10, 0, 0, 1], p)))
            .collect();
        let msg = WireMessage {
            proto: PROTO,
            entries: vec![WireEntry {
                id: *e.id.as_bytes(),
                version: 1,
                addrs: e.addrs.clone(),
            }],
        };
        let d = decode(&postcard::to_stdvec(&msg).unwrap(), 10).unwrap();
        assert_eq!(d.entries[0].addrs.len(), MAX_ADDRS_PER_ENTRY);
        let (bytes, _) = encode(&[e], 1 << 20);
        assert_eq!(
            decode(&bytes, 10).unwrap().entries[0].addrs.len(),
            MAX_ADDRS_PER_ENTRY
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(matches!(decode(&[], 10), Err(WireError::Malformed(_))));
        assert_eq!(decode(&[9, 0], 10), Err(WireError::Version(9)));
        // A claimed length of four billion entries with no bytes behind it.
        assert!(decode(&[PROTO, 0xff, 0xff, 0xff, 0xff, 0x0f], 10).is_err());
        // Truncated valid messages, at every length.
        let (bytes, _) = encode(&(0..5).map(entry).collect::<Vec<_>>(), 1 << 20);
        for cut in 0..bytes.len() {
            let _ = decode(&bytes[..cut], 10);
        }
        // Pseudo-random bytes behind a valid version byte.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..2000 {
            let mut buf = vec![PROTO];
            for _ in 0..len % 300 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                buf.push(x as u8);
            }
            if let Ok(d) = decode(&buf, 16) {
                assert!(d.entries.len() <= 16);
                assert!(d
                    .entries
                    .iter()
                    .all(|e| e.addrs.len() <= MAX_ADDRS_PER_ENTRY));
            }
        }
    }

    #[test]
    fn dialable_rules() {
        assert!(dialable(&"127.0.0.1:9470".parse().unwrap()));
        assert!(dialable(&"[2001:db8::1]:9470".parse().unwrap()));
        assert!(!dialable(&"0.0.0.0:9470".parse().unwrap()));
        assert!(!dialable(&"[::]:9470".parse().unwrap()));
        assert!(!dialable(&"10.0.0.1:0".parse().unwrap()));
        assert!(!dialable(&"255.255.255.255:9".parse().unwrap()));
        assert!(!dialable(&"[fe80::1]:9470".parse().unwrap()));
    }
}
