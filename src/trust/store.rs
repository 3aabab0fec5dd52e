//! The trust material of a running node: the authority's key, this node's certificate
//! and the revocations it holds, read from files. A file replaced or edited on disk is
//! read again at the next connection (a `stat` per connection tells): a new certificate
//! needs no restart. A replacement that does not verify is logged and the old one kept.

use std::{
    collections::{HashMap, HashSet},
    fs,
    io::{self, Read},
    os::unix::fs::{MetadataExt, OpenOptionsExt},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use iroh::EndpointId;
use tracing::{info, warn};

use super::{
    armor::{dearmor, ArmorError, CERT_LABEL, REVOCATION_LABEL},
    members::Members,
    unix_now, verify_cert, AuthorityKey, MemberCert, Revocation, TrustError,
};

/// Largest certificate, revocation or key file read (text, so about 4/3 of the
/// binary size, plus a summary above the block).
pub const MAX_FILE_LEN: usize = 16 * 1024;

/// What a node with an authority is given.
#[derive(Debug, Clone)]
pub struct TrustConfig {
    pub authority: AuthorityKey,
    pub cert_path: PathBuf,
    /// How far apart the clocks of the authority and of the nodes may be.
    pub skew: Duration,
    pub revocation_paths: Vec<PathBuf>,
    /// Revocations the formation spread before this start (the data plane keeps them
    /// on disk), verified: in force before the first connection.
    pub learned: Vec<Revocation>,
}

/// Why a trust file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("it is not a regular file")]
    NotRegular,
    #[error("it holds more than {MAX_FILE_LEN} bytes")]
    TooLarge,
    #[error("it is not text")]
    NotText,
    #[error(transparent)]
    Armor(#[from] ArmorError),
    #[error(transparent)]
    Trust(#[from] TrustError),
}

/// Reads a small regular text file; a device or FIFO is refused before it is read.
pub fn read_text(path: &Path) -> Result<String, FileError> {
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(FileError::NotRegular);
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_LEN as u64 + 1).read_to_end(&mut bytes)?;
    if bytes.len() > MAX_FILE_LEN {
        return Err(FileError::TooLarge);
    }
    String::from_utf8(bytes).map_err(|_| FileError::NotText)
}

/// Reads a certificate file and checks it as this node's own: signed by `authority`
/// and for `me`. Its validity in time is not checked here (see [`MemberCert::check_time`]).
pub fn read_cert(
    path: &Path,
    authority: &AuthorityKey,
    me: EndpointId,
) -> Result<(Vec<u8>, MemberCert), FileError> {
    let bytes = dearmor(CERT_LABEL, &read_text(path)?)?;
    let cert = MemberCert::decode_verified(&bytes, authority)?;
    if cert.endpoint_id != me && !rogue_for_tests() {
        return Err(TrustError::OtherEndpoint {
            cert_for: cert.endpoint_id,
            expected: me,
        }
        .into());
    }
    Ok((bytes, cert))
}

/// Debug builds only: `PEAT_SIDECAR_TEST_ROGUE_CERT=1` lets a node present a
/// certificate made for another endpoint id, so that the end-to-end tests can check
/// that peers refuse it (tests/trust.rs). Release builds never read the variable.
#[cfg(debug_assertions)]
fn rogue_for_tests() -> bool {
    std::env::var_os("PEAT_SIDECAR_TEST_ROGUE_CERT").is_some()
}

#[cfg(not(debug_assertions))]
fn rogue_for_tests() -> bool {
    false
}

/// Reads a revocation file signed by `authority`.
pub fn read_revocation(path: &Path, authority: &AuthorityKey) -> Result<Revocation, FileError> {
    Ok(read_signed_revocation(path, authority)?.1)
}

/// Reads a revocation file signed by `authority`: its signed bytes and what they say.
fn read_signed_revocation(path: &Path, authority: &AuthorityKey) -> Result<Signed, FileError> {
    let bytes = dearmor(REVOCATION_LABEL, &read_text(path)?)?;
    let r = Revocation::decode_verified(&bytes, authority)?;
    Ok((bytes, r))
}

/// A revocation as signed (what spreads) and decoded.
type Signed = (Vec<u8>, Revocation);

/// What tells that a file changed: device, inode, size, modification time.
type Stamp = (u64, u64, u64, i64, i64);

fn stamp(path: &Path) -> Option<Stamp> {
    let m = fs::metadata(path).ok()?;
    Some((m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

/// A value read from a file, and the stamp of the file it was read from.
#[derive(Debug)]
struct Watched<T> {
    path: PathBuf,
    stamp: Option<Stamp>,
    value: T,
}

impl<T> Watched<T> {
    /// Reads the file again if it changed; a read that fails keeps the old value
    /// (logged once per change of the file).
    fn refresh(&mut self, what: &str, read: impl FnOnce(&Path) -> Result<T, FileError>) -> bool {
        let now = stamp(&self.path);
        if now == self.stamp {
            return false;
        }
        self.stamp = now;
        match read(&self.path) {
            Ok(v) => {
                self.value = v;
                true
            }
            Err(e) => {
                warn!(path = %self.path.display(), error = %e, "the {what} file changed and cannot be used; keeping the one read before");
                false
            }
        }
    }
}

/// What the node keeps of a peer's certificate after the check.
#[derive(Debug)]
struct PeerCert {
    id: EndpointId,
    /// Unix seconds: connections close then (src/node/expiry.rs).
    end: u64,
    publish: Arc<Vec<String>>,
    subscribe: Arc<Vec<String>>,
}

/// The trust material in use, shared by every connection's check.
#[derive(Debug)]
pub struct TrustStore {
    authority: AuthorityKey,
    skew: Duration,
    me: EndpointId,
    cert: Mutex<Watched<(Vec<u8>, MemberCert)>>,
    revocations: Mutex<Vec<Watched<Option<Signed>>>>,
    /// Revocations learned while running (from the formation or the API), by the
    /// endpoint id they void; verified before they get here.
    learned: Mutex<HashMap<EndpointId, Revocation>>,
    /// Each peer's certificate as last checked, by endpoint id bytes (the data plane
    /// asks by bytes, once per message).
    peer_certs: Mutex<HashMap<[u8; 32], PeerCert>>,
    /// Every endpoint id revoked now, as bytes: the data plane asks once per message.
    revoked: std::sync::RwLock<HashSet<[u8; 32]>>,
    /// Members' rights from the certificates the formation spreads.
    members: Mutex<Members>,
}

impl TrustStore {
    /// Loads the files of `cfg` for the node `me`. The settings checked them already;
    /// an error here means that they changed since.
    pub fn load(cfg: &TrustConfig, me: EndpointId) -> Result<Self, (PathBuf, FileError)> {
        let cert = read_cert(&cfg.cert_path, &cfg.authority, me)
            .map_err(|e| (cfg.cert_path.clone(), e))?;
        let mut revocations = Vec::new();
        for path in &cfg.revocation_paths {
            let r = read_signed_revocation(path, &cfg.authority).map_err(|e| (path.clone(), e))?;
            revocations.push(Watched {
                path: path.clone(),
                stamp: stamp(path),
                value: Some(r),
            });
        }
        let c = &cert.1;
        info!(path = %cfg.cert_path.display(), name = %c.name, serial = c.serial, not_after = %super::time(c.not_after), authority = %cfg.authority.id(), revocations = revocations.len(), "member certificates required; ours loaded");
        if let Err(e) = c.check_time(unix_now(), cfg.skew) {
            warn!(path = %cfg.cert_path.display(), error = %e, "our own member certificate is not valid now: peers will refuse us; put a new one in place (no restart needed)");
        }
        let store = TrustStore {
            authority: cfg.authority,
            skew: cfg.skew,
            me,
            cert: Mutex::new(Watched {
                path: cfg.cert_path.clone(),
                stamp: stamp(&cfg.cert_path),
                value: cert,
            }),
            revocations: Mutex::new(revocations),
            learned: Mutex::new(
                cfg.learned
                    .iter()
                    .map(|r| (r.endpoint_id, r.clone()))
                    .collect(),
            ),
            revoked: Default::default(),
            peer_certs: Default::default(),
            members: Default::default(),
        };
        // Fills the set of revoked ids that the data plane reads.
        store.is_revoked(&me);
        Ok(store)
    }

    /// The revocations read from `--revocation` files, as signed and decoded.
    pub fn file_revocations(&self) -> Vec<(Vec<u8>, Revocation)> {
        let list = self.revocations.lock().unwrap_or_else(|p| p.into_inner());
        list.iter().filter_map(|w| w.value.clone()).collect()
    }

    /// Adds a revocation verified by this store's authority; true if it voids an
    /// endpoint id that was not revoked before.
    pub fn learn(&self, r: Revocation) -> bool {
        let id = r.endpoint_id;
        let known = self.is_revoked(&id);
        let mut learned = self.learned.lock().unwrap_or_else(|p| p.into_inner());
        learned.insert(id, r);
        drop(learned);
        self.is_revoked(&id);
        !known
    }

    /// Whether `id` (an endpoint id's bytes) is revoked, as of the last
    /// [`TrustStore::is_revoked`]: no file is read, for the data plane's hot path.
    pub fn is_revoked_now(&self, id: &[u8; 32]) -> bool {
        let set = self.revoked.read().unwrap_or_else(|p| p.into_inner());
        set.contains(id)
    }

    pub fn authority(&self) -> &AuthorityKey {
        &self.authority
    }

    /// This node's endpoint id.
    pub fn me(&self) -> EndpointId {
        self.me
    }

    /// This node's certificate as it goes on the wire, read again if the file changed.
    pub fn own_cert(&self) -> Vec<u8> {
        let mut w = self.cert.lock().unwrap_or_else(|p| p.into_inner());
        let (authority, me) = (self.authority, self.me);
        if w.refresh("member certificate", |p| read_cert(p, &authority, me)) {
            let c = &w.value.1;
            info!(path = %w.path.display(), serial = c.serial, name = %c.name, not_after = %super::time(c.not_after), "member certificate reloaded");
        }
        let (bytes, cert) = &w.value;
        if let Err(e) = cert.check_time(unix_now(), self.skew) {
            warn!(path = %w.path.display(), error = %e, "our own member certificate is not valid now: peers will refuse us; put a new one in place (no restart needed)");
        }
        bytes.clone()
    }

    /// The topic patterns our certificate lets us publish on (as last read).
    pub fn own_publish_rights(&self) -> Vec<String> {
        let w = self.cert.lock().unwrap_or_else(|p| p.into_inner());
        w.value.1.publish.clone()
    }

    /// Whether a revocation this node holds covers `id`.
    pub fn is_revoked(&self, id: &EndpointId) -> bool {
        let mut list = self.revocations.lock().unwrap_or_else(|p| p.into_inner());
        let authority = self.authority;
        for w in list.iter_mut() {
            w.refresh("revocation", |p| {
                read_signed_revocation(p, &authority).map(Some)
            });
        }
        let from_files = list
            .iter()
            .any(|w| w.value.as_ref().is_some_and(|(_, r)| &r.endpoint_id == id));
        let files: Vec<[u8; 32]> = list
            .iter()
            .filter_map(|w| w.value.as_ref().map(|(_, r)| *r.endpoint_id.as_bytes()))
            .collect();
        drop(list);
        let learned = self.learned.lock().unwrap_or_else(|p| p.into_inner());
        let now: HashSet<[u8; 32]> = files
            .into_iter()
            .chain(learned.keys().map(|k| *k.as_bytes()))
            .collect();
        let revoked = from_files || learned.contains_key(id);
        drop(learned);
        *self.revoked.write().unwrap_or_else(|p| p.into_inner()) = now;
        revoked
    }

    /// Checks the certificate a peer presented (`None`: it presented none) for the
    /// TLS-proven endpoint id `peer`.
    pub fn check_peer(
        &self,
        cert: Option<&[u8]>,
        peer: EndpointId,
    ) -> Result<MemberCert, TrustError> {
        let bytes = cert.ok_or(TrustError::Missing)?;
        let cert = verify_cert(bytes, &self.authority, peer, unix_now(), self.skew, &|id| {
            self.is_revoked(id)
        })?;
        let recorded = PeerCert {
            id: peer,
            // The first second at which the check refuses it (a redial then fails).
            end: cert.not_after.saturating_add(self.skew.as_secs() + 1),
            publish: Arc::new(cert.publish.clone()),
            subscribe: Arc::new(cert.subscribe.clone()),
        };
        let mut certs = self.peer_certs.lock().unwrap_or_else(|p| p.into_inner());
        certs.insert(*peer.as_bytes(), recorded);
        Ok(cert)
    }

    /// Learns a member's certificate that the formation spread (verified: signed by our
    /// authority). True if it changed what is held.
    pub fn learn_member(&self, cert: &MemberCert) -> bool {
        if self.is_revoked_now(cert.endpoint_id.as_bytes()) {
            return false;
        }
        let mut m = self.members.lock().unwrap_or_else(|p| p.into_inner());
        m.learn(cert, unix_now(), self.skew)
    }

    /// The publish patterns of `id`: from its certificate if it is a peer we checked,
    /// else from the member directory (`None`: unknown, not checked).
    pub fn publish_rights(&self, id: &[u8; 32]) -> Option<Arc<Vec<String>>> {
        self.peer_publish_rights(id).or_else(|| {
            let m = self.members.lock().unwrap_or_else(|p| p.into_inner());
            m.publish_rights(id, unix_now())
        })
    }

    /// When this node's certificate ends (Unix seconds), as last read.
    pub fn own_cert_end(&self) -> u64 {
        let w = self.cert.lock().unwrap_or_else(|p| p.into_inner());
        w.value.1.not_after
    }

    /// The subscribe patterns of a checked peer's certificate (`None`: none recorded).
    pub fn peer_subscribe_rights(&self, id: &[u8; 32]) -> Option<Arc<Vec<String>>> {
        let certs = self.peer_certs.lock().unwrap_or_else(|p| p.into_inner());
        certs.get(id).map(|c| c.subscribe.clone())
    }

    /// The publish patterns of a checked peer's certificate (`None`: none recorded).
    pub fn peer_publish_rights(&self, id: &[u8; 32]) -> Option<Arc<Vec<String>>> {
        let certs = self.peer_certs.lock().unwrap_or_else(|p| p.into_inner());
        certs.get(id).map(|c| c.publish.clone())
    }

    /// When the next peer certificate ends (Unix seconds), if any is recorded.
    pub fn next_peer_end(&self) -> Option<u64> {
        let certs = self.peer_certs.lock().unwrap_or_else(|p| p.into_inner());
        certs.values().map(|c| c.end).min()
    }

    /// The peers whose certificates ended by `now`; they are forgotten here.
    pub fn take_ended(&self, now: u64) -> Vec<EndpointId> {
        let mut certs = self.peer_certs.lock().unwrap_or_else(|p| p.into_inner());
        let ended: Vec<EndpointId> = certs
            .values()
            .filter(|c| c.end <= now)
            .map(|c| c.id)
            .collect();
        for id in &ended {
            certs.remove(id.as_bytes());
        }
        ended
    }
}
