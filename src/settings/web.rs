//! The operator's page: where it listens, and whether that is exposed.

use std::net::SocketAddr;

use crate::config::RunArgs;

/// `--web-listen`, checked.
#[derive(Debug, Clone, Default)]
pub struct WebSettings {
    pub listen: Option<SocketAddr>,
    /// The flag or variable that set it, for messages.
    pub name: String,
}

impl WebSettings {
    pub fn from_args(args: &RunArgs) -> WebSettings {
        WebSettings {
            listen: args.web.web_listen,
            name: args.origins.name("web_listen"),
        }
    }

    /// A warning for an address beyond loopback: the page is read-only and shows no
    /// key, but it shows the formation (ids, addresses, topics, retained values) to
    /// everyone who can reach the address. The operator may mean it (a tablet on the
    /// LAN), so it is said, not refused.
    pub fn exposure_warning(&self) -> Option<String> {
        let addr = self.listen?;
        if addr.ip().is_loopback() {
            return None;
        }
        Some(format!(
            "{} {addr} is not a loopback address: everyone who can reach it sees this formation's page (endpoint ids, addresses, topics, retained values; no keys) without a password. Prefer 127.0.0.1 and `ssh -L`, or allow only the operator's device in the firewall",
            self.name
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn web(addr: Option<&str>) -> WebSettings {
        WebSettings {
            listen: addr.map(|a| a.parse().unwrap()),
            name: "--web-listen".into(),
        }
    }

    #[test]
    fn only_beyond_loopback_is_warned() {
        assert!(web(None).exposure_warning().is_none());
        assert!(web(Some("127.0.0.1:8470")).exposure_warning().is_none());
        assert!(web(Some("[::1]:8470")).exposure_warning().is_none());
        for a in ["0.0.0.0:8470", "10.77.0.1:8470", "[::]:8470"] {
            let w = web(Some(a)).exposure_warning().expect(a);
            assert!(w.contains("--web-listen") && w.contains("ssh -L"), "{w}");
        }
    }
}
