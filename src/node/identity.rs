//! The node's persistent identity: an Ed25519 secret key in `DATA_DIR/secret.key`, and
//! the lock (`DATA_DIR/lock`) that keeps a second daemon off the same identity.
//!
//! The endpoint id that peers know this host by is the public half of that key, so the
//! file is created once and then only ever read. A file that exists but cannot be used
//! stops the start: replacing it would silently give the host a new identity, and every
//! peer that pinned the old id would lose it.

use std::{
    fs,
    io::{self, Read, Seek, Write},
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use iroh::SecretKey;
use nix::fcntl::{Flock, FlockArg};
use tracing::info;

use super::keyfile::{self, KeyFileError};

/// File name of the key inside the data dir.
pub const KEY_FILE: &str = "secret.key";
/// File name of the lock inside the data dir; it holds the daemon's pid.
pub const LOCK_FILE: &str = "lock";
const KEY_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot create the data dir {path}: {cause} (set --data-dir or PEAT_SIDECAR_DATA_DIR to a writable directory)")]
    CreateDir { path: PathBuf, cause: io::Error },
    #[error("cannot read the identity key {path}: {cause}")]
    Read { path: PathBuf, cause: KeyFileError },
    #[error("cannot write the identity key {path}: {cause} (set --data-dir or PEAT_SIDECAR_DATA_DIR to a writable directory)")]
    Write { path: PathBuf, cause: io::Error },
    #[error("the identity key {path} is {len} bytes; a key file holds exactly 32 bytes. It was not replaced: move it away to start with a new identity, or restore it from a backup")]
    WrongSize { path: PathBuf, len: u64 },
    #[error("cannot lock the data dir ({path}): {cause}")]
    Lock { path: PathBuf, cause: io::Error },
    #[error("the data dir {dir} is in use by another peat-sidecar ({}); two daemons on one data dir would share one identity. Stop that one first, or give this one another --data-dir", .pid.map_or("its pid is not known yet".to_string(), |p| format!("pid {p}")))]
    Locked { dir: PathBuf, pid: Option<u32> },
}

/// Held for the daemon's life: the exclusive lock on `DATA_DIR/lock`. The kernel drops
/// it when the process ends, however it ends.
#[derive(Debug)]
pub struct DataDirLock(#[allow(dead_code)] Flock<fs::File>);

/// Takes the data dir for this process (creating the dir if needed), or says which
/// process has it.
pub fn lock_data_dir(data_dir: &Path) -> Result<DataDirLock, IdentityError> {
    create_dir(data_dir)?;
    let path = data_dir.join(LOCK_FILE);
    let lock_err = |cause| IdentityError::Lock {
        path: path.clone(),
        cause,
    };
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(&path)
        .map_err(lock_err)?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(mut held) => {
            held.set_len(0)
                .and_then(|()| held.rewind())
                .and_then(|()| writeln!(held, "{}", std::process::id()))
                .map_err(lock_err)?;
            Ok(DataDirLock(held))
        }
        Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            Err(IdentityError::Locked {
                dir: data_dir.to_path_buf(),
                pid: text.trim().parse().ok(),
            })
        }
        Err((_, errno)) => Err(lock_err(io::Error::from(errno))),
    }
}

fn create_dir(data_dir: &Path) -> Result<(), IdentityError> {
    fs::create_dir_all(data_dir).map_err(|cause| IdentityError::CreateDir {
        path: data_dir.to_path_buf(),
        cause,
    })
}

/// Loads the key from `data_dir`, or creates it (mode 0600) if the file does not exist.
pub fn load_or_create(data_dir: &Path) -> Result<SecretKey, IdentityError> {
    let path = data_dir.join(KEY_FILE);
    match keyfile::read_small(&path, KEY_LEN) {
        Ok(bytes) => {
            let arr: [u8; KEY_LEN] =
                bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| IdentityError::WrongSize {
                        path: path.clone(),
                        len: bytes.len() as u64,
                    })?;
            tighten_mode(&path);
            Ok(SecretKey::from_bytes(&arr))
        }
        Err(KeyFileError::TooLarge { len, .. }) => Err(IdentityError::WrongSize { path, len }),
        // NotADirectory: a path component is a file; creating the dir reports it clearly.
        Err(e) if e.not_found() => create(data_dir, &path),
        Err(cause) => Err(IdentityError::Read { path, cause }),
    }
}

