//! `--authority-key`, `--member-cert`, `--cert-clock-skew` and `--revocation`, checked
//! before anything binds: the key must be a key, the certificate signed by that
//! authority and made for this node's endpoint id (read from `DATA_DIR/secret.key`),
//! each revocation signed by that authority. A certificate that is merely expired or
//! not yet valid is not an error here: it is logged, peers refuse it, and a new file
//! put in its place is used without a restart.

use std::path::{Path, PathBuf};

use iroh::{EndpointId, SecretKey};

use super::SettingsError;
use crate::{
    config::RunArgs,
    node::{identity::KEY_FILE, keyfile},
    trust::{
        store::{read_cert, read_revocation, read_text, FileError, TrustConfig},
        AuthorityKey, TrustError, SECRET_LABEL,
    },
};

/// The trust settings, or `None` without `--authority-key`.
pub fn from_args(args: &RunArgs) -> Result<Option<TrustConfig>, SettingsError> {
    let t = &args.trust;
    let (Some(key_arg), Some(cert_path)) = (&t.authority_key, &t.member_cert) else {
        return Ok(None);
    };
    let authority = authority_key(args, key_arg)?;
    let cert_name = args.origins.name("member_cert");
    let me = node_id(&args.data_dir).ok_or_else(|| SettingsError::Trust {
        name: cert_name.clone(),
        path: cert_path.clone(),
        problem: format!(
            "this node has no identity yet ({} does not exist), so no certificate can be for it. Run `peat-sidecar id --data-dir {}` and have the authority issue a certificate for the id it prints",
            args.data_dir.join(KEY_FILE).display(),
            args.data_dir.display()
        ),
    })?;
    read_cert(cert_path, &authority, me).map_err(|e| SettingsError::Trust {
        name: cert_name.clone(),
        path: cert_path.clone(),
        problem: cert_problem(e, &args.origins.name("authority_key"), &args.data_dir),
    })?;
    for path in &t.revocations {
        read_revocation(path, &authority).map_err(|e| SettingsError::Trust {
            name: args.origins.name("revocations"),
            path: path.clone(),
            problem: revocation_problem(e, &args.origins.name("authority_key")),
        })?;
    }
    Ok(Some(TrustConfig {
        authority,
        cert_path: cert_path.clone(),
        skew: t.cert_clock_skew,
        revocation_paths: t.revocations.clone(),
        learned: Vec::new(),
    }))
}

/// The key itself (64 hex characters) or the file that holds it.
fn authority_key(args: &RunArgs, value: &str) -> Result<AuthorityKey, SettingsError> {
    let name = args.origins.name("authority_key");
    let v = value.trim();
    if v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()) {
        return AuthorityKey::parse(v).map_err(|e| SettingsError::TrustKey {
            name,
            problem: format!("`{v}` is {e}"),
        });
    }
    let path = PathBuf::from(v);
    let file_error = |problem: String| SettingsError::Trust {
        name: name.clone(),
        path: path.clone(),
        problem,
    };
    let text = read_text(&path).map_err(|e| {
        file_error(format!(
            "cannot read it ({e}); give the authority's public key (64 hex characters) or the file that holds it (authority.pub)"
        ))
    })?;
    if text.contains(&format!("-----BEGIN {SECRET_LABEL}-----")) {
        return Err(file_error(
            "this is the authority's SECRET key: give devices authority.pub, and keep authority.key off them".into(),
        ));
    }
    AuthorityKey::parse(&text).map_err(|e| {
        file_error(format!(
            "it does not hold an authority public key ({e}); use the authority.pub that `peat-sidecar authority init` wrote"
        ))
    })
}

/// This node's endpoint id from its identity key, if the key exists. A key that exists
/// but cannot be read is reported by the identity's own check, later.
fn node_id(data_dir: &Path) -> Option<EndpointId> {
    let bytes = keyfile::read_small(&data_dir.join(KEY_FILE), 32).ok()?;
    let arr: [u8; 32] = bytes.as_slice().try_into().ok()?;
    Some(SecretKey::from_bytes(&arr).public())
}

fn cert_problem(e: FileError, key_name: &str, data_dir: &Path) -> String {
    match e {
        FileError::Trust(TrustError::OtherAuthority { .. } | TrustError::BadSignature) => {
            format!("it is not signed by the authority of {key_name}: {e}")
        }
        FileError::Trust(TrustError::OtherEndpoint { cert_for, expected }) => format!(
            "it is for endpoint id {cert_for}, but this node is {expected} ({}); have the authority issue a certificate for {expected}",
            data_dir.join(KEY_FILE).display()
        ),
        FileError::Trust(_) | FileError::Armor(_) => {
            format!("it is not a usable member certificate: {e}")
        }
        _ => format!("cannot read it: {e}"),
    }
}

fn revocation_problem(e: FileError, key_name: &str) -> String {
    match e {
        FileError::Trust(TrustError::OtherAuthority { .. } | TrustError::BadSignature) => {
            format!("it is not signed by the authority of {key_name}: {e}")
        }
        FileError::Trust(_) | FileError::Armor(_) => {
            format!("it is not a usable revocation: {e}")
        }
        _ => format!("cannot read it: {e}"),
    }
}
