//! IPv6 zone (scope) ids in socket addresses: `[fe80::1%eth0]:9470` and
//! `[fe80::1%2]:9470`. A link-local address means nothing without the interface it
//! lives on, so users write the interface, by name or by index; the table shows it by
//! name, as `ip -6 addr` does.

use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};

/// `[ADDR%ZONE]:PORT` with a zone that is an interface name, resolved on this host.
/// `None`: not of that shape (plain addresses and numeric zones are std's to parse).
pub fn parse_named_zone(s: &str) -> Option<Result<SocketAddr, String>> {
    let (ip, zone, port) = match split_named_zone(s)? {
        Ok(parts) => parts,
        Err(e) => return Some(Err(e)),
    };
    Some(
        zone_index(zone)
            .map(|index| SocketAddr::V6(SocketAddrV6::new(ip, port, 0, index)))
            .map_err(|e| format!("`{zone}` in `{s}`: {e}")),
    )
}

/// The parts of `[ADDR%NAME]:PORT`, the name checked for shape only: the CLI client
/// passes it on, and the sidecar, whose host it names, looks it up.
pub fn split_named_zone(s: &str) -> Option<Result<(Ipv6Addr, &str, u16), String>> {
    let rest = s.strip_prefix('[')?;
    let (inside, port) = rest.split_once("]:")?;
    let (ip, zone) = inside.split_once('%')?;
    if zone.is_empty() || zone.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let ip: Ipv6Addr = ip.parse().ok()?;
    let Ok(port) = port.parse::<u16>() else {
        return Some(Err(format!("`{port}` in `{s}` is not a port number")));
    };
    if !is_v6_link_local(IpAddr::V6(ip)) {
        return Some(Err(format!(
            "{s}: a scope (%IFACE) belongs to link-local fe80:: addresses only; drop it"
        )));
    }
    if zone.len() > 15 || zone.contains(['/', ' ', '%']) {
        return Some(Err(format!("`{zone}` in `{s}` is not an interface name")));
    }
    Some(Ok((ip, zone, port)))
}

/// The index of the interface named `name` on this host.
pub fn zone_index(name: &str) -> Result<u32, String> {
    nix::net::if_::if_nametoindex(name)
        .map_err(|_| "no such interface on this host (see `ip link`)".to_string())
}

/// A scope on an address that is not link-local is ignored by the kernel and by the
/// QUIC library; saying so beats dialling something else than the user meant.
pub fn check_scope(addr: &SocketAddr) -> Result<(), String> {
    match addr {
        SocketAddr::V6(v6) if v6.scope_id() != 0 && !is_v6_link_local(IpAddr::V6(*v6.ip())) => {
            Err(format!(
                "{addr}: a scope (%IFACE) belongs to link-local fe80:: addresses only; drop it"
            ))
        }
        _ => Ok(()),
    }
}

pub fn is_v6_link_local(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80)
}

/// An address for people: a link-local one with its interface's name when this host
/// has it (`[fe80::1%eth0]:9470`), else with the index (std's form).
pub fn display(addr: &SocketAddr) -> String {
    match addr {
        SocketAddr::V6(v6) if v6.scope_id() != 0 => {
            // nix answers an index no interface has with Ok(""), not an error.
            match nix::net::if_::if_indextoname(v6.scope_id()) {
                Ok(name) if !name.is_empty() => {
                    format!("[{}%{}]:{}", v6.ip(), name.to_string_lossy(), v6.port())
                }
                _ => addr.to_string(),
            }
        }
        _ => addr.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_zone_resolves_on_this_host() {
        // `lo` exists everywhere, with index 1 on Linux.
        let a = parse_named_zone("[fe80::1%lo]:9470").unwrap().unwrap();
        let SocketAddr::V6(v6) = a else {
            panic!("v6 expected")
        };
        assert_eq!(v6.scope_id(), zone_index("lo").unwrap());
        assert_eq!(v6.port(), 9470);
        assert_eq!(display(&a), "[fe80::1%lo]:9470");
    }

    #[test]
    fn other_shapes_are_left_to_std() {
        assert!(parse_named_zone("[fe80::1%2]:9470").is_none());
        assert!(parse_named_zone("[fe80::1]:9470").is_none());
        assert!(parse_named_zone("10.0.0.1:9470").is_none());
        assert!(parse_named_zone("host:1").is_none());
    }

    #[test]
    fn unknown_interface_and_bad_port_say_so() {
        let e = parse_named_zone("[fe80::1%nosuch0]:9470")
            .unwrap()
            .unwrap_err();
        assert!(
            e.contains("no such interface") && e.contains("nosuch0"),
            "{e}"
        );
        let e = parse_named_zone("[fe80::1%lo]:x").unwrap().unwrap_err();
        assert!(e.contains("not a port"), "{e}");
        assert!(parse_named_zone("[fe80::1%a/b]:1").unwrap().is_err());
        assert!(parse_named_zone("[fd00::1%lo]:1").unwrap().is_err());
        // The client checks the shape only: the name is the sidecar host's.
        let (_, zone, port) = split_named_zone("[fe80::1%nosuch0]:9").unwrap().unwrap();
        assert_eq!((zone, port), ("nosuch0", 9));
    }

    #[test]
    fn scope_only_on_link_local() {
        assert!(check_scope(&"[fe80::1%2]:1".parse().unwrap()).is_ok());
        assert!(check_scope(&"[fd00::1]:1".parse().unwrap()).is_ok());
        let e = check_scope(&"[fd00::1%2]:1".parse().unwrap()).unwrap_err();
        assert!(e.contains("link-local"), "{e}");
    }

    #[test]
    fn display_keeps_unscoped_and_unknown_indexes() {
        let plain: SocketAddr = "[fd00::1]:9470".parse().unwrap();
        assert_eq!(display(&plain), "[fd00::1]:9470");
        // An index no interface has: shown as a number.
        let odd = SocketAddr::V6(SocketAddrV6::new("fe80::1".parse().unwrap(), 1, 0, 999_999));
        assert_eq!(display(&odd), "[fe80::1%999999]:1");
    }
}
