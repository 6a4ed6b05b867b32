//! `private_key_jwt`: the application's RSA key, read once from a JWK, signs `client_assertion`s.
//! The key never leaves this module and never shows in `Debug`.

use std::fmt;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use getrandom::SysRng;
use rsa::signature::{RandomizedSigner, SignatureEncoding};
use rsa::{BoxedUint, PrivateKey};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

pub const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Shorter keys are refused: Entra ID requires at least 2048 bits.
const MIN_KEY_BITS: usize = 2048;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SigningAlg {
    #[default]
    Rs256,
    Ps256,
}

impl crate::json::FromJson for SigningAlg {
    const EXPECTED: &'static str = "`RS256` or `PS256`";
    fn from_json(value: &Value) -> Option<Self> {
        [SigningAlg::Rs256, SigningAlg::Ps256]
            .into_iter()
            .find(|alg| value.as_str() == Some(alg.name()))
    }
}

impl SigningAlg {
    fn name(self) -> &'static str {
        match self {
            SigningAlg::Rs256 => "RS256",
            SigningAlg::Ps256 => "PS256",
        }
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct ClientKey {
    key: PrivateKey,
    kid: Option<String>,
    /// `x5t#S256`: the SHA-256 thumbprint of the JWK's first `x5c` certificate.
    x5t_s256: Option<String>,
}

impl fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientKey(kid={:?}, <redacted>)", self.kid)
    }
}

const NOT_A_JWK: &str = "is not a JWK (JSON with kty, n, e, d, p and q)";

fn bytes(field: &str, b64: &str) -> Result<Vec<u8>, String> {
    URL_SAFE_NO_PAD
        .decode(b64.trim_end_matches('='))
        .map_err(|_| format!("its {field} is not base64url"))
}

/// A key component as a number `bits` wide: the modulus's width for `n`, `d`, `p` and `q`, as
/// `rsa` itself reads a PKCS#1 key. A component wider than that is not part of a consistent key.
fn big(be: &[u8], bits: usize) -> Result<BoxedUint, String> {
    let bits = u32::try_from(bits.max(8)).map_err(|_| "is too large".to_string())?;
    BoxedUint::from_be_slice(be, bits).map_err(|_| "is not a consistent RSA key".to_string())
}

impl ClientKey {
    /// Reads an RSA private key from a JWK (JSON text). The problem never quotes the key.
    pub fn from_jwk(json: &str) -> Result<ClientKey, String> {
        Self::from_jwk_value(crate::json::parse(json).map_err(|_| NOT_A_JWK.to_string())?)
    }

    pub fn from_jwk_value(jwk: Value) -> Result<ClientKey, String> {
        // One message for every malformed JWK: every value here is key material, never quoted.
        let not_a_jwk = || NOT_A_JWK.to_string();
        let Value::Object(jwk) = jwk else {
            return Err(not_a_jwk());
        };
        let member = |name: &str| match jwk.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(not_a_jwk()),
        };
        // An EC or oct key (no `n`) is told what kind of key it must be.
        match member("kty")? {
            Some("RSA") => {}
            Some(_) => return Err("must be an RSA key (kty RSA)".into()),
            None => return Err(not_a_jwk()),
        }
        let (Some(n), Some(e)) = (member("n")?, member("e")?) else {
            return Err(not_a_jwk());
        };
        let (d, p, q, kid) = (member("d")?, member("p")?, member("q")?, member("kid")?);
        let first_x5c = match jwk.get("x5c") {
            None => None,
            Some(Value::Array(certs)) if certs.iter().all(Value::is_string) => {
                certs.first().and_then(Value::as_str)
            }
            Some(_) => return Err(not_a_jwk()),
        };
        let (Some(d), Some(p), Some(q)) = (d, p, q) else {
            return Err("must be a private key with d, p and q".into());
        };
        let (n, e) = (bytes("n", n)?, bytes("e", e)?);
        let (d, p, q) = (bytes("d", d)?, bytes("p", p)?, bytes("q", q)?);
        if bit_width(&n) < MIN_KEY_BITS {
            return Err(format!("must be at least {MIN_KEY_BITS} bits"));
        }
        // `n` as written, in whole bytes, so that `d`, `p` and `q` fit the same width.
        let bits = n.len() * 8;
        // `from_components` checks the key (p·q = n, d·e ≡ 1 mod λ(n)) and precomputes the CRT.
        let key = PrivateKey::from_components(
            big(&n, bits)?,
            big(&e, e.len() * 8)?,
            big(&d, bits)?,
            vec![big(&p, bits)?, big(&q, bits)?],
        )
        .map_err(|_| "is not a consistent RSA key".to_string())?;
        let x5t_s256 = match first_x5c {
            None => None,
            Some(cert) => {
                let der = STANDARD
                    .decode(cert)
                    .map_err(|_| "has an x5c certificate that is not base64".to_string())?;
                Some(URL_SAFE_NO_PAD.encode(Sha256::digest(der)))
            }
        };
        Ok(ClientKey {
            key,
            kid: kid.filter(|k| !k.is_empty()).map(str::to_string),
            x5t_s256,
        })
    }
}

