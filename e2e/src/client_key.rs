//! The application's private key for `private_key_jwt` tests: made once per test process, as the
//! JWK the platform would put in `AZURE_APP_JWK`, with the public half for the mock IdP.

use std::sync::OnceLock;

use obo_core::client_assertion::private_jwk;
use rsa::{PrivateKey, PublicKey};
use serde_json::json;

pub const KID: &str = "test-key-1";

pub struct ClientKey {
    pub public: PublicKey,
    /// The private key as a JWK (JSON text).
    pub jwk: String,
}

pub fn client_key() -> &'static ClientKey {
    static KEY: OnceLock<ClientKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let private = PrivateKey::new(&mut getrandom::SysRng, 2048).expect("RSA key");
        let jwk = private_jwk(&private, json!({"kid": KID, "use": "sig", "alg": "RS256"}));
        ClientKey {
            public: private.to_public_key(),
            jwk,
        }
    })
}
