//! Member certificates and revocations: the bytes a peer presents in the formation
//! check (version 3), and the text of the files an operator hands a node.
#![no_main]
use libfuzzer_sys::fuzz_target;
use peat_sidecar::trust::{dearmor, AuthorityKey, MemberCert, Revocation, CERT_LABEL};

fuzz_target!(|data: &[u8]| {
    // A valid key (RFC 8032's first test key): the body is decoded before the signature
    // is checked, so a forged one reaches the decoder and must fail, never panic.
    let Ok(key) =
        AuthorityKey::parse("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    else {
        return;
    };
    let _ = MemberCert::decode_verified(data, &key);
    let _ = Revocation::decode_verified(data, &key);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = AuthorityKey::parse(text);
        if let Ok(bytes) = dearmor(CERT_LABEL, text) {
            let _ = MemberCert::decode_verified(&bytes, &key);
        }
    }
});
