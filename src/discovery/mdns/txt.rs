//! The names and TXT record of our DNS-SD service, and their parsing. Pure functions,
//! so that every malformed input can be unit-tested.

use iroh::EndpointId;

/// The DNS-SD service type (the label `_peat-sidecar` is 13 bytes; RFC 6763 allows 15).
pub const SERVICE_TYPE: &str = "_peat-sidecar._udp.local.";
/// Version of the TXT format below.
pub const TXT_VERSION: &str = "1";
/// Longest TXT value we look at; anything longer is malformed (app ids are <= 64).
pub const MAX_VALUE_LEN: usize = 128;

/// Instance label: `peat-` and the first 32 hex digits (128 bits) of the endpoint id:
/// 37 bytes, well inside the 63-byte DNS label limit, and unique in practice. The full
/// id travels in the TXT record, which is what we trust.
pub fn instance_name(id: &EndpointId) -> String {
    let hex = id.to_string();
    format!("peat-{}", &hex[..32])
}

/// Host name: unique per node too, or mdns-sd renames on conflict.
pub fn host_name(id: &EndpointId) -> String {
    format!("{}.local.", instance_name(id))
}

/// The TXT properties we announce.
pub fn txt_properties(app_id: &str, id: &EndpointId) -> Vec<(&'static str, String)> {
    vec![
        ("v", TXT_VERSION.to_string()),
        ("app_id", app_id.to_string()),
        ("endpoint_id", id.to_string()),
    ]
}

