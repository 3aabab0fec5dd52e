//! Interfaces where mDNS runs but the families iroh is bound to have no address: the
//! sidecar would announce nothing there and stay silent (an IPv6-only link with the
//! default IPv4 `--bind`, an IPv4-only link with `--bind [::]:PORT`). Said once per
//! interface change, naming the interface and what to do.

use std::collections::HashMap;

use tracing::warn;

use super::scope::BindScope;
use crate::platform::iface::InterfaceInfo;

/// The families an interface lacks, of those iroh is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gap {
    /// Bound to IPv4 only; the interface has IPv6 addresses only.
    NoV4,
    /// Bound to IPv6 only; the interface has IPv4 addresses only.
    NoV6,
}

impl Gap {
    fn advice(self) -> &'static str {
        match self {
            Gap::NoV4 => "the interface has IPv6 addresses only but this sidecar's endpoint is bound to IPv4: nothing is announced or dialled there; bind IPv6 too with --bind [::]:PORT (PEAT_SIDECAR_BIND), link-local fe80:: addresses are enough",
            Gap::NoV6 => "the interface has IPv4 addresses only but this sidecar's endpoint is bound to IPv6 only: nothing is announced or dialled there; bind IPv4 too with --bind 0.0.0.0:PORT, or enable IPv6 on the interface (sysctl net.ipv6.conf.IFACE.disable_ipv6=0)",
        }
    }
}

/// What `iface` lacks. An interface with no address at all, or bound to one address
/// (`--bind IP`: other interfaces are meant to be unused), lacks nothing worth a word.
pub fn gap(iface: &InterfaceInfo, scope: &BindScope) -> Option<Gap> {
    if !scope.only.is_empty() {
        return None;
    }
    let has_v4 = iface.addrs.iter().any(|a| a.ip.is_ipv4());
    let has_v6 = iface.addrs.iter().any(|a| a.ip.is_ipv6());
    match (scope.v4, scope.v6) {
        (true, false) if !has_v4 && has_v6 => Some(Gap::NoV4),
        (false, true) if !has_v6 && has_v4 => Some(Gap::NoV6),
        _ => None,
    }
}

/// Warns when an interface's gap appears or changes; forgets it when it closes.
#[derive(Debug, Default)]
pub struct GapLog {
    warned: HashMap<String, Gap>,
}

impl GapLog {
    /// Looks at the eligible interfaces; returns how many warnings were logged.
    pub fn check<'a>(
        &mut self,
        eligible: impl IntoIterator<Item = &'a InterfaceInfo>,
        scope: &BindScope,
    ) -> usize {
        let mut now = HashMap::new();
        let mut logged = 0;
        for i in eligible {
            let Some(g) = gap(i, scope) else { continue };
            if self.warned.get(&i.name) != Some(&g) {
                warn!(interface = %i.name, "mdns: {}", g.advice());
                logged += 1;
            }
            now.insert(i.name.clone(), g);
        }
        self.warned = now;
        logged
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::platform::iface::{IfAddr, IfFlags};

    fn iface(name: &str, addrs: &[&str]) -> InterfaceInfo {
        InterfaceInfo {
            name: name.into(),
            index: 2,
            flags: IfFlags::default(),
            addrs: addrs
                .iter()
                .map(|a| IfAddr {
                    ip: a.parse().unwrap(),
                    prefix_len: 64,
                })
                .collect::<BTreeSet<_>>(),
        }
    }

    fn scope(bind: &str) -> BindScope {
        BindScope::from_bound(&[bind.parse().unwrap()])
    }

    #[test]
    fn a_family_missing_on_an_interface_is_a_gap() {
        let ll_only = iface("eth0", &["fe80::1"]);
        assert_eq!(gap(&ll_only, &scope("0.0.0.0:9470")), Some(Gap::NoV4));
        assert_eq!(gap(&ll_only, &scope("[::]:9470")), None);
        let v4_only = iface("eth0", &["10.0.0.1"]);
        assert_eq!(gap(&v4_only, &scope("[::]:9470")), Some(Gap::NoV6));
        assert_eq!(gap(&v4_only, &scope("0.0.0.0:9470")), None);
        let dual =
            BindScope::from_bound(&["0.0.0.0:1".parse().unwrap(), "[::]:1".parse().unwrap()]);
        assert_eq!(gap(&ll_only, &dual), None);
        assert_eq!(gap(&v4_only, &dual), None);
        assert_eq!(gap(&iface("br0", &[]), &scope("0.0.0.0:1")), None);
        assert_eq!(
            gap(&ll_only, &scope("10.0.0.9:1")),
            None,
            "bound to one address"
        );
    }

    #[test]
    fn warned_once_per_change() {
        let mut log = GapLog::default();
        let s = scope("0.0.0.0:9470");
        let ll = iface("eth0", &["fe80::1"]);
        assert_eq!(log.check([&ll], &s), 1);
        assert_eq!(log.check([&ll], &s), 0, "same gap: no second warning");
        let fixed = iface("eth0", &["fe80::1", "10.0.0.1"]);
        assert_eq!(log.check([&fixed], &s), 0);
        assert_eq!(log.check([&ll], &s), 1, "the gap came back: warned again");
    }
}
