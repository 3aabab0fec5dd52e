//! The gossip table message decoder: bytes any formation member sends.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A small cap too, so that the "too many entries" path is reached.
    let _ = peat_sidecar::discovery::gossip::wire::decode(data, 1024);
    let _ = peat_sidecar::discovery::gossip::wire::decode(data, 2);
});
