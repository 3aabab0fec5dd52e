//! iroh's own endpoint metrics (bytes per address family, paths, connections) in the
//! sidecar's `/metrics`, under `peat_sidecar_iroh_<group>_<name>`.
//!
//! They are read into plain samples when the snapshot is taken, so that rendering
//! stays a pure function of the snapshot like the rest of `/metrics`, and re-registered
//! with prometheus-client: one encoder and one `# EOF` for the whole page rather than
//! two encoders' texts glued together.

use iroh::metrics::EndpointMetrics;
use iroh_metrics::{MetricValue, MetricsGroupSet};
use prometheus_client::{
    metrics::{counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};

/// One metric of iroh's, read at snapshot time.
#[derive(Debug, Clone, PartialEq)]
pub struct IrohSample {
    /// `<group>_<field>`, e.g. `socket_send_ipv4`.
    pub name: String,
    pub help: &'static str,
    pub value: IrohValue,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum IrohValue {
    Counter(u64),
    Gauge(i64),
}

/// Reads every counter and gauge of the endpoint's metric groups. Histograms are left
/// out: iroh 1.4's endpoint has none, and their buckets would need a type of their own.
pub fn read(metrics: &EndpointMetrics) -> Vec<IrohSample> {
    metrics
        .iter()
        .filter_map(|(group, item)| {
            let value = match item.value() {
                MetricValue::Counter(v) => IrohValue::Counter(v),
                MetricValue::Gauge(v) => IrohValue::Gauge(v),
                _ => return None,
            };
            Some(IrohSample {
                name: format!("{group}_{}", item.name()),
                help: item.help(),
                value,
            })
        })
        .collect()
}

/// Registers the samples under the `iroh` prefix.
pub fn register(registry: &mut Registry, samples: &[IrohSample]) {
    if samples.is_empty() {
        return;
    }
    let sub = registry.sub_registry_with_prefix("iroh");
    for s in samples {
        // iroh documents a few fields as unused; their help text still says so.
        let help = s.help.trim_end_matches('.');
        match s.value {
            IrohValue::Counter(v) => sub.register(&s.name, help, ConstCounter::new(v)),
            IrohValue::Gauge(v) => sub.register(&s.name, help, ConstGauge::new(v)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_read_by_group_and_rendered_with_the_iroh_prefix() {
        let m = EndpointMetrics::default();
        m.socket.send_ipv4.inc_by(1234);
        let samples = read(&m);
        let send = samples
            .iter()
            .find(|s| s.name == "socket_send_ipv4")
            .expect("iroh's socket group has send_ipv4");
        assert_eq!(send.value, IrohValue::Counter(1234));

        let mut r = Registry::with_prefix("peat_sidecar");
        register(&mut r, &samples);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).expect("encodes");
        assert!(
            text.contains("peat_sidecar_iroh_socket_send_ipv4_total 1234"),
            "{text}"
        );
        assert!(text.contains("# TYPE peat_sidecar_iroh_socket_send_ipv4 counter"));
    }
}
