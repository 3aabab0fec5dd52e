//! The retained state on disk: a redb database `retained.redb` in the data dir.
//!
//! A writer thread applies changes in batches (one transaction, one fsync, per batch),
//! so a burst of retained publishes costs few syncs and the async runtime never waits
//! on the disk. The store also keeps where this node's sequence numbers continue after
//! a restart, so that peers never take a new message for an old duplicate.

use std::{path::Path, sync::Mutex, thread::JoinHandle};

use redb::{Database, ReadableTable, TableDefinition};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::{
    store::{newer, Gone},
    wire::Message,
};

const RETAINED: TableDefinition<&[u8], &[u8]> = TableDefinition::new("retained");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const SEQ_KEY: &str = "seq_next";
/// Sequence numbers reserved at a time: a restart continues past the reservation, and
/// a run renews it halfway through (see [`Lease`]).
pub const SEQ_LEASE: u64 = 1 << 20;
/// Changes waiting for the writer; beyond it publishers wait.
const QUEUE: usize = 16_384;
/// Most changes in one transaction.
const BATCH: usize = 4096;
pub const FILE_NAME: &str = "retained.redb";

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("retained store {path}: {source}")]
    Db {
        path: String,
        #[source]
        source: redb::Error,
    },
}

/// Changes carry versions: the writer keeps the newer one, whatever order changes
/// from concurrent tasks arrive in.
enum Op {
    /// Stored unless the row holds a newer version.
    Put(Message),
    /// Removed if the row holds this version or an older one.
    Del(Gone),
    /// Sequence numbers below this may have been used.
    Lease(u64),
}

pub struct Disk {
    tx: Mutex<Option<mpsc::Sender<Op>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// What the store held at start.
pub struct Loaded {
    pub disk: Disk,
    pub entries: Vec<Message>,
    /// The first sequence number of this run.
    pub first_seq: u64,
}

fn row_key(topic: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(topic.len() + key.len() + 1);
    k.extend_from_slice(topic.as_bytes());
    // Topics and keys hold no control characters, so NUL separates them.
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

/// A row's value: the message as frames of version 1 encode it, then its signature
/// (64 bytes) if it has one. Versions that did not sign wrote the message alone, and
/// read a signed row as the message (postcard leaves trailing bytes alone).
fn encode_row(m: &Message) -> Result<Vec<u8>, postcard::Error> {
    let mut v = postcard::to_stdvec(m)?;
    if let Some(sig) = &m.sig {
        v.extend_from_slice(sig);
    }
    Ok(v)
}

fn decode_row(row: &[u8]) -> Result<Message, postcard::Error> {
    let (mut m, rest): (Message, _) = postcard::take_from_bytes(row)?;
    m.sig = rest.try_into().ok();
    Ok(m)
}

pub fn open(dir: &Path) -> Result<Loaded, DiskError> {
    let path = dir.join(FILE_NAME);
    let err = |e: redb::Error| DiskError::Db {
        path: path.display().to_string(),
        source: e,
    };
    let db = Database::create(&path).map_err(|e| err(e.into()))?;
    let (entries, first_seq) = load(&db).map_err(err)?;
    let (tx, rx) = mpsc::channel(QUEUE);
    let thread = std::thread::Builder::new()
        .name("retained-store".into())
        .spawn(move || writer(db, rx))
        .map_err(|e| err(redb::Error::Io(e)))?;
    Ok(Loaded {
        disk: Disk {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        },
        entries,
        first_seq,
    })
}

/// Reads every entry and takes the next lease of sequence numbers.
fn load(db: &Database) -> Result<(Vec<Message>, u64), redb::Error> {
    let txn = db.begin_write()?;
    let mut entries = Vec::new();
    let first_seq;
    {
        let table = txn.open_table(RETAINED)?;
        for row in table.iter()? {
            let (_, v) = row?;
            match decode_row(v.value()) {
                Ok(m) => entries.push(m),
                Err(e) => warn!(error = %e, "skipping an undecodable retained entry"),
            }
        }
        let mut meta = txn.open_table(META)?;
        first_seq = meta.get(SEQ_KEY)?.map(|v| v.value()).unwrap_or(1).max(1);
        meta.insert(SEQ_KEY, first_seq.saturating_add(SEQ_LEASE))?;
    }
    txn.commit()?;
    Ok((entries, first_seq))
}

fn writer(db: Database, mut rx: mpsc::Receiver<Op>) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.blocking_recv().map(|op| batch.push(op)).is_some() {
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let n = batch.len();
        if let Err(e) = write(&db, batch.drain(..)) {
            warn!(error = %e, changes = n, "could not write retained entries to disk");
        } else {
            debug!(changes = n, "retained entries written");
        }
    }
}

fn write(db: &Database, ops: impl Iterator<Item = Op>) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    {
        let mut table = txn.open_table(RETAINED)?;
        for op in ops {
            let (k, version) = match &op {
                Op::Put(m) => (row_key(&m.topic, &m.key), (m.hlc, m.publisher)),
                Op::Del(((t, k), hlc, p)) => (row_key(t, k), (*hlc, *p)),
                Op::Lease(end) => {
                    let mut meta = txn.open_table(META)?;
                    let old = meta.get(SEQ_KEY)?.map(|v| v.value()).unwrap_or(0);
                    meta.insert(SEQ_KEY, old.max(*end))?;
                    continue;
                }
            };
            let stored = table
                .get(k.as_slice())?
                .and_then(|v| decode_row(v.value()).ok())
                .map(|m| (m.hlc, m.publisher));
            match op {
                Op::Put(m) => {
                    // The same version again carries the signature it lacked.
                    if stored.is_some_and(|(h, p)| newer((h, &p), (m.hlc, &m.publisher))) {
                        continue;
                    }
                    let v = encode_row(&m).map_err(|e| {
                        redb::Error::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, e))
                    })?;
                    table.insert(k.as_slice(), v.as_slice())?;
                }
                Op::Lease(_) => {}
                Op::Del(_) => {
                    if stored.is_some_and(|(h, p)| newer((h, &p), (version.0, &version.1))) {
                        continue;
                    }
                    table.remove(k.as_slice())?;
                }
            }
        }
    }
    txn.commit()?;
    Ok(())
}

