//! `--web-listen`: the operator's page (src/api/web), in its own flattened struct so
//! that its flag stays apart from the long [`super::RunArgs`].

use std::net::SocketAddr;

use clap::Args;

/// Flags of the operator's web page.
#[derive(Debug, Args, Clone, Default)]
pub struct WebArgs {
    /// Serve the operator's page (formation graph, peers, topics, retained keys, live
    /// events; read-only) on http://ADDR/, for example tcp://127.0.0.1:8470. Off unless
    /// given. Keep it on loopback and reach it through `ssh -L`; another address shows
    /// the formation to everyone who can reach it.
    #[arg(long, env = "PEAT_SIDECAR_WEB_LISTEN", value_name = "ADDR", value_parser = parse_web_listen, help_heading = "Operations")]
    pub web_listen: Option<SocketAddr>,
}

/// `tcp://IP:PORT` or `IP:PORT`.
pub(crate) fn parse_web_listen(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    let addr = s.strip_prefix("tcp://").unwrap_or(s);
    addr.parse().map_err(|_| {
        format!("`{s}` is not tcp://IP:PORT; expected for example tcp://127.0.0.1:8470")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn web_listen_forms() {
        let a: SocketAddr = "127.0.0.1:8470".parse().unwrap();
        assert_eq!(parse_web_listen("tcp://127.0.0.1:8470"), Ok(a));
        assert_eq!(parse_web_listen(" 127.0.0.1:8470 "), Ok(a));
        assert!(parse_web_listen("[::1]:8470").unwrap().ip().is_loopback());
        let e = parse_web_listen("localhost").unwrap_err();
        assert!(e.contains("tcp://127.0.0.1:8470"), "{e}");
    }
}
