//! Reading a token endpoint's answer never panics, and a token it accepts can go into a header.
#![no_main]

use obo_core::error_reply::{reply_for, Refusal};
use obo_core::token_response::{read_answer, MAX_ACCESS_TOKEN_BYTES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // First two bytes: the status (or, for 0, none at all); the rest: the body.
    let (status, body) = match data {
        [hi, lo, rest @ ..] => (u16::from_be_bytes([*hi, *lo]), rest),
        _ => return,
    };
    let status = (status != 0).then_some(status % 600);
    match read_answer(status, Some("60"), body) {
        Ok(token) => {
            assert!(!token.access_token.is_empty());
            assert!(token.access_token.len() <= MAX_ACCESS_TOKEN_BYTES);
            assert!(token.access_token.bytes().all(|b| b.is_ascii_graphic()));
        }
        Err(failure) => {
            let reply = reply_for(&Refusal::Exchange(failure));
            assert!((400..600).contains(&reply.status));
            for (_, value) in &reply.headers {
                assert!(value.bytes().all(|b| b == b' ' || b.is_ascii_graphic()), "{value:?}");
            }
        }
    }
});