impl Disk {
    pub async fn put(&self, m: Message) {
        self.send(Op::Put(m)).await
    }

    /// Records that sequence numbers up to `end` may be used.
    pub async fn lease(&self, end: u64) {
        self.send(Op::Lease(end)).await
    }

    pub async fn delete(&self, gone: Gone) {
        self.send(Op::Del(gone)).await
    }

    async fn send(&self, op: Op) {
        let tx = self.tx.lock().ok().and_then(|t| t.clone());
        if let Some(tx) = tx {
            if tx.send(op).await.is_err() {
                warn!("the retained store's writer has stopped; change not saved");
            }
        }
    }

    /// Writes what is queued and stops the writer.
    pub async fn close(&self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = thread {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(topic: &str, key: &str) -> Message {
        Message {
            publisher: [1; 32],
            seq: 5,
            hlc: 99,
            hops: 0,
            topic: topic.into(),
            key: key.into(),
            payload: bytes::Bytes::from_static(b"v"),
            retain: true,
            ttl_ms: 0,
            tombstone: false,
            sig: None,
        }
    }

    /// A signed row reads back with its signature; an older version's row (the
    /// message alone) without one, and an older version reads a signed row.
    #[test]
    fn rows_keep_signatures_and_read_both_ways() {
        let mut m = msg("a", "");
        m.sig = Some([3; 64]);
        let row = encode_row(&m).unwrap();
        assert_eq!(decode_row(&row).unwrap(), m);
        let old_row = postcard::to_stdvec(&m).unwrap();
        assert_eq!(decode_row(&old_row).unwrap().sig, None);
        let old_reader: Message = postcard::from_bytes(&row).unwrap();
        assert_eq!(old_reader.payload, m.payload);
    }

    #[tokio::test]
    async fn entries_and_sequence_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let l = open(dir.path()).unwrap();
        assert!(l.entries.is_empty());
        assert_eq!(l.first_seq, 1);
        l.disk.put(msg("a", "")).await;
        let mut newer_b = msg("b", "k");
        newer_b.hlc = 200;
        newer_b.payload = bytes::Bytes::from_static(b"new");
        l.disk.put(newer_b).await;
        // An older version arriving later changes nothing; neither does deleting it.
        l.disk.put(msg("b", "k")).await;
        l.disk.delete((("b".into(), "k".into()), 99, [1; 32])).await;
        l.disk.put(msg("c", "")).await;
        l.disk
            .delete((("c".into(), String::new()), 99, [1; 32]))
            .await;
        l.disk.close().await;
        drop(l);
        let again = open(dir.path()).unwrap();
        let mut topics: Vec<_> = again.entries.iter().map(|m| m.topic.clone()).collect();
        topics.sort();
        assert_eq!(topics, ["a", "b"]);
        let b = again.entries.iter().find(|m| m.topic == "b").unwrap();
        assert_eq!(b.payload, &b"new"[..]);
        assert_eq!(again.first_seq, 1 + SEQ_LEASE);
        again.disk.lease(5 * SEQ_LEASE).await;
        again.disk.lease(3 * SEQ_LEASE).await;
        again.disk.close().await;
        drop(again);
        let again = open(dir.path()).unwrap();
        assert_eq!(again.first_seq, 5 * SEQ_LEASE);
        again.disk.close().await;
    }
}
