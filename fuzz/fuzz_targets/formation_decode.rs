//! The formation handshake frame decoder: bytes a stranger sends on a new connection.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = peat_sidecar::node::formation::decode(data);
});
