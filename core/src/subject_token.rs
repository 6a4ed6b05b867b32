//! The caller's bearer token, its claims read (not verified: Entra ID does that when it is
//! exchanged), and the checks that refuse it locally rather than spend a token request on it.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine};
use serde_json::Value;

/// base64url that accepts the padded and the unpadded form.
const BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

pub fn bearer_token(authorization: &str) -> Option<&str> {
    bearer_part(authorization.as_bytes()).and_then(token_text)
}

/// What follows `Bearer` (any case), its characters unchecked: the front cache holds only tokens
/// that passed `token_text`, so a hit skips the scan over the whole token.
pub fn bearer_part(authorization: &[u8]) -> Option<&[u8]> {
    let value = authorization.trim_ascii();
    let space = value.iter().position(|&b| b == b' ')?;
    let (scheme, rest) = value.split_at(space);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    // At least one byte that is not a space: the value was trimmed, so the token is not empty.
    let start = rest.iter().position(|&b| b != b' ')?;
    Some(&rest[start..])
}

/// Printable ASCII, no space.
pub fn token_text(token: &[u8]) -> Option<&str> {
    if token.iter().all(u8::is_ascii_graphic) {
        std::str::from_utf8(token).ok()
    } else {
        None
    }
}

/// `allowed_tenants: ["*"]`: a token of any tenant (its `tid` still a GUID).
pub const ANY_TENANT: &str = "*";

/// A GUID in its usual form: 8-4-4-4-12 hexadecimal digits.
pub fn is_guid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Subject tokens longer than this are refused before anything else is done with them.
pub const MAX_SUBJECT_TOKEN_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectTokenProblem {
    TooLarge,
    /// Not three base64url parts with a JSON object as payload, or claims of the wrong type.
    NotJwt,
    Expired,
    WrongAudience,
    /// No `exp`: Entra ID always sets it, and a token without it could be cached forever.
    NoExpiry,
    UntrustedIssuer,
    UntrustedTenant,
}

/// What a provider accepts of a subject token's claims; None accepts any value.
#[derive(Debug, Clone, Copy, Default)]
pub struct Accepted<'a> {
    pub audiences: Option<&'a [String]>,
    pub issuers: Option<&'a [String]>,
    /// Lowercase.
    pub tenants: Option<&'a [String]>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubjectClaims {
    pub exp: Option<u64>,
    pub aud: Vec<String>,
    pub iss: Option<String>,
    pub tid: Option<String>,
}

/// Decodes the payload of a JWT; the signature is Entra ID's to check, not ours.
pub fn read_claims(token: &str) -> Result<SubjectClaims, SubjectTokenProblem> {
    use SubjectTokenProblem::NotJwt;
    let mut parts = token.split('.');
    let (header, payload, signature) = (
        parts.next().ok_or(NotJwt)?,
        parts.next().ok_or(NotJwt)?,
        parts.next().ok_or(NotJwt)?,
    );
    if parts.next().is_some() || header.is_empty() || payload.is_empty() {
        return Err(NotJwt);
    }
    let is_base64url = |p: &str| {
        p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'=')
    };
    if !is_base64url(header) || !is_base64url(signature) {
        return Err(NotJwt);
    }
    let json = BASE64URL.decode(payload).map_err(|_| NotJwt)?;
    let Ok(Value::Object(claims)) = crate::json::parse(&json) else {
        return Err(NotJwt);
    };
    // A fractional or negative `exp` is legal JSON; round it toward "already expired".
    let exp = match claims.get("exp") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(
            n.as_u64()
                .or_else(|| {
                    n.as_f64()
                        .map(|f| if f <= 0.0 { 0 } else { f.floor() as u64 })
                })
                .ok_or(NotJwt)?,
        ),
        Some(_) => return Err(NotJwt),
    };
    let aud = match claims.get("aud") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(a)) => vec![a.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(str::to_string).ok_or(NotJwt))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(NotJwt),
    };
    let text = |name: &str| match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(value)) => Ok(Some(value.clone())),
        Some(_) => Err(NotJwt),
    };
    Ok(SubjectClaims {
        exp,
        aud,
        iss: text("iss")?,
        tid: text("tid")?,
    })
}

