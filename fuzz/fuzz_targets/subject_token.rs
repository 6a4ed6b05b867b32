//! Decoding and checking a subject token never panics.
#![no_main]

use obo_core::subject_token::{check, read_claims, Accepted, MAX_SUBJECT_TOKEN_BYTES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let _ = read_claims(token);
    let audiences = vec!["client".to_string(), "api://client".to_string()];
    let tenants = vec!["72f988bf-86f1-41af-91ab-2d7cd011db47".to_string()];
    let accepted = Accepted {
        audiences: Some(&audiences),
        issuers: None,
        tenants: Some(&tenants),
    };
    if check(token, 1_800_000_000, 60, &accepted).is_ok() {
        assert!(token.len() <= MAX_SUBJECT_TOKEN_BYTES);
    }
});
