//! `origins`: what signed origins cost per message, in this process (no namespaces):
//! the publisher's signature (`origin::sign`) and a receiver's check (`origin::verify`)
//! of 32 B and 1 KiB messages. The end-to-end effect (a full mesh, where nothing is
//! signed, and a bridge, where every forwarded message is checked) is `pubsub` with
//! `BENCH_OLD_BIN` (docs/PERFORMANCE.md).

use std::time::Instant;

use iroh::SecretKey;
use peat_sidecar::data::{origin, wire::Message};

use super::Ctx;
use crate::report::Measurement;

const S: &str = "origins";

fn message(key: &SecretKey, size: usize) -> Message {
    Message {
        publisher: *key.public().as_bytes(),
        seq: 1,
        hlc: 1 << 40,
        hops: 0,
        topic: "bench/topic/sixteen".into(),
        key: String::new(),
        payload: vec![0x61; size].into(),
        retain: false,
        ttl_ms: 0,
        tombstone: false,
        sig: None,
    }
}

/// Microseconds per call of `f`, one sample per batch of 100 calls.
fn per_call_us(batches: usize, mut f: impl FnMut()) -> Vec<f64> {
    (0..batches)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..100 {
                f();
            }
            t.elapsed().as_secs_f64() * 1e6 / 100.0
        })
        .collect()
}

pub async fn run(ctx: &Ctx) -> anyhow::Result<Vec<Measurement>> {
    let batches = ctx.rounds(5, 50);
    let key = SecretKey::generate();
    let mut out = vec![];
    for size in [32, 1024] {
        let mut m = message(&key, size);
        let sign = per_call_us(batches, || {
            m.seq += 1;
            std::hint::black_box(origin::sign(&key, &m));
        });
        let sig = origin::sign(&key, &m);
        let mut ok = true;
        let verify = per_call_us(batches, || ok &= origin::verify(&m, &sig));
        anyhow::ensure!(ok, "a good signature did not verify");
        out.push(Measurement::new(
            S,
            "peat-sidecar",
            &format!("sign_us_{size}b"),
            1,
            "us",
            sign,
        ));
        out.push(Measurement::new(
            S,
            "peat-sidecar",
            &format!("verify_us_{size}b"),
            1,
            "us",
            verify,
        ));
    }
    Ok(out)
}
