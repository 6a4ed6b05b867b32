//! A private key for the tests, made once, and its JWK.

use std::sync::OnceLock;

use rsa::PrivateKey;

pub fn jwk_of(key: &PrivateKey, extra: serde_json::Value) -> String {
    let mut with_kid = serde_json::json!({"kid": "key-1"});
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        with_kid[k] = v;
    }
    crate::client_assertion::private_jwk(key, with_kid)
}

pub fn key() -> &'static PrivateKey {
    static KEY: OnceLock<PrivateKey> = OnceLock::new();
    KEY.get_or_init(|| PrivateKey::new(&mut getrandom::SysRng, 2048).unwrap())
}

pub fn jwk() -> String {
    jwk_of(key(), serde_json::json!({}))
}