fn bit_width(be: &[u8]) -> usize {
    match be.iter().position(|&b| b != 0) {
        Some(i) => (be.len() - i) * 8 - be[i].leading_zeros() as usize,
        None => 0,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssertionSettings {
    pub key: ClientKey,
    pub alg: SigningAlg,
    /// The `aud` claim: the token endpoint unless configured (NAIS's sidecar uses the issuer).
    pub audience: String,
    pub lifetime_s: u64,
    /// How long after signing an assertion is sent again; 0: a new one for every token request.
    pub reuse_s: u64,
}

#[derive(Serialize)]
struct Header<'a> {
    alg: &'a str,
    typ: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    kid: Option<&'a str>,
    #[serde(rename = "x5t#S256", skip_serializing_if = "Option::is_none")]
    x5t_s256: Option<&'a str>,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    jti: &'a str,
    iat: u64,
    nbf: u64,
    exp: u64,
}

/// A fresh signed assertion for `client_id` at `now`: a new random `jti` every time.
pub fn sign(settings: &AssertionSettings, client_id: &str, now: u64) -> Result<String, String> {
    let mut jti = [0u8; 16];
    getrandom::fill(&mut jti).map_err(|_| "no randomness for the assertion's jti".to_string())?;
    let jti = URL_SAFE_NO_PAD.encode(jti);
    let header = Header {
        alg: settings.alg.name(),
        typ: "JWT",
        kid: settings.key.kid.as_deref(),
        x5t_s256: settings.key.x5t_s256.as_deref(),
    };
    let claims = Claims {
        iss: client_id,
        sub: client_id,
        aud: &settings.audience,
        jti: &jti,
        iat: now,
        nbf: now,
        exp: now.saturating_add(settings.lifetime_s),
    };
    let signing_input = format!("{}.{}", b64_json(&header)?, b64_json(&claims)?);
    let key = settings.key.key.clone();
    // Randomized (blinded) signing: the key's timing does not depend on what is signed.
    let signature = match settings.alg {
        SigningAlg::Rs256 => rsa::pkcs1v15::SigningKey::<Sha256>::new(key)
            .try_sign_with_rng(&mut SysRng, signing_input.as_bytes())
            .map(|s| s.to_vec()),
        SigningAlg::Ps256 => rsa::pss::SigningKey::<Sha256>::new(key)
            .try_sign_with_rng(&mut SysRng, signing_input.as_bytes())
            .map(|s| s.to_vec()),
    }
    .map_err(|_| "the assertion could not be signed".to_string())?;
    Ok(format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature)
    ))
}

