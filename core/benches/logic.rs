//! The pure logic on the request path, without Envoy: key derivation, the slot lookup, reading a
//! token response, the bearer token and claims. `cargo bench --bench logic` (part of `make bench`).
//! A plain timing loop with `black_box`: enough to see a regression, with no extra dependency.

use std::hint::black_box;
use std::time::Instant;

use obo_core::cache_key::CacheKey;
use obo_core::client_assertion::{self, private_jwk, AssertionSettings, ClientKey};
use obo_core::front_cache::FrontCache;
use obo_core::subject_token::{bearer_token, read_claims};
use obo_core::token_response::read_answer;

fn bench(name: &str, mut f: impl FnMut()) {
    // Warm up, then time enough iterations to take about half a second.
    for _ in 0..1_000 {
        f();
    }
    let mut iterations = 1_000u64;
    loop {
        let start = Instant::now();
        for _ in 0..iterations {
            f();
        }
        let elapsed = start.elapsed();
        if elapsed.as_millis() >= 500 {
            println!(
                "{name:<40} {:>10.0} ns/iter",
                elapsed.as_nanos() as f64 / iterations as f64
            );
            return;
        }
        iterations *= 4;
    }
}

fn main() {
    let subject = format!(
        "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.{}.{}",
        "e".repeat(1200),
        "s".repeat(342)
    );
    let jwt = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJjbGllbnQiLCJleHAiOjE4MDAwMDAwMDAsIm9pZCI6InUifQ.c2ln";
    let header = format!("Bearer {subject}");
    let success = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/entra/obo-success.json"
    ))
    .unwrap_or_else(|_| br#"{"access_token":"abc","expires_in":3599}"#.to_vec());
    let error = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/entra/error-invalid-grant-expired.json"
    ))
    .unwrap_or_else(|_| br#"{"error":"invalid_grant"}"#.to_vec());

    bench("cache key (SHA-256, 1.6 KB subject token)", || {
        black_box(CacheKey::derive(
            black_box("https://login.microsoftonline.com/t/oauth2/v2.0/token"),
            black_box("client"),
            black_box("on_behalf_of"),
            black_box("api://prod.team.api/.default"),
            black_box(&subject),
        ));
    });
    let key = CacheKey::derive("e", "c", "g", "s", &subject);
    bench("slot index", || {
        black_box(black_box(&key).slot(black_box(10_000)));
    });
    let mut front = FrontCache::new(1_000);
    let print = front.fingerprint(0, subject.as_bytes());
    front.put_token(print, subject.as_bytes(), key, "t", (u64::MAX, u64::MAX), 0);
    bench("front cache fingerprint (1.6 KB subject token)", || {
        black_box(front.fingerprint(black_box(0), black_box(subject.as_bytes())));
    });
    let same_subject = subject.clone();
    bench("front cache lookup (the token compared)", || {
        black_box(front.get(
            black_box(&print),
            black_box(same_subject.as_bytes()),
            black_box(1),
        ));
    });
    bench("bearer token from Authorization", || {
        black_box(bearer_token(black_box(&header)));
    });
    bench("claims of a JWT", || {
        let _ = black_box(read_claims(black_box(jwt)));
    });
    bench("token response, success", || {
        let _ = black_box(read_answer(Some(200), None, black_box(&success)));
    });
    bench("token response, invalid_grant", || {
        let _ = black_box(read_answer(Some(400), None, black_box(&error)));
    });
    // A token request with private_key_jwt signs a fresh assertion (RS256, 2048-bit key).
    let key = rsa::PrivateKey::new(&mut getrandom::SysRng, 2048).expect("an RSA key");
    let settings = AssertionSettings {
        key: ClientKey::from_jwk(&private_jwk(&key, serde_json::json!({"kid": "bench"})))
            .expect("the key as a JWK"),
        alg: Default::default(),
        audience: "https://login.microsoftonline.com/t/oauth2/v2.0/token".into(),
        lifetime_s: 60,
        reuse_s: 0,
    };
    bench("client assertion, RS256 with a 2048-bit key", || {
        let _ = black_box(client_assertion::sign(&settings, "client", 1_800_000_000));
    });
}