/// A peer's TXT record after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerTxt {
    pub app_id: String,
    pub endpoint_id: EndpointId,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxtError {
    #[error("TXT key `{0}` is missing")]
    Missing(&'static str),
    #[error("TXT key `{0}` has no value or a value that is not UTF-8")]
    NotText(&'static str),
    #[error("TXT key `{key}` is {len} bytes long, more than {MAX_VALUE_LEN}")]
    TooLong { key: &'static str, len: usize },
    #[error("TXT format version `{0}` is not supported (this build reads v={TXT_VERSION})")]
    Version(String),
    #[error("endpoint_id is {0} characters, expected 64 hex digits")]
    IdLength(usize),
    #[error("endpoint_id is not hex")]
    IdHex,
    #[error("endpoint_id is not a valid Ed25519 public key")]
    IdKey,
    #[error("app_id is empty or not printable ASCII")]
    AppId,
}

/// Validates a peer's TXT properties, given as (key, value) pairs. Keys compare without
/// case (RFC 6763 6.4); the first occurrence of a key wins (RFC 6763 6.4 too).
pub fn parse_txt<'a, I>(props: I) -> Result<PeerTxt, TxtError>
where
    I: IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
{
    let mut v = None;
    let mut app = None;
    let mut eid = None;
    for (key, val) in props {
        let slot = if key.eq_ignore_ascii_case("v") {
            &mut v
        } else if key.eq_ignore_ascii_case("app_id") {
            &mut app
        } else if key.eq_ignore_ascii_case("endpoint_id") {
            &mut eid
        } else {
            continue;
        };
        if slot.is_none() {
            *slot = Some(val);
        }
    }
    fn text<'v>(key: &'static str, val: Option<Option<&'v [u8]>>) -> Result<&'v str, TxtError> {
        let val = val.ok_or(TxtError::Missing(key))?;
        let bytes = val.ok_or(TxtError::NotText(key))?;
        if bytes.len() > MAX_VALUE_LEN {
            return Err(TxtError::TooLong {
                key,
                len: bytes.len(),
            });
        }
        std::str::from_utf8(bytes).map_err(|_| TxtError::NotText(key))
    }
    // A record without `v` (avahi-publish or a hand-written service file that
    // leaves it out) is read as version 1, the only one there is.
    let version = match v {
        None => TXT_VERSION,
        some => text("v", some)?,
    };
    if version != TXT_VERSION {
        return Err(TxtError::Version(version.chars().take(16).collect()));
    }
    let app_id = text("app_id", app)?;
    if app_id.is_empty()
        || app_id.len() > crate::node::MAX_APP_ID_LEN
        || !app_id.chars().all(|c| c.is_ascii_graphic())
    {
        return Err(TxtError::AppId);
    }
    let id_hex = text("endpoint_id", eid)?;
    if id_hex.len() != 64 {
        return Err(TxtError::IdLength(id_hex.len()));
    }
    let mut raw = [0u8; 32];
    hex::decode_to_slice(id_hex, &mut raw).map_err(|_| TxtError::IdHex)?;
    let endpoint_id = EndpointId::from_bytes(&raw).map_err(|_| TxtError::IdKey)?;
    Ok(PeerTxt {
        app_id: app_id.to_string(),
        endpoint_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> EndpointId {
        iroh::SecretKey::from_bytes(&[7u8; 32]).public()
    }

    fn parse(pairs: &[(&str, Option<&[u8]>)]) -> Result<PeerTxt, TxtError> {
        parse_txt(pairs.iter().copied())
    }

    #[test]
    fn names_fit_dns_labels_and_differ_per_id() {
        let a = instance_name(&id());
        assert!(a.len() <= 63 && a.starts_with("peat-"));
        let other = iroh::SecretKey::from_bytes(&[8u8; 32]).public();
        assert_ne!(a, instance_name(&other));
        assert_ne!(host_name(&id()), host_name(&other));
        assert!(host_name(&id()).ends_with(".local."));
        let service_label = SERVICE_TYPE.split('.').next().unwrap();
        assert!(service_label.len() <= 16, "{service_label}");
    }

    #[test]
    fn round_trip() {
        let props = txt_properties("peat", &id());
        let pairs: Vec<(&str, Option<&[u8]>)> = props
            .iter()
            .map(|(k, v)| (*k, Some(v.as_bytes())))
            .collect();
        let t = parse(&pairs).unwrap();
        assert_eq!(t.app_id, "peat");
        assert_eq!(t.endpoint_id, id());
    }

    #[test]
    fn keys_are_case_insensitive_and_first_wins() {
        let hex = id().to_string();
        let t = parse(&[
            ("V", Some(b"1")),
            ("APP_ID", Some(b"a")),
            ("app_id", Some(b"b")),
            ("Endpoint_Id", Some(hex.as_bytes())),
            ("extra", None),
        ])
        .unwrap();
        assert_eq!(t.app_id, "a");
    }

    #[test]
    fn malformed_records_are_errors_not_panics() {
        let hex = id().to_string();
        let ok_v: (&str, Option<&[u8]>) = ("v", Some(b"1"));
        let ok_app: (&str, Option<&[u8]>) = ("app_id", Some(b"peat"));
        let ok_id: (&str, Option<&[u8]>) = ("endpoint_id", Some(hex.as_bytes()));
        assert!(parse(&[ok_app, ok_id]).is_ok(), "a missing v is version 1");
        assert_eq!(parse(&[ok_v, ok_id]), Err(TxtError::Missing("app_id")));
        assert_eq!(
            parse(&[ok_v, ok_app]),
            Err(TxtError::Missing("endpoint_id"))
        );
        assert_eq!(
            parse(&[("v", Some(b"2")), ok_app, ok_id]),
            Err(TxtError::Version("2".into()))
        );
        assert_eq!(
            parse(&[ok_v, ("app_id", None), ok_id]),
            Err(TxtError::NotText("app_id"))
        );
        assert_eq!(
            parse(&[ok_v, ("app_id", Some(b"a b")), ok_id]),
            Err(TxtError::AppId)
        );
        assert_eq!(
            parse(&[ok_v, ("app_id", Some(&[0xff, 0xfe])), ok_id]),
            Err(TxtError::NotText("app_id"))
        );
        assert_eq!(
            parse(&[ok_v, ok_app, ("endpoint_id", Some(b"abc"))]),
            Err(TxtError::IdLength(3))
        );
        let bad_hex = "z".repeat(64);
        assert_eq!(
            parse(&[ok_v, ok_app, ("endpoint_id", Some(bad_hex.as_bytes()))]),
            Err(TxtError::IdHex)
        );
        let huge = vec![b'a'; 100_000];
        assert!(matches!(
            parse(&[ok_v, ("app_id", Some(&huge)), ok_id]),
            Err(TxtError::TooLong { len: 100_000, .. })
        ));
        let huge_v = vec![b'1'; 300];
        assert!(matches!(
            parse(&[("v", Some(&huge_v)), ok_app, ok_id]),
            Err(TxtError::TooLong { .. })
        ));
        assert_eq!(parse(&[]), Err(TxtError::Missing("app_id")));
    }

    #[test]
    fn garbage_never_panics() {
        // A cheap deterministic fuzz over random bytes and random keys.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let keys = ["v", "app_id", "endpoint_id", "x", ""];
        for _ in 0..2000 {
            let n = (next() % 6) as usize;
            let mut vals: Vec<(usize, Vec<u8>)> = Vec::new();
            for _ in 0..n {
                let k = (next() % keys.len() as u64) as usize;
                let len = (next() % 80) as usize;
                let v: Vec<u8> = (0..len).map(|_| (next() % 256) as u8).collect();
                vals.push((k, v));
            }
            let pairs: Vec<(&str, Option<&[u8]>)> = vals
                .iter()
                .map(|(k, v)| (keys[*k], Some(v.as_slice())))
                .collect();
            let _ = parse(&pairs);
        }
    }
}