fn create(data_dir: &Path, path: &Path) -> Result<SecretKey, IdentityError> {
    create_dir(data_dir)?;
    let key = SecretKey::generate();
    // Written to a temporary file and linked to the final name, so that a crash
    // half-way never leaves a truncated key behind that the next start would refuse.
    // The temporary name is this writer's alone: with a shared one, a racing process
    // could truncate it or put its own key in it between our write and our link.
    let tmp = data_dir.join(format!(
        ".{KEY_FILE}.{}.{:016x}.tmp",
        std::process::id(),
        rand::random::<u64>()
    ));
    let write = || -> io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&key.to_bytes())?;
        f.sync_all()?;
        // create_new semantics for the final name: never overwrite a key that another
        // process wrote in the meantime.
        fs::hard_link(&tmp, path)?;
        fs::remove_file(&tmp)
    };
    match write() {
        Ok(()) => {
            info!(path = %path.display(), endpoint_id = %key.public(), "created a new identity key");
            Ok(key)
        }
        // Another process linked its key first: that one is the identity.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let _ = fs::remove_file(&tmp);
            load_or_create(data_dir)
        }
        Err(cause) => {
            let _ = fs::remove_file(&tmp);
            Err(IdentityError::Write {
                path: path.to_path_buf(),
                cause,
            })
        }
    }
}

/// A key that others can read is a key that others can use: keep it 0600.
fn tighten_mode(path: &Path) {
    if let Ok(meta) = fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            if let Err(e) = fs::set_permissions(path, fs::Permissions::from_mode(0o600)) {
                tracing::warn!(path = %path.display(), error = %e, "identity key is readable by others and its mode could not be fixed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_stable() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create(dir.path()).unwrap();
        let b = load_or_create(dir.path()).unwrap();
        assert_eq!(a.public(), b.public());
        let mode = fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn creates_missing_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b");
        load_or_create(&nested).unwrap();
        assert!(nested.join(KEY_FILE).exists());
    }

    #[test]
    fn wrong_size_is_refused_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        fs::write(&path, b"not a key").unwrap();
        let err = load_or_create(dir.path()).unwrap_err();
        assert!(matches!(err, IdentityError::WrongSize { len: 9, .. }));
        assert!(err.to_string().contains(&path.display().to_string()));
        assert_eq!(fs::read(&path).unwrap(), b"not a key");
    }

    #[test]
    fn unwritable_dir_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plainfile");
        fs::write(&file, b"x").unwrap();
        // A data dir below a regular file can never be created.
        let err = load_or_create(&file.join("sub")).unwrap_err();
        assert!(matches!(err, IdentityError::CreateDir { .. }), "{err}");
    }

    #[test]
    fn a_device_as_key_is_refused_without_reading_it() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/dev/zero", dir.path().join(KEY_FILE)).unwrap();
        let err = load_or_create(dir.path()).unwrap_err();
        assert!(matches!(err, IdentityError::Read { .. }), "{err}");
        assert!(err.to_string().contains("character device"), "{err}");
    }

    #[test]
    fn racing_creators_agree_on_one_key() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let ids: Vec<_> = (0..4)
                .map(|_| {
                    let d = dir.path().to_path_buf();
                    std::thread::spawn(move || load_or_create(&d).map(|k| k.public()))
                })
                .map(|t| t.join().unwrap().unwrap())
                .collect();
            let on_disk = load_or_create(dir.path()).unwrap().public();
            assert!(ids.iter().all(|id| *id == on_disk));
        }
    }

    #[test]
    fn second_lock_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let _held = lock_data_dir(dir.path()).unwrap();
        let err = lock_data_dir(dir.path()).unwrap_err();
        let pid = std::process::id();
        assert!(
            matches!(err, IdentityError::Locked { pid: Some(p), .. } if p == pid),
            "{err}"
        );
        assert!(err.to_string().contains(&format!("pid {pid}")), "{err}");
        drop(_held);
        lock_data_dir(dir.path()).unwrap();
    }
}