/// Signing takes a worker about 6 ms, its other requests waiting, and Entra ID accepts an assertion
/// until its `exp`: one signature serves a few seconds' token requests (SECURITY.md, Private keys).
#[derive(Default)]
pub struct LastAssertion {
    last: Option<Signed>,
    signatures: u64,
}

struct Signed {
    jwt: String,
    /// Sent again before this second (`reuse_s` after signing)...
    reuse_until: u64,
    /// ...if the token endpoint will have it before its `exp`.
    exp: u64,
}

impl LastAssertion {
    /// The last one while reusable and still valid at `arrive_by`; else a newly signed one.
    pub fn for_request(
        &mut self,
        settings: &AssertionSettings,
        client_id: &str,
        now: u64,
        arrive_by: u64,
    ) -> Result<&str, String> {
        let signed = match self.last.take() {
            Some(last) if now < last.reuse_until && arrive_by < last.exp => last,
            _ => {
                let jwt = sign(settings, client_id, now)?;
                self.signatures += 1;
                Signed {
                    jwt,
                    reuse_until: now.saturating_add(settings.reuse_s),
                    exp: now.saturating_add(settings.lifetime_s),
                }
            }
        };
        Ok(&self.last.insert(signed).jwt)
    }

    /// Signs anew next time: the token endpoint refused the client (`invalid_client`).
    pub fn forget(&mut self) {
        self.last = None;
    }

    pub fn signatures(&self) -> u64 {
        self.signatures
    }
}

fn b64_json<T: Serialize>(part: &T) -> Result<String, String> {
    serde_json::to_vec(part)
        .map(|json| URL_SAFE_NO_PAD.encode(json))
        .map_err(|_| "the assertion could not be encoded".to_string())
}

