//! The data plane's metrics (`peat_sidecar_data_*`), from GetStatus's DataStats.

use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use super::{
    metrics::{counter, gauge},
    pb,
};

pub(super) fn register(r: &mut Registry, d: &pb::DataStats) {
    let gauges = [
        ("data_topics", "Topics with live retained entries", d.topics),
        (
            "data_retained_entries",
            "Live retained entries (deletions not included)",
            d.retained_entries,
        ),
        (
            "data_retained_tombstones",
            "Deletions kept so that they reach every node (24 h)",
            d.retained_tombstones,
        ),
        (
            "data_retained_bytes",
            "Bytes of retained entries, as --max-retained-bytes counts them",
            d.retained_bytes,
        ),
        ("data_subscribers", "Live subscriptions", d.subscribers),
    ];
    for (name, help, v) in gauges {
        gauge(r, name, help, v);
    }
    let counters = [
        (
            "data_messages_in",
            "Data messages received from peers",
            d.messages_in,
        ),
        (
            "data_messages_out",
            "Data messages sent to peers (forwards included)",
            d.messages_out,
        ),
        (
            "data_published",
            "Messages published by local apps",
            d.published,
        ),
        (
            "data_delivered",
            "Messages handed to local subscriptions",
            d.delivered,
        ),
        (
            "data_dropped",
            "Messages dropped: a peer's send queue or a subscription's queue was full",
            d.dropped,
        ),
        (
            "data_rejected",
            "Data frames or messages refused (bad field, clock skew, rate, size, origin)",
            d.rejected,
        ),
        (
            "data_forged",
            "Messages refused: sent by a node other than their publisher without its valid signature",
            d.forged,
        ),
        (
            "data_unsigned",
            "Messages taken unsigned from a node other than their publisher (--origin-check permissive)",
            d.unsigned,
        ),
        (
            "data_signed",
            "Messages this node signed (retained ones, and live ones a peer may forward)",
            d.signed,
        ),
    ];
    for (name, help, v) in counters {
        counter(r, name, help, v);
    }
}

type Labels = Vec<(&'static str, String)>;
/// A metric of a link's class: name, help, and the field it reads.
type ClassMetric = (&'static str, &'static str, fn(&pb::LinkClass) -> u64);

/// Per peer link and class (labels `peer`, `class`): what was sent, what waits, what was
/// dropped or replaced; and each link's cap.
pub(super) fn register_links(r: &mut Registry, peers: &[pb::Peer]) {
    let counters: [ClassMetric; 4] = [
        (
            "link_sent_frames",
            "Frames handed to QUIC per peer link and class",
            |c| c.sent_frames,
        ),
        (
            "link_sent_bytes",
            "Frame bytes handed to QUIC per peer link and class",
            |c| c.sent_bytes,
        ),
        (
            "link_dropped_frames",
            "Frames a full link queue dropped, per peer link and class",
            |c| c.dropped,
        ),
        (
            "link_replaced_frames",
            "Latest-value frames replaced while queued, per peer link and class",
            |c| c.replaced,
        ),
    ];
    let gauges: [ClassMetric; 2] = [
        (
            "link_queued_frames",
            "Frames waiting per peer link and class",
            |c| c.queued_frames,
        ),
        (
            "link_queued_bytes",
            "Bytes waiting per peer link and class",
            |c| c.queued_bytes,
        ),
    ];
    let label = |p: &pb::Peer, c: &pb::LinkClass| -> Labels {
        vec![
            ("peer", p.endpoint_id.chars().take(16).collect()),
            ("class", c.class.clone()),
        ]
    };
    for (name, help, f) in counters {
        let family = Family::<Labels, Counter>::default();
        for p in peers {
            for c in &p.link_classes {
                family.get_or_create(&label(p, c)).inc_by(f(c));
            }
        }
        r.register(name, help, family);
    }
    for (name, help, f) in gauges {
        let family = Family::<Labels, Gauge>::default();
        for p in peers {
            for c in &p.link_classes {
                family.get_or_create(&label(p, c)).set(f(c) as i64);
            }
        }
        r.register(name, help, family);
    }
    let cap = Family::<Labels, Gauge>::default();
    for p in peers {
        if let Some(bps) = p.link_rate_cap {
            cap.get_or_create(&vec![("peer", p.endpoint_id.chars().take(16).collect())])
                .set(bps as i64);
        }
    }
    r.register(
        "link_rate_cap_bps",
        "--link-rate of each peer link in bits per second (0: none)",
        cap,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_stats_become_metrics() {
        let mut r = Registry::with_prefix("peat_sidecar");
        register(
            &mut r,
            &pb::DataStats {
                retained_entries: 7,
                dropped: 3,
                ..Default::default()
            },
        );
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        assert!(
            text.contains("peat_sidecar_data_retained_entries 7\n"),
            "{text}"
        );
        assert!(
            text.contains("peat_sidecar_data_dropped_total 3\n"),
            "{text}"
        );
    }

    #[test]
    fn link_classes_become_labelled_metrics() {
        let mut r = Registry::with_prefix("peat_sidecar");
        let peer = pb::Peer {
            endpoint_id: "ab".repeat(32),
            link_rate_cap: Some(64_000),
            link_classes: vec![pb::LinkClass {
                class: "bulk".into(),
                dropped: 5,
                queued_frames: 2,
                ..Default::default()
            }],
            ..Default::default()
        };
        register_links(&mut r, &[peer]);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        let labels = format!("{{peer=\"{}\",class=\"bulk\"}}", "ab".repeat(8));
        for line in [
            format!("peat_sidecar_link_dropped_frames_total{labels} 5"),
            format!("peat_sidecar_link_queued_frames{labels} 2"),
            format!(
                "peat_sidecar_link_rate_cap_bps{{peer=\"{}\"}} 64000",
                "ab".repeat(8)
            ),
        ] {
            assert!(text.contains(&line), "{line} in {text}");
        }
    }
}
