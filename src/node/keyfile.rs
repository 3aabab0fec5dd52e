//! Reading small key files (the identity key, the shared key) without trusting them to
//! be small: a path that points at /dev/zero or a FIFO must neither eat memory nor hang.

use std::{
    fs,
    io::{self, Read},
    os::unix::fs::{FileTypeExt, OpenOptionsExt},
    path::Path,
};

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("it is {0}, not a regular file")]
    NotRegular(&'static str),
    #[error("it holds more than {max} bytes")]
    TooLarge { max: usize, len: u64 },
}

impl KeyFileError {
    pub fn not_found(&self) -> bool {
        matches!(self, KeyFileError::Io(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory))
    }
}

/// Reads a regular file of at most `max` bytes. Anything else (a device, a FIFO, a
/// directory, a socket) is refused before a single byte is read.
pub fn read_small(path: &Path, max: usize) -> Result<Vec<u8>, KeyFileError> {
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    let ft = meta.file_type();
    if !ft.is_file() {
        return Err(KeyFileError::NotRegular(match () {
            _ if ft.is_dir() => "a directory",
            _ if ft.is_fifo() => "a FIFO",
            _ if ft.is_char_device() => "a character device",
            _ if ft.is_block_device() => "a block device",
            _ if ft.is_socket() => "a socket",
            _ => "a special file",
        }));
    }
    let mut bytes = Vec::with_capacity(max + 1);
    // One byte more than allowed tells "too large" from "exactly max".
    file.take(max as u64 + 1).read_to_end(&mut bytes)?;
    if bytes.len() > max {
        return Err(KeyFileError::TooLarge {
            max,
            len: meta.len().max(bytes.len() as u64),
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        fs::write(&p, [1u8; 32]).unwrap();
        assert_eq!(read_small(&p, 32).unwrap(), vec![1u8; 32]);
        fs::write(&p, [1u8; 33]).unwrap();
        assert!(matches!(
            read_small(&p, 32),
            Err(KeyFileError::TooLarge { max: 32, len: 33 })
        ));
        assert!(read_small(&dir.path().join("none"), 32)
            .unwrap_err()
            .not_found());
    }

    #[test]
    fn devices_fifos_and_dirs_are_refused_at_once() {
        let err = read_small(Path::new("/dev/zero"), 32).unwrap_err();
        assert!(matches!(
            err,
            KeyFileError::NotRegular("a character device")
        ));
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert!(matches!(
            read_small(&fifo, 32),
            Err(KeyFileError::NotRegular("a FIFO"))
        ));
        assert!(matches!(
            read_small(dir.path(), 32),
            Err(KeyFileError::NotRegular("a directory"))
        ));
    }
}
