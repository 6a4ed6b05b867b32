//! Taking the bearer token out of an `Authorization` value never panics, and what it takes is a
//! non-empty run of visible ASCII inside the value.
#![no_main]

use obo_core::subject_token::bearer_token;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let value = String::from_utf8_lossy(data);
    if let Some(token) = bearer_token(&value) {
        assert!(!token.is_empty());
        assert!(token.bytes().all(|b| b.is_ascii_graphic()));
        assert!(value.contains(token));
    }
});