/// `key` as a private JWK, with `extra`'s fields: for throw-away keys (demo, benchmarks, tests).
pub fn private_jwk(key: &PrivateKey, extra: serde_json::Value) -> String {
    use rsa::traits::{PrivateKeyParts, PublicKeyParts};
    let b64 = |n: &BoxedUint| URL_SAFE_NO_PAD.encode(n.to_be_bytes_trimmed_vartime());
    let mut jwk = serde_json::json!({
        "kty": "RSA",
        "n": b64(key.n().as_ref()), "e": b64(key.e()), "d": b64(key.d()),
        "p": b64(&key.primes()[0]), "q": b64(&key.primes()[1]),
    });
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        jwk[k] = v;
    }
    jwk.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::test_key;
    use rsa::signature::Verifier;
    use serde_json::Value;

    fn settings(alg: SigningAlg, jwk: &str) -> AssertionSettings {
        AssertionSettings {
            key: ClientKey::from_jwk(jwk).unwrap(),
            alg,
            audience: "https://login.example/t/oauth2/v2.0/token".into(),
            lifetime_s: 60,
            reuse_s: 30,
        }
    }

    fn parts(jwt: &str) -> (Value, Value, Vec<u8>, String) {
        let p: Vec<&str> = jwt.split('.').collect();
        let json = |s: &str| crate::json::parse(URL_SAFE_NO_PAD.decode(s).unwrap()).unwrap();
        (
            json(p[0]),
            json(p[1]),
            URL_SAFE_NO_PAD.decode(p[2]).unwrap(),
            format!("{}.{}", p[0], p[1]),
        )
    }

    /// The RS256 `signature` over `signed` verifies with the test key's public half.
    fn assert_rs256_verifies(signed: &str, signature: &[u8]) {
        rsa::pkcs1v15::VerifyingKey::<Sha256>::new(test_key::key().to_public_key())
            .verify(
                signed.as_bytes(),
                &rsa::pkcs1v15::Signature::try_from(signature).unwrap(),
            )
            .expect("the signature verifies with the public key");
    }

    #[test]
    fn rs256_assertion_is_signed_by_the_key_and_carries_the_documented_claims() {
        let jwt = sign(
            &settings(SigningAlg::Rs256, &test_key::jwk()),
            "client-1",
            1_000,
        )
        .unwrap();
        let (header, claims, signature, signed) = parts(&jwt);
        assert_eq!(
            header,
            serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": "key-1"})
        );
        assert_rs256_verifies(&signed, &signature);
        assert_eq!(claims["iss"], "client-1");
        assert_eq!(claims["sub"], "client-1");
        assert_eq!(claims["aud"], "https://login.example/t/oauth2/v2.0/token");
        assert_eq!(
            (claims["iat"].as_u64(), claims["nbf"].as_u64()),
            (Some(1_000), Some(1_000))
        );
        assert_eq!(claims["exp"].as_u64(), Some(1_060));
        assert!(claims["jti"].as_str().is_some_and(|j| j.len() >= 16));
    }

    #[test]
    fn ps256_assertion_verifies_as_pss() {
        let jwt = sign(
            &settings(SigningAlg::Ps256, &test_key::jwk()),
            "client-1",
            1_000,
        )
        .unwrap();
        let (header, _, signature, signed) = parts(&jwt);
        assert_eq!(header["alg"], "PS256");
        rsa::pss::VerifyingKey::<Sha256>::new(test_key::key().to_public_key())
            .verify(
                signed.as_bytes(),
                &rsa::pss::Signature::try_from(signature.as_slice()).unwrap(),
            )
            .expect("the PSS signature verifies");
    }

    #[test]
    fn every_assertion_has_a_new_jti() {
        let s = settings(SigningAlg::Rs256, &test_key::jwk());
        let jti = |jwt: String| parts(&jwt).1["jti"].as_str().unwrap().to_string();
        let (a, b) = (
            jti(sign(&s, "c", 1).unwrap()),
            jti(sign(&s, "c", 1).unwrap()),
        );
        assert_ne!(a, b);
    }

    /// The assertion `last` gives for a request at `now` that arrives by `arrive_by`.
    fn next(last: &mut LastAssertion, s: &AssertionSettings, now: u64, arrive_by: u64) -> String {
        last.for_request(s, "c", now, arrive_by)
            .unwrap()
            .to_string()
    }

    #[test]
    fn the_last_assertion_is_sent_again_until_reuse_s_has_passed() {
        // Signed at 1,000: reused until 1,030, valid until 1,060.
        let s = settings(SigningAlg::Rs256, &test_key::jwk());
        let mut last = LastAssertion::default();
        let first = next(&mut last, &s, 1_000, 1_005);
        assert_eq!(next(&mut last, &s, 1_029, 1_034), first);
        let second = next(&mut last, &s, 1_030, 1_035);
        assert_ne!(second, first);
        assert_eq!(parts(&second).1["iat"], 1_030);
        assert_eq!(next(&mut last, &s, 1_031, 1_036), second);
    }

    #[test]
    fn an_assertion_that_would_expire_before_it_arrives_is_not_sent_again() {
        let s = AssertionSettings {
            reuse_s: 60,
            ..settings(SigningAlg::Rs256, &test_key::jwk())
        };
        let mut last = LastAssertion::default();
        let first = next(&mut last, &s, 1_000, 1_005);
        assert_eq!(next(&mut last, &s, 1_054, 1_059), first);
        // Its exp is 1,060: a request that may arrive then gets a new one.
        assert_ne!(next(&mut last, &s, 1_055, 1_060), first);
    }

    #[test]
    fn with_reuse_s_0_every_request_gets_a_new_assertion() {
        let s = AssertionSettings {
            reuse_s: 0,
            ..settings(SigningAlg::Rs256, &test_key::jwk())
        };
        let mut last = LastAssertion::default();
        let first = next(&mut last, &s, 1_000, 1_005);
        assert_ne!(next(&mut last, &s, 1_000, 1_005), first);
    }

    #[test]
    fn a_forgotten_assertion_is_not_sent_again() {
        let s = settings(SigningAlg::Rs256, &test_key::jwk());
        let mut last = LastAssertion::default();
        let first = next(&mut last, &s, 1_000, 1_005);
        last.forget();
        assert_ne!(next(&mut last, &s, 1_001, 1_006), first);
    }

    #[test]
    fn x5c_certificate_gives_its_sha256_thumbprint_in_the_header() {
        let der = b"a certificate's DER bytes";
        let jwk = test_key::jwk_of(
            test_key::key(),
            serde_json::json!({"x5c": [STANDARD.encode(der)]}),
        );
        let jwt = sign(&settings(SigningAlg::Rs256, &jwk), "c", 1).unwrap();
        assert_eq!(
            parts(&jwt).0["x5t#S256"],
            URL_SAFE_NO_PAD.encode(Sha256::digest(der))
        );
    }

    #[test]
    fn unusable_keys_are_refused_without_quoting_them() {
        let full: Value = crate::json::parse(test_key::jwk()).unwrap();
        let d = full["d"].as_str().unwrap().to_string();
        let mut public_only = full.clone();
        public_only.as_object_mut().unwrap().remove("d");
        let mut wrong_type = full.clone();
        wrong_type["n"] = serde_json::json!(12);
        let mut tampered = full.clone();
        tampered["p"] = full["q"].clone();
        let mut ec = full.clone();
        ec["kty"] = serde_json::json!("EC");
        let ec_key =
            serde_json::json!({"kty": "EC", "crv": "P-256", "x": "eA", "y": "eQ", "d": &d});
        assert_eq!(
            ClientKey::from_jwk_value(ec_key).unwrap_err(),
            "must be an RSA key (kty RSA)"
        );
        for bad in [public_only, wrong_type, tampered, ec] {
            let problem = ClientKey::from_jwk(&bad.to_string()).unwrap_err();
            assert!(!problem.contains(&d[..20]), "{problem}");
        }
        assert!(ClientKey::from_jwk("not json").is_err());
        let small = PrivateKey::new(&mut SysRng, 1024).unwrap();
        let problem =
            ClientKey::from_jwk(&test_key::jwk_of(&small, serde_json::json!({}))).unwrap_err();
        assert!(problem.contains("2048"), "{problem}");
    }

    #[test]
    fn components_written_with_leading_zero_bytes_are_the_same_key() {
        // RFC 7518 says no leading zeros, but some tools write them; the key is the same.
        let mut jwk: Value = crate::json::parse(test_key::jwk()).unwrap();
        for part in ["n", "d", "p"] {
            let mut bytes = URL_SAFE_NO_PAD.decode(jwk[part].as_str().unwrap()).unwrap();
            bytes.insert(0, 0);
            jwk[part] = Value::from(URL_SAFE_NO_PAD.encode(bytes));
        }
        let padded = ClientKey::from_jwk(&jwk.to_string()).expect("the same key, read");
        assert_eq!(padded.key.to_public_key(), test_key::key().to_public_key());
        let jwt = sign(
            &AssertionSettings {
                key: padded,
                ..settings(SigningAlg::Rs256, &test_key::jwk())
            },
            "client-1",
            1_000,
        )
        .unwrap();
        let (_, _, signature, signed) = parts(&jwt);
        assert_eq!(signature.len(), 256, "a 2048-bit key signs in 256 bytes");
        assert_rs256_verifies(&signed, &signature);
    }

    #[test]
    fn debug_output_never_shows_the_key() {
        let s = settings(SigningAlg::Rs256, &test_key::jwk());
        let full: Value = crate::json::parse(test_key::jwk()).unwrap();
        let dump = format!("{s:?}");
        assert!(!dump.contains(&full["d"].as_str().unwrap()[..20]), "{dump}");
        assert!(dump.contains("redacted"));
    }
}
