//! The application's private key for `private_key_jwt` tests: made once per test process, as the
//! JWK the platform would put in `AZURE_APP_JWK`, with the public half for the mock IdP.

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rsa::traits::{PrivateKeyParts, PublicKeyParts};
use rsa::{RsaPrivateKey, RsaPublicKey};
use serde_json::json;

pub const KID: &str = "test-key-1";

pub struct ClientKey {
    pub public: RsaPublicKey,
    /// The private key as a JWK (JSON text).
    pub jwk: String,
}

pub fn client_key() -> &'static ClientKey {
    static KEY: OnceLock<ClientKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let private = RsaPrivateKey::new(&mut rand_core::OsRng, 2048).expect("RSA key");
        let b64 = |n: &rsa::BigUint| URL_SAFE_NO_PAD.encode(n.to_bytes_be());
        let primes = private.primes();
        let jwk = json!({
            "kty": "RSA",
            "kid": KID,
            "use": "sig",
            "alg": "RS256",
            "n": b64(private.n()),
            "e": b64(private.e()),
            "d": b64(private.d()),
            "p": b64(&primes[0]),
            "q": b64(&primes[1]),
        });
        ClientKey {
            public: private.to_public_key(),
            jwk: jwk.to_string(),
        }
    })
}
