//! `make demo-key`: a throw-away RSA private key as a JWK, for the docker-compose demo's
//! `private_key_jwt` (printed as `OBO_DEMO_JWK='…'`, the line docker compose reads from `.env`).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rsa::traits::{PrivateKeyParts, PublicKeyParts};
use rsa::RsaPrivateKey;

fn main() {
    let key = RsaPrivateKey::new(&mut rand_core::OsRng, 2048).expect("an RSA key");
    let b64 = |n: &rsa::BigUint| URL_SAFE_NO_PAD.encode(n.to_bytes_be());
    let jwk = serde_json::json!({
        "kty": "RSA",
        "kid": "obo-demo",
        "use": "sig",
        "alg": "RS256",
        "n": b64(key.n()),
        "e": b64(key.e()),
        "d": b64(key.d()),
        "p": b64(&key.primes()[0]),
        "q": b64(&key.primes()[1]),
    });
    println!("OBO_DEMO_JWK='{jwk}'");
}
