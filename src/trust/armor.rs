//! The text form of certificates, revocations and the authority's secret key, for
//! operators to copy around: base64 between `-----BEGIN LABEL-----` and
//! `-----END LABEL-----` lines, as PEM. Lines outside the block (a summary the
//! authority writes above it) are ignored.

use base64::Engine;

pub const CERT_LABEL: &str = "PEAT MEMBER CERTIFICATE";
pub const REVOCATION_LABEL: &str = "PEAT REVOCATION";
pub const SECRET_LABEL: &str = "PEAT AUTHORITY SECRET KEY";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArmorError {
    #[error("no `-----BEGIN {0}-----` line")]
    NoBegin(&'static str),
    #[error("no `-----END {0}-----` line after the BEGIN line")]
    NoEnd(&'static str),
    #[error("the text between BEGIN and END is not base64")]
    Base64,
    #[error("it holds a `{found}` block, not a `{expected}` one")]
    OtherLabel {
        expected: &'static str,
        found: String,
    },
}

/// `bytes` as an armoured block (64 base64 characters a line).
pub fn armor(label: &str, bytes: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The bytes of the first `label` block in `text`.
pub fn dearmor(label: &'static str, text: &str) -> Result<Vec<u8>, ArmorError> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let mut lines = text.lines().map(str::trim);
    if !lines.by_ref().any(|l| l == begin) {
        let other = text
            .lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix("-----BEGIN ")?.strip_suffix("-----"));
        return Err(match other {
            Some(found) => ArmorError::OtherLabel {
                expected: label,
                found: found.to_string(),
            },
            None => ArmorError::NoBegin(label),
        });
    }
    let mut b64 = String::new();
    for line in lines {
        if line == end {
            return base64::engine::general_purpose::STANDARD
                .decode(b64.as_bytes())
                .map_err(|_| ArmorError::Base64);
        }
        b64.push_str(line);
    }
    Err(ArmorError::NoEnd(label))
}
