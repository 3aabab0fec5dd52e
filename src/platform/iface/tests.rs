//! Unit tests of the interface filter and snapshot diffing.

use super::*;

fn iface(name: &str, flags: IfFlags, addrs: &[&str]) -> InterfaceInfo {
    InterfaceInfo {
        name: name.into(),
        index: 3,
        flags,
        addrs: addrs
            .iter()
            .map(|a| {
                let (ip, len) = a.split_once('/').unwrap();
                IfAddr {
                    ip: ip.parse().unwrap(),
                    prefix_len: len.parse().unwrap(),
                }
            })
            .collect(),
    }
}

const ETH: IfFlags = IfFlags {
    up: true,
    running: true,
    multicast: true,
    loopback: false,
    point_to_point: false,
};

fn snap(list: Vec<InterfaceInfo>) -> Snapshot {
    list.into_iter().map(|i| (i.name.clone(), i)).collect()
}

#[test]
fn diff_reports_added_changed_removed() {
    let a = snap(vec![
        iface("eth0", ETH, &["10.0.0.1/24"]),
        iface("eth1", ETH, &["10.1.0.1/24"]),
    ]);
    let b = snap(vec![
        iface("eth0", ETH, &["10.0.0.1/24", "fd00::1/64"]),
        iface("wlan0", ETH, &[]),
    ]);
    let d = diff(&a, &b);
    assert_eq!(d.len(), 3);
    assert!(matches!(&d[0], IfaceChange::Changed { new, .. } if new.name == "eth0"));
    assert!(matches!(&d[1], IfaceChange::Removed(i) if i.name == "eth1"));
    assert!(matches!(&d[2], IfaceChange::Added(i) if i.name == "wlan0"));
    assert!(diff(&b, &b).is_empty());
    let mut down = b.clone();
    down.get_mut("wlan0").unwrap().flags.running = false;
    assert_eq!(diff(&b, &down).len(), 1);
}

#[test]
fn debounce_settles_and_caps() {
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    let mut d = Debouncer::new(ms(200), ms(1000));
    assert_eq!(d.deadline(), None);
    assert!(!d.fire(t0));
    d.event(t0);
    assert_eq!(d.deadline(), Some(t0 + ms(200)));
    assert!(!d.fire(t0 + ms(100)));
    d.event(t0 + ms(150));
    assert_eq!(d.deadline(), Some(t0 + ms(350)));
    // An endless stream, one message every 100 ms: the cap wins at 1 s.
    for i in 2..20 {
        d.event(t0 + ms(100 * i));
    }
    assert_eq!(d.deadline(), Some(t0 + ms(1000)));
    assert!(d.fire(t0 + ms(1000)));
    assert_eq!(d.deadline(), None);
    d.event(t0 + ms(1900));
    assert_eq!(d.deadline(), Some(t0 + ms(2100)));
}

#[test]
fn filter_globs_and_deny() {
    let f = InterfaceFilter::parse(
        &[
            "wlan*".into(),
            "eth[01]".into(),
            "!wlan9".into(),
            " ".into(),
        ],
        false,
    )
    .unwrap();
    assert!(f.name_allowed("wlan0"));
    assert!(f.name_allowed("eth1"));
    assert!(!f.name_allowed("eth2"));
    assert!(!f.name_allowed("wlan9"));
    let deny_only = InterfaceFilter::parse(&["!docker*".into(), "!veth*".into()], false).unwrap();
    assert!(deny_only.name_allowed("eth0"));
    assert!(!deny_only.name_allowed("docker0"));
    assert!(InterfaceFilter::parse(&["wlan[".into()], false).is_err());
    assert!(InterfaceFilter::parse(&["!".into()], false).is_err());
    assert!(InterfaceFilter::parse(&["x".repeat(100)], false).is_err());
    let all = InterfaceFilter::parse(&[], false).unwrap();
    assert!(all.name_allowed("anything"));
}

#[test]
fn eligibility_follows_flags() {
    let f = InterfaceFilter::parse(&[], false).unwrap();
    assert!(f.eligible(&iface("eth0", ETH, &["10.0.0.1/24"])));
    let mut down = ETH;
    down.up = false;
    assert!(!f.eligible(&iface("eth0", down, &[])));
    let mut no_carrier = ETH;
    no_carrier.running = false;
    assert!(!f.eligible(&iface("eth0", no_carrier, &[])));
    let mut p2p = ETH;
    p2p.point_to_point = true;
    assert!(!f.eligible(&iface("wg0", p2p, &[])));
    let mut nomc = ETH;
    nomc.multicast = false;
    assert!(!f.eligible(&iface("eth0", nomc, &[])));
    let lo = IfFlags {
        loopback: true,
        multicast: false,
        ..ETH
    };
    assert!(!f.eligible(&iface("lo", lo, &["127.0.0.1/8"])));
    let with_lo = InterfaceFilter::parse(&[], true).unwrap();
    assert!(with_lo.eligible(&iface("lo", lo, &["127.0.0.1/8"])));
    let only_eth = InterfaceFilter::parse(&["eth*".into()], true).unwrap();
    assert!(!only_eth.eligible(&iface("lo", lo, &[])));
}

#[test]
fn snapshot_of_this_host_has_loopback() {
    let s = snapshot().unwrap();
    let lo = s
        .values()
        .find(|i| i.flags.loopback)
        .expect("a loopback interface");
    assert!(lo.addrs.iter().any(|a| a.ip.is_loopback()));
    assert!(lo.index > 0);
}
