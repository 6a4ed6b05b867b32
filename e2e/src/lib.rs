//! The end-to-end harness, for the suite (`tests/`) and the programs (`src/bin/`): the real Envoy
//! with the real `.wasm`, a mock Entra ID token endpoint, a recording upstream and a small HTTP
//! client. Every process and server here stops when its value is dropped, so a failing test
//! leaves nothing running.

pub mod callgrind;
pub mod client;
pub mod client_key;
pub mod connect_proxy;
pub mod envoy;
pub mod grpc_client;
pub mod mock_idp;
pub mod raw_idp;
pub mod server;
pub mod stack;
pub mod tls_idp;
pub mod upstream;
pub mod workload_identity;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use std::time::{SystemTime, UNIX_EPOCH};

pub fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/../fixtures/entra/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {path}: {e}"))
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// An (unsigned) Entra-style JWT for `user` that expires at `exp`.
pub fn subject_token(user: &str, exp: u64) -> String {
    unsigned_jwt(&format!(
        r#"{{"aud":"{}","iss":"https://login.example/test-tenant/v2.0","oid":"{user}","exp":{exp}}}"#,
        mock_idp::CLIENT_ID
    ))
}

/// A subject token for `user` of the tenant `tid`, valid for an hour.
pub fn tenant_user_token(user: &str, tid: &str) -> String {
    unsigned_jwt(&format!(
        r#"{{"aud":"{}","iss":"https://login.example/{tid}/v2.0","tid":"{tid}","oid":"{user}","exp":{}}}"#,
        mock_idp::CLIENT_ID,
        now() + 3600
    ))
}

fn unsigned_jwt(claims: &str) -> String {
    jwt_with_signature(claims, "c2lnbmF0dXJlLW9mLXt7dXNlcn19")
}

fn jwt_with_signature(claims: &str, signature: &str) -> String {
    let header = URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT","alg":"RS256","kid":"test"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims);
    format!("{header}.{payload}.{signature}")
}

/// A subject token for `user` valid for an hour.
pub fn user_token(user: &str) -> String {
    subject_token(user, now() + 3600)
}

/// A subject token for `user` valid for an hour, of about `bytes` bytes as Entra ID's are (1.5 to
/// 2.5 KB: a few dozen claims and a 342-character RS256 signature), its claims padded with `name`.
pub fn user_token_of_size(user: &str, bytes: usize) -> String {
    let signature = "s".repeat(342);
    let claims = |name: &str| {
        format!(
            r#"{{"aud":"{}","iss":"https://login.example/test-tenant/v2.0","oid":"{user}","exp":{},"name":"{name}"}}"#,
            mock_idp::CLIENT_ID,
            now() + 3600
        )
    };
    let bare = jwt_with_signature(&claims(""), &signature).len();
    // base64 makes 4 bytes of 3.
    let name = "n".repeat(bytes.saturating_sub(bare) * 3 / 4);
    jwt_with_signature(&claims(&name), &signature)
}

/// A number from the environment, or `default` (for the load runs' knobs).
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
