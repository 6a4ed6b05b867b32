//! `make demo-key`: a throw-away RSA private key as a JWK, for the docker-compose demo's
//! `private_key_jwt` (printed as `OBO_DEMO_JWK='…'`, the line docker compose reads from `.env`).

use obo_core::client_assertion::private_jwk;
use rsa::PrivateKey;

fn main() {
    let key = PrivateKey::new(&mut getrandom::SysRng, 2048).expect("an RSA key");
    let jwk = private_jwk(
        &key,
        serde_json::json!({"kid": "obo-demo", "use": "sig", "alg": "RS256"}),
    );
    println!("OBO_DEMO_JWK='{jwk}'");
}
