//! The dns mode's identity handshake: requests and answers are UDP datagrams that
//! anyone on the network can send.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = peat_sidecar::discovery::dns::wire::decode_request(data);
    let _ = peat_sidecar::discovery::dns::wire::decode_answer(data);
});
