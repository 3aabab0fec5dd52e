//! mDNS TXT record validation. The input is split like a TXT record's strings: NUL
//! separates the strings, the first `=` separates key and value, and a string without
//! `=` is a key without value (RFC 6763 6.4); keys must be text (mdns-sd gives &str).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut props: Vec<(&str, Option<&[u8]>)> = Vec::new();
    for s in data.split(|b| *b == 0) {
        let (k, v) = match s.iter().position(|b| *b == b'=') {
            Some(i) => (&s[..i], Some(&s[i + 1..])),
            None => (s, None),
        };
        if let Ok(k) = std::str::from_utf8(k) {
            props.push((k, v));
        }
    }
    let _ = peat_sidecar::discovery::mdns::txt::parse_txt(props.iter().copied());
});
