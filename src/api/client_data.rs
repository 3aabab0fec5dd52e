//! The data plane's commands: `publish`, `subscribe`, `get`, `delete`; and the data rows of
//! `status`.

use std::io::Read;

use base64::Engine as _;
use serde_json::{json, Value};
use tonic::transport::Channel;

use super::{
    channel::{ClientError, Target},
    output::human_duration,
    pb::{self, sidecar_client::SidecarClient},
};
use crate::{
    config::{ClientArgs, DeleteArgs, GetArgs, PublishArgs, SubscribeArgs},
    outln,
};

/// Largest answer the client takes (a Get of a big retained store).
const MAX_ANSWER: usize = 256 * 1024 * 1024;

async fn open(args: &ClientArgs) -> Result<(SidecarClient<Channel>, Target), ClientError> {
    let target = Target::new(&args.api, args.timeout);
    let c = target
        .connect()
        .await?
        .max_decoding_message_size(MAX_ANSWER);
    Ok((c, target))
}

fn payload(value: &Option<String>) -> Result<Vec<u8>, ClientError> {
    match value.as_deref() {
        None => Ok(Vec::new()),
        Some("-") => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(ClientError::Stdin)?;
            Ok(buf)
        }
        Some(v) => Ok(v.as_bytes().to_vec()),
    }
}

pub async fn publish(args: &PublishArgs) -> Result<(), ClientError> {
    let req = pb::PublishRequest {
        topic: args.topic.clone(),
        key: args.key.clone().unwrap_or_default(),
        payload: payload(&args.value)?.into(),
        retain: args.retain,
        ttl_secs: args.ttl.unwrap_or(0),
        priority: args
            .priority
            .map_or(pb::Priority::Default, super::convert::priority) as i32,
    };
    let len = req.payload.len();
    let (mut c, t) = open(&args.client).await?;
    let r = t.call(c.publish(req)).await.map_err(|e| match e {
        ClientError::Rpc(msg) => ClientError::Rpc(too_large(len, &msg).unwrap_or(msg)),
        e => e,
    })?;
    print_sent(args.client.json, "published", r.seq, r.hlc)
}

/// The server's gRPC layer refuses a request beyond twice --max-message-bytes plus
/// room for the rest (`api::data::request_limit`) before the data plane sees it, with
/// tonic's "decoded message length too large ... the limit is: L bytes". Say what the
/// data plane says for a smaller excess, with the setting's value worked back from L.
fn too_large(payload: usize, msg: &str) -> Option<String> {
    let (_, rest) = msg.split_once("decoded message length too large")?;
    let (_, limit) = rest.split_once("the limit is: ")?;
    let limit: usize = limit.split_whitespace().next()?.parse().ok()?;
    // request_limit(None) is the room besides the payloads.
    let max = limit.checked_sub(super::data::request_limit(None))? / 2;
    // Worded as the data plane's own refusal (DataError::TooLarge, INVALID_ARGUMENT).
    Some(format!(
        "invalid argument: the payload is {payload} bytes; --max-message-bytes allows at most {max}"
    ))
}

/// What publish and delete print: `VERB seq=N`, or the sequence and clock as JSON.
fn print_sent(json: bool, verb: &str, seq: u64, hlc: u64) -> Result<(), ClientError> {
    if json {
        outln!("{}", json!({"seq": seq, "hlc": hlc}))?;
    } else {
        outln!("{verb} seq={seq}")?;
    }
    Ok(())
}

pub async fn delete(args: &DeleteArgs) -> Result<(), ClientError> {
    let req = pb::DeleteRequest {
        topic: args.topic.clone(),
        key: args.key.clone().unwrap_or_default(),
    };
    let (mut c, t) = open(&args.client).await?;
    let r = t.call(c.delete(req)).await?;
    print_sent(args.client.json, "deleted", r.seq, r.hlc)
}

pub async fn get(args: &GetArgs) -> Result<(), ClientError> {
    let (mut c, t) = open(&args.client).await?;
    let req = pb::GetRequest {
        pattern: args.pattern.clone(),
    };
    let entries = t.call(c.get(req)).await?.entries;
    let now = crate::events::unix_ms_now();
    for m in &entries {
        print_message(m, args.client.json, now)?;
    }
    Ok(())
}

/// Streams until the sidecar ends the stream; only opening it has a deadline.
pub async fn subscribe(args: &SubscribeArgs) -> Result<(), ClientError> {
    let (mut c, t) = open(&args.client).await?;
    let req = pb::SubscribeRequest {
        pattern: args.pattern.clone(),
        retained: args.retained,
    };
    let mut stream = t.call(c.subscribe(req)).await?;
    let json = args.client.json;
    loop {
        let d = match stream.message().await {
            Ok(Some(d)) => d,
            Ok(None) => {
                note(&format!("{}: the sidecar ended the stream", t.api));
                return Ok(());
            }
            Err(e) => return Err(t.error(e)),
        };
        match d.kind {
            Some(pb::delivery::Kind::Message(m)) => {
                print_message(&m, json, crate::events::unix_ms_now())?
            }
            Some(pb::delivery::Kind::Missed(n)) if json => outln!("{}", json!({"missed": n}))?,
            Some(pb::delivery::Kind::Missed(n)) => {
                outln!("missed {n} (this subscriber read too slowly)")?
            }
            Some(pb::delivery::Kind::RetainedDone(_)) | None => {}
        }
    }
}

