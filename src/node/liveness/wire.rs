//! The beacon datagram: who is alive, in 16 bytes.
//!
//! ```text
//! 0      2        3       4                12          16
//! | "pb" | version | flags | id prefix (8) | seq (u32 BE) |
//! ```
//!
//! The id prefix is the first 8 bytes of the sender's endpoint id (public anyway: mDNS
//! announces all of it). It is not authenticated: a beacon can only make a receiver
//! *skip* a probe of a connected peer, never end a connection (see `mod.rs`). Receivers
//! ignore trailing bytes, so a later version may append fields; `flags` is 0 today.

use iroh::EndpointId;

const MAGIC: [u8; 2] = *b"pb";
const VERSION: u8 = 1;
pub const LEN: usize = 16;
/// Bytes of the endpoint id a beacon carries.
pub const PREFIX_LEN: usize = 8;

pub type Prefix = [u8; PREFIX_LEN];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Beacon {
    pub prefix: Prefix,
    pub seq: u32,
}

pub fn prefix_of(id: &EndpointId) -> Prefix {
    let mut p = [0u8; PREFIX_LEN];
    p.copy_from_slice(&id.as_bytes()[..PREFIX_LEN]);
    p
}

impl Beacon {
    pub fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[..2].copy_from_slice(&MAGIC);
        b[2] = VERSION;
        b[4..12].copy_from_slice(&self.prefix);
        b[12..16].copy_from_slice(&self.seq.to_be_bytes());
        b
    }

    /// None for anything that is not a version-1 beacon (other traffic on the port).
    pub fn decode(b: &[u8]) -> Option<Beacon> {
        if b.len() < LEN || b[..2] != MAGIC || b[2] != VERSION {
            return None;
        }
        let mut prefix = [0u8; PREFIX_LEN];
        prefix.copy_from_slice(&b[4..12]);
        let seq = u32::from_be_bytes([b[12], b[13], b[14], b[15]]);
        Some(Beacon { prefix, seq })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_beacon_round_trips_and_ignores_trailing_bytes() {
        let id = iroh::SecretKey::generate().public();
        let b = Beacon {
            prefix: prefix_of(&id),
            seq: 0xdead_beef,
        };
        let bytes = b.encode();
        assert_eq!(Beacon::decode(&bytes), Some(b));
        let mut longer = bytes.to_vec();
        longer.extend_from_slice(b"future fields");
        assert_eq!(Beacon::decode(&longer), Some(b));
    }

    #[test]
    fn other_datagrams_are_not_beacons() {
        let good = Beacon {
            prefix: [1; PREFIX_LEN],
            seq: 1,
        }
        .encode();
        assert_eq!(Beacon::decode(&good[..LEN - 1]), None);
        let mut other_version = good;
        other_version[2] = 2;
        assert_eq!(Beacon::decode(&other_version), None);
        let mut other_magic = good;
        other_magic[0] = b'x';
        assert_eq!(Beacon::decode(&other_magic), None);
        assert_eq!(Beacon::decode(&[]), None);
    }
}
