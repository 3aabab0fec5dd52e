//! A rogue member for the tests of signed origins (tests/origins.rs): it passes the
//! formation check (it holds the app id, as a captured device would), then writes data
//! frames of its own making on a data stream, and keeps the frames its peer sends it so
//! that it can replay them. Test code only: nothing of it is in the sidecar.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use iroh::{
    endpoint::{Connection, RecvStream, SendStream},
    Endpoint, SecretKey,
};
use peat_sidecar::{
    data::{
        origin,
        wire::{self, Frame, FrameLimits, Message, WireVersion},
    },
    node::{
        endpoint,
        formation::Formation,
        handshake::{self, Side},
        streams::{self, tag},
    },
};

use super::Sidecar;

pub struct Rogue {
    pub key: SecretKey,
    // Kept: dropping it closes the connection.
    _ep: Endpoint,
    conn: Connection,
    send: SendStream,
    /// Messages its peer sent it (live and retained), as they came.
    pub heard: Arc<Mutex<Vec<Message>>>,
}

impl Rogue {
    /// Connects to `target` as a member of `app_id`, says the data hello and opens its
    /// data stream.
    pub async fn join(target: &Sidecar, app_id: &str) -> Rogue {
        Rogue::join_as(target, SecretKey::generate(), Formation::new(app_id, None)).await
    }

    /// [`Rogue::join`] with the identity `key` and `formation` (one with a trust store
    /// presents a member certificate).
    pub async fn join_as(target: &Sidecar, key: SecretKey, formation: Formation) -> Rogue {
        let live = endpoint::Liveness {
            keep_alive: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(30),
        };
        let ep = endpoint::bind(key.clone(), &["127.0.0.1:0".parse().unwrap()], live)
            .await
            .expect("bind the rogue's endpoint");
        let addr = iroh::EndpointAddr::new(target.id.parse().unwrap()).with_ip_addr(target.bind);
        let (alpn, opts) = handshake::connect_alpns(&formation);
        let conn = ep
            .connect_with_opts(addr, alpn, opts)
            .await
            .expect("connect")
            .await
            .expect("QUIC handshake");
        handshake::authenticate(&conn, &formation, ep.id(), Side::Dialer)
            .await
            .expect("the rogue passes the formation check: it has the app id");
        let heard = Arc::new(Mutex::new(Vec::new()));
        tokio::spawn(accept_streams(conn.clone(), heard.clone()));
        let (mut hello, _) = streams::open(&conn, tag::DATA_V2).await.expect("hello");
        let _ = hello.finish();
        let (send, _) = streams::open(&conn, tag::DATA).await.expect("data stream");
        Rogue {
            key,
            _ep: ep,
            conn,
            send,
            heard,
        }
    }

    pub fn id(&self) -> [u8; 32] {
        *self.key.public().as_bytes()
    }

    /// Writes `frame` as a version 2 frame (signatures included).
    pub async fn send(&mut self, frame: &Frame) {
        let bytes = wire::encode(frame, WireVersion::V2).expect("encode");
        self.send.write_all(&bytes).await.expect("write a frame");
    }

    /// Signs `m` with the rogue's own key (a signature that is not the publisher's
    /// when `m` names another publisher).
    pub fn sign(&self, m: &mut Message) {
        m.sig = Some(origin::sign(&self.key, m));
    }

    /// The first message heard on `topic`.
    pub fn heard_on(&self, topic: &str) -> Option<Message> {
        let heard = self.heard.lock().unwrap();
        heard.iter().find(|m| m.topic == topic).cloned()
    }

    pub fn close(&self) {
        self.conn.close(0u32.into(), b"bye");
    }
}

/// Takes the peer's streams: a data stream is read and its messages kept; the others
/// (liveness echoes) are dropped, which resets them, an answer that proves we run.
async fn accept_streams(conn: Connection, heard: Arc<Mutex<Vec<Message>>>) {
    while let Ok((_send, mut recv)) = conn.accept_bi().await {
        let mut t = [0u8; 1];
        if recv.read_exact(&mut t).await.is_err() || t[0] != tag::DATA {
            continue;
        }
        tokio::spawn(read_frames(recv, heard.clone()));
    }
}

async fn read_frames(mut recv: RecvStream, heard: Arc<Mutex<Vec<Message>>>) {
    let limits = FrameLimits {
        max_message_bytes: 262_144,
    };
    loop {
        let mut len = [0u8; 4];
        if recv.read_exact(&mut len).await.is_err() {
            return;
        }
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        if recv.read_exact(&mut body).await.is_err() {
            return;
        }
        let msgs = match wire::decode(&body, &limits) {
            Ok(Frame::Msg(m)) => vec![m],
            Ok(Frame::Entries(ms)) => ms,
            _ => continue,
        };
        heard.lock().unwrap().extend(msgs);
    }
}