pub fn message_json(m: &pb::DataMessage) -> Value {
    let mut v = json!({
        "topic": m.topic,
        "key": m.key,
        "publisher": m.publisher,
        "seq": m.seq,
        "hlc": m.hlc,
        "published_unix_ms": m.published_unix_ms,
        "expires_unix_ms": m.expires_unix_ms,
        "retained": m.retained,
        "deleted": m.deleted,
        "payload_b64": base64::engine::general_purpose::STANDARD.encode(&m.payload),
    });
    if m.deleted {
        return v;
    }
    if let Ok(text) = std::str::from_utf8(&m.payload) {
        v["text"] = Value::String(text.to_string());
    }
    v
}

/// "12ms", "3.4s", "2m 5s".
fn age(now_ms: u64, then_ms: u64) -> String {
    let ms = now_ms.saturating_sub(then_ms);
    match ms {
        0..1000 => format!("{ms}ms"),
        1000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        _ => human_duration(ms / 1000),
    }
}

/// The text form of a message: topic, key (or -), publisher's short id, age, value
/// (`<deleted>` for a Delete, `<N bytes>` for a payload that is not UTF-8).
pub fn message_line(m: &pb::DataMessage, now_ms: u64) -> String {
    let key = if m.key.is_empty() { "-" } else { &m.key };
    let short: String = m.publisher.chars().take(10).collect();
    let value = match std::str::from_utf8(&m.payload) {
        _ if m.deleted => "<deleted>".to_string(),
        Ok(t) => t.to_string(),
        Err(_) => format!("<{} bytes>", m.payload.len()),
    };
    format!(
        "{} {key} {short} {} {value}",
        m.topic,
        age(now_ms, m.published_unix_ms)
    )
}

fn print_message(m: &pb::DataMessage, json: bool, now_ms: u64) -> Result<(), ClientError> {
    if json {
        outln!("{}", message_json(m))?;
    } else {
        outln!("{}", message_line(m, now_ms))?;
    }
    Ok(())
}

/// The data rows of `status`.
pub fn print_stats(d: &pb::DataStats) -> Result<(), ClientError> {
    outln!(
        "data            {} topics, {} retained entries, {} deletions kept ({} bytes), {} subscribers",
        d.topics,
        d.retained_entries,
        d.retained_tombstones,
        d.retained_bytes,
        d.subscribers
    )?;
    outln!(
        "messages        {} published, {} in, {} out, {} delivered, {} dropped, {} rejected",
        d.published,
        d.messages_in,
        d.messages_out,
        d.delivered,
        d.dropped,
        d.rejected
    )?;
    outln!(
        "origins         {} signed, {} refused as not signed by their publisher, {} taken unsigned",
        d.signed,
        d.forged,
        d.unsigned
    )?;
    Ok(())
}

/// A line on stderr; a closed stderr is no reason to fail.
fn note(msg: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{msg}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(payload: &[u8]) -> pb::DataMessage {
        pb::DataMessage {
            topic: "tracks/blue".into(),
            publisher: "ab".repeat(32),
            payload: bytes::Bytes::copy_from_slice(payload),
            published_unix_ms: 10_000,
            ..Default::default()
        }
    }

    #[test]
    fn a_request_too_large_for_grpc_names_the_setting() {
        let tonic = "Error, decoded message length too large: found 1048590 bytes, the limit is: 589824 bytes";
        assert_eq!(
            too_large(1_048_576, tonic).as_deref(),
            Some("invalid argument: the payload is 1048576 bytes; --max-message-bytes allows at most 262144")
        );
        assert_eq!(too_large(5, "invalid argument: the topic is empty"), None);
    }

    #[test]
    fn lines_show_text_or_size() {
        assert_eq!(
            message_line(&m(b"hello"), 10_012),
            "tracks/blue - ababababab 12ms hello"
        );
        let mut bin = m(&[0xff, 0xfe, 0]);
        bin.key = "k1".into();
        assert_eq!(
            message_line(&bin, 13_400),
            "tracks/blue k1 ababababab 3.4s <3 bytes>"
        );
        assert_eq!(age(200_000, 10_000), "3m 10s");
    }

    #[test]
    fn json_has_text_only_for_utf8() {
        let v = message_json(&m(b"hi"));
        assert_eq!(v["text"], "hi");
        assert_eq!(v["payload_b64"], "aGk=");
        assert_eq!(v["deleted"], false);
        assert!(message_json(&m(&[0xff])).get("text").is_none());
    }

    #[test]
    fn a_deletion_says_so() {
        let mut d = m(b"");
        d.key = "k1".into();
        d.deleted = true;
        assert_eq!(
            message_line(&d, 10_005),
            "tracks/blue k1 ababababab 5ms <deleted>"
        );
        let v = message_json(&d);
        assert_eq!(v["deleted"], true);
        assert!(v.get("text").is_none(), "{v}");
    }
}
