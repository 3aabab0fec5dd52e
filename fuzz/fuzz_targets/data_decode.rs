//! The data plane's frame decoder: bytes any formation member sends on a data stream.
#![no_main]
use libfuzzer_sys::fuzz_target;
use peat_sidecar::data::wire::{decode, FrameLimits};

fuzz_target!(|data: &[u8]| {
    // A small payload cap too, so that the size checks are reached.
    for max_message_bytes in [262_144, 16] {
        let _ = decode(data, &FrameLimits { max_message_bytes });
    }
});
