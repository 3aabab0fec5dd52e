//! The node's persistent identity: an Ed25519 secret key in `DATA_DIR/secret.key`.
//!
//! The endpoint id that peers know this host by is the public half of that key, so the
//! file is created once and then only ever read. A file that exists but cannot be used
//! stops the start: replacing it would silently give the host a new identity, and every
//! peer that pinned the old id would lose it.

use std::{
    fs,
    io::{self, Write},
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use iroh::SecretKey;
use tracing::info;

/// File name of the key inside the data dir.
pub const KEY_FILE: &str = "secret.key";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot create the data dir {path}: {cause} (set --data-dir or PEAT_SIDECAR_DATA_DIR to a writable directory)")]
    CreateDir { path: PathBuf, cause: io::Error },
    #[error("cannot read the identity key {path}: {cause}")]
    Read { path: PathBuf, cause: io::Error },
    #[error("cannot write the identity key {path}: {cause} (set --data-dir or PEAT_SIDECAR_DATA_DIR to a writable directory)")]
    Write { path: PathBuf, cause: io::Error },
    #[error("the identity key {path} is {len} bytes; a key file holds exactly 32 bytes. It was not replaced: move it away to start with a new identity, or restore it from a backup")]
    WrongSize { path: PathBuf, len: usize },
}

/// Loads the key from `data_dir`, or creates it (mode 0600) if the file does not exist.
pub fn load_or_create(data_dir: &Path) -> Result<SecretKey, IdentityError> {
    let path = data_dir.join(KEY_FILE);
    match fs::read(&path) {
        Ok(bytes) => {
            let arr: [u8; 32] =
                bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| IdentityError::WrongSize {
                        path: path.clone(),
                        len: bytes.len(),
                    })?;
            tighten_mode(&path);
            Ok(SecretKey::from_bytes(&arr))
        }
        // NotADirectory: a path component is a file; creating the dir reports it clearly.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            create(data_dir, &path)
        }
        Err(cause) => Err(IdentityError::Read { path, cause }),
    }
}

fn create(data_dir: &Path, path: &Path) -> Result<SecretKey, IdentityError> {
    fs::create_dir_all(data_dir).map_err(|cause| IdentityError::CreateDir {
        path: data_dir.to_path_buf(),
        cause,
    })?;
    let key = SecretKey::generate();
    // Written to a temporary file and renamed, so that a crash half-way never leaves a
    // truncated key behind that the next start would refuse.
    let tmp = data_dir.join(format!(".{KEY_FILE}.tmp"));
    let write = || -> io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
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
}
