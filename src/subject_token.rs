//! The caller's token: taken from `Authorization: Bearer …`, and its `exp` claim read (not
//! verified: Entra ID verifies the token when it is exchanged).

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine};
use serde::Deserialize;

/// base64url that accepts the padded and the unpadded form.
const BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The token of an `Authorization` value with the `Bearer` scheme (any case), or None.
pub fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, rest) = authorization.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim_start_matches(' ');
    let valid = !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic());
    valid.then_some(token)
}

#[derive(Deserialize)]
struct Claims {
    exp: Option<serde_json::Number>,
}

/// The `exp` claim (seconds since the epoch) of a JWT, when it is one and has one.
pub fn expiry_claim(token: &str) -> Option<u64> {
    let mut parts = token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let json = BASE64URL.decode(payload).ok()?;
    let claims: Claims = serde_json::from_slice(&json).ok()?;
    let exp = claims.exp?;
    // A fractional or negative `exp` is legal JSON; round it toward "already expired".
    exp.as_u64().or_else(|| {
        exp.as_f64()
            .map(|f| if f <= 0.0 { 0 } else { f.floor() as u64 })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    fn jwt(payload: &str) -> String {
        format!(
            "{}.{}.c2ln",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(payload)
        )
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token("Bearer abc.def"), Some("abc.def"));
        assert_eq!(bearer_token("bearer abc"), Some("abc"));
        assert_eq!(bearer_token("BEARER   abc"), Some("abc"));
    }

    #[test]
    fn other_schemes_and_empty_tokens_are_refused() {
        assert_eq!(bearer_token("Basic dXNlcjpwdw=="), None);
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearer    "), None);
        assert_eq!(bearer_token(""), None);
        assert_eq!(bearer_token("Bearerabc"), None);
        assert_eq!(bearer_token("Bearer a b"), None);
        assert_eq!(bearer_token("Bearer ä"), None);
    }

    #[test]
    fn exp_is_read_from_a_jwt_payload() {
        assert_eq!(
            expiry_claim(&jwt(r#"{"exp":1796225400,"sub":"x"}"#)),
            Some(1796225400)
        );
        assert_eq!(
            expiry_claim(&jwt(r#"{"exp":1796225400.9}"#)),
            Some(1796225400)
        );
        assert_eq!(expiry_claim(&jwt(r#"{"exp":-3}"#)), Some(0));
    }

    #[test]
    fn tokens_without_a_readable_exp_have_none() {
        assert_eq!(expiry_claim(&jwt(r#"{"sub":"x"}"#)), None);
        assert_eq!(expiry_claim(&jwt(r#"{"exp":"soon"}"#)), None);
        assert_eq!(expiry_claim(&jwt("not json")), None);
        assert_eq!(expiry_claim("opaque-token"), None);
        assert_eq!(expiry_claim("a.!!!.c"), None);
        assert_eq!(expiry_claim("a.b.c.d"), None);
    }

    #[test]
    fn padded_payloads_are_read_too() {
        let padded = format!(
            "h.{}.s",
            base64::engine::general_purpose::URL_SAFE.encode(r#"{"exp":12}"#)
        );
        assert_eq!(expiry_claim(&padded), Some(12));
    }
}
