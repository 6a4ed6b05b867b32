//! Reading a private key (`client_jwk`) never panics, whatever numbers its components hold: the
//! configuration is refused with a message instead. The input is five numbers, n, e, d, p and q,
//! each a two-byte big-endian length and that many bytes, made into a JWK.
#![no_main]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use obo_core::client_assertion::ClientKey;
use libfuzzer_sys::fuzz_target;

fn numbers(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while out.len() < 5 && data.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([data[0], data[1]])).min(data.len() - 2);
        out.push(&data[2..2 + len]);
        data = &data[2 + len..];
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let [n, e, d, p, q] = numbers(data)[..] else {
        return;
    };
    let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
    let jwk = format!(
        r#"{{"kty":"RSA","n":"{}","e":"{}","d":"{}","p":"{}","q":"{}"}}"#,
        b64(n),
        b64(e),
        b64(d),
        b64(p),
        b64(q)
    );
    if let Err(problem) = ClientKey::from_jwk(&jwk) {
        assert!(!problem.is_empty());
    }
});
