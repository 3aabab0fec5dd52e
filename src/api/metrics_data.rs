//! The data plane's metrics (`peat_sidecar_data_*`), from GetStatus's DataStats.

use prometheus_client::registry::Registry;

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
}
