//! `--peer ENDPOINT_ID@HOST:PORT` and ConnectPeer addresses.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = peat_sidecar::config::parse_peer_spec(s);
    }
});