/// Size, shape, an `exp` not past, and `aud`, `iss` and `tid` among those `accepted`.
pub fn check(
    token: &str,
    now: u64,
    leeway_s: u64,
    accepted: &Accepted<'_>,
) -> Result<SubjectClaims, SubjectTokenProblem> {
    if token.len() > MAX_SUBJECT_TOKEN_BYTES {
        return Err(SubjectTokenProblem::TooLarge);
    }
    let claims = read_claims(token)?;
    match claims.exp {
        None => return Err(SubjectTokenProblem::NoExpiry),
        Some(exp) if exp.saturating_add(leeway_s) <= now => {
            return Err(SubjectTokenProblem::Expired)
        }
        Some(_) => {}
    }
    if let Some(allowed) = accepted.audiences {
        if !claims.aud.iter().any(|a| allowed.contains(a)) {
            return Err(SubjectTokenProblem::WrongAudience);
        }
    }
    if let Some(allowed) = accepted.issuers {
        if !claims.iss.as_ref().is_some_and(|iss| allowed.contains(iss)) {
            return Err(SubjectTokenProblem::UntrustedIssuer);
        }
    }
    if let Some(allowed) = accepted.tenants {
        let tid = claims.tid.as_ref().map(|t| t.to_ascii_lowercase());
        let any = allowed.iter().any(|t| t == ANY_TENANT);
        if !tid.is_some_and(|tid| is_guid(&tid) && (any || allowed.contains(&tid))) {
            return Err(SubjectTokenProblem::UntrustedTenant);
        }
    }
    Ok(claims)
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
    fn bearer_part_takes_raw_bytes_and_token_text_refuses_what_is_not_printable_ascii() {
        // As Envoy may hand them over: not UTF-8, or with tabs around the value.
        assert_eq!(
            bearer_part(b"Bearer abc\xff\xfedef"),
            Some(&b"abc\xff\xfedef"[..])
        );
        assert_eq!(token_text(b"abc\xff\xfedef"), None);
        assert_eq!(bearer_part(b"\tBearer  abc\t"), Some(&b"abc"[..]));
        assert_eq!(token_text(b"abc"), Some("abc"));
        assert_eq!(token_text(b"a\tb"), None);
        assert_eq!(bearer_part(b"Bearer\tabc"), None);
    }

    fn exp(token: &str) -> Option<u64> {
        read_claims(token).ok().and_then(|c| c.exp)
    }

    #[test]
    fn exp_is_read_from_a_jwt_payload() {
        assert_eq!(
            exp(&jwt(r#"{"exp":1796225400,"sub":"x"}"#)),
            Some(1796225400)
        );
        assert_eq!(exp(&jwt(r#"{"exp":1796225400.9}"#)), Some(1796225400));
        assert_eq!(exp(&jwt(r#"{"exp":-3}"#)), Some(0));
        assert_eq!(read_claims(&jwt(r#"{"sub":"x"}"#)).unwrap().exp, None);
    }

    #[test]
    fn things_that_are_not_jwts_are_refused() {
        for token in [
            jwt(r#"{"exp":"soon"}"#),
            jwt("not json"),
            jwt("[1,2]"),
            "opaque-token".to_string(),
            "a.!!!.c".to_string(),
            "a.b.c.d".to_string(),
            ".e30.".to_string(),
            "a..c".to_string(),
            "a$.e30.c".to_string(),
        ] {
            assert_eq!(
                read_claims(&token),
                Err(SubjectTokenProblem::NotJwt),
                "{token}"
            );
        }
        assert!(
            read_claims("eyJhbGciOiJub25lIn0.e30.").is_ok(),
            "an empty signature part is still a JWT"
        );
    }

    #[test]
    fn padded_payloads_are_read_too() {
        let padded = format!(
            "h.{}.s",
            base64::engine::general_purpose::URL_SAFE.encode(r#"{"exp":12}"#)
        );
        assert_eq!(exp(&padded), Some(12));
    }

    #[test]
    fn audience_is_read_as_a_string_or_a_list() {
        assert_eq!(read_claims(&jwt(r#"{"aud":"a"}"#)).unwrap().aud, vec!["a"]);
        assert_eq!(
            read_claims(&jwt(r#"{"aud":["a","b"]}"#)).unwrap().aud,
            vec!["a", "b"]
        );
        for bad in [r#"{"aud":5}"#, r#"{"aud":["a",5]}"#, r#"{"aud":{"a":1}}"#] {
            assert_eq!(
                read_claims(&jwt(bad)),
                Err(SubjectTokenProblem::NotJwt),
                "{bad}"
            );
        }
        assert!(read_claims(&jwt(r#"{"aud":null}"#)).unwrap().aud.is_empty());
    }

    const ANY: Accepted<'static> = Accepted {
        audiences: None,
        issuers: None,
        tenants: None,
    };

    #[test]
    fn expired_tokens_are_refused_after_the_leeway() {
        let token = jwt(r#"{"exp":1000}"#);
        assert!(check(&token, 1_059, 60, &ANY).is_ok());
        assert_eq!(
            check(&token, 1_060, 60, &ANY),
            Err(SubjectTokenProblem::Expired)
        );
    }

    #[test]
    fn a_token_without_exp_is_refused() {
        for payload in [r#"{"sub":"no exp"}"#, r#"{"exp":null}"#] {
            assert_eq!(
                check(&jwt(payload), 0, 60, &ANY),
                Err(SubjectTokenProblem::NoExpiry)
            );
        }
    }

    #[test]
    fn audience_is_checked_only_when_required() {
        let token = jwt(r#"{"exp":5000,"aud":"other-app"}"#);
        let mine = vec!["my-client-id".to_string()];
        let only_mine = Accepted {
            audiences: Some(&mine),
            ..ANY
        };
        assert!(check(&token, 0, 0, &ANY).is_ok());
        assert_eq!(
            check(&token, 0, 0, &only_mine),
            Err(SubjectTokenProblem::WrongAudience)
        );
        let token = jwt(r#"{"exp":5000,"aud":["x","my-client-id"]}"#);
        assert!(check(&token, 0, 0, &only_mine).is_ok());
        assert_eq!(
            check(&jwt(r#"{"exp":5000}"#), 0, 0, &only_mine),
            Err(SubjectTokenProblem::WrongAudience)
        );
    }

    #[test]
    fn issuer_and_tenant_are_checked_only_when_configured() {
        let issuers = vec!["https://login.microsoftonline.com/t1/v2.0".to_string()];
        let tenants = vec!["72f988bf-86f1-41af-91ab-2d7cd011db47".to_string()];
        let ours = Accepted {
            issuers: Some(&issuers),
            tenants: Some(&tenants),
            ..ANY
        };
        let token =
            |iss: &str, tid: &str| jwt(&format!(r#"{{"exp":5000,"iss":"{iss}","tid":"{tid}"}}"#));
        let (iss, tid) = (issuers[0].as_str(), tenants[0].as_str());
        assert!(check(&token(iss, tid), 0, 0, &ours).is_ok());
        assert!(check(&token(iss, &tid.to_ascii_uppercase()), 0, 0, &ours).is_ok());
        assert!(check(&token("https://evil.example/v2.0", "x"), 0, 0, &ANY).is_ok());
        assert_eq!(
            check(&token("https://evil.example/v2.0", tid), 0, 0, &ours),
            Err(SubjectTokenProblem::UntrustedIssuer)
        );
        assert_eq!(
            check(
                &token(iss, "00000000-0000-0000-0000-000000000000"),
                0,
                0,
                &ours
            ),
            Err(SubjectTokenProblem::UntrustedTenant)
        );
        assert_eq!(
            check(&jwt(r#"{"exp":5000}"#), 0, 0, &ours),
            Err(SubjectTokenProblem::UntrustedIssuer)
        );
        assert_eq!(
            read_claims(&jwt(r#"{"exp":5000,"tid":7}"#)),
            Err(SubjectTokenProblem::NotJwt)
        );
    }

    #[test]
    fn oversized_tokens_are_refused_before_decoding() {
        let token = "a".repeat(MAX_SUBJECT_TOKEN_BYTES + 1);
        assert_eq!(
            check(&token, 0, 0, &ANY),
            Err(SubjectTokenProblem::TooLarge)
        );
    }
}
