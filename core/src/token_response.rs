//! Reading the token endpoint's answer: an issued token, or why there is none.

use serde::Serialize;
use serde_json::Value;

use crate::json;

/// Token responses larger than this are refused unread.
pub const MAX_TOKEN_RESPONSE_BYTES: usize = 64 * 1024;
/// Issued tokens longer than this are refused rather than written into a header.
pub const MAX_ACCESS_TOKEN_BYTES: usize = 32 * 1024;
/// Entra ID's tokens live 60 to 90 minutes (28 hours only for clients that declare continuous
/// access evaluation, which the filter does not); a larger `expires_in` is read as this.
pub const MAX_EXPIRES_IN_S: u64 = 86_400;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    pub access_token: String,
    /// Whole seconds; 0 when the IdP gave none (the token is then used but not cached).
    pub expires_in: u64,
}

/// The error fields Entra ID puts in a failed token response, as far as it gave them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IdpError {
    pub error: String,
    pub error_description: Option<String>,
    pub error_codes: Vec<u64>,
    pub suberror: Option<String>,
    pub trace_id: Option<String>,
    pub correlation_id: Option<String>,
    /// The Conditional Access challenge, a JSON string.
    pub claims: Option<String>,
}

/// Why an exchange gave no token. Each maps to one answer in `error_reply`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExchangeFailure {
    /// `invalid_grant`: the subject token was rejected or has expired.
    InvalidGrant(Box<IdpError>),
    /// `interaction_required`, or any error with a `claims` challenge.
    ClaimsChallenge(Box<IdpError>),
    Throttled {
        retry_after: Option<String>,
        idp: Option<Box<IdpError>>,
    },
    /// Any other error the IdP answered with (`invalid_client`, `invalid_scope`, a 5xx, …).
    IdpError {
        status: u16,
        idp: Option<Box<IdpError>>,
    },
    /// A 2xx that is not a usable token response.
    BadAnswer(&'static str),
    Timeout,
    /// The token cluster could not be reached, or the answer came with no status at all.
    Unreachable,
    /// Envoy answered itself (circuit breakers, no healthy host): says nothing of the IdP.
    RefusedByEnvoy,
}

impl ExchangeFailure {
    /// A refusal remembered in the cache, told as first: a claims challenge, else `invalid_grant`.
    pub fn remembered(error_json: &[u8]) -> ExchangeFailure {
        let idp = IdpError::from_json(error_json).unwrap_or_default();
        if idp.is_claims_challenge() {
            ExchangeFailure::ClaimsChallenge(Box::new(idp))
        } else {
            ExchangeFailure::InvalidGrant(Box::new(idp))
        }
    }
}

impl IdpError {
    fn is_claims_challenge(&self) -> bool {
        self.claims.as_deref().is_some_and(|c| !c.is_empty())
            || self.error == "interaction_required"
    }

    /// None without `error`; a field of another type than Entra ID documents is left out.
    pub fn from_json(text: &[u8]) -> Option<IdpError> {
        let Ok(Value::Object(fields)) = crate::json::parse(text) else {
            return None;
        };
        let error = json::text(&fields, "error").filter(|e| !e.is_empty())?;
        let error_codes = match fields.get("error_codes") {
            Some(Value::Array(codes)) => codes.iter().filter_map(Value::as_u64).collect(),
            _ => Vec::new(),
        };
        Some(IdpError {
            error,
            error_description: json::text(&fields, "error_description"),
            error_codes,
            suberror: json::text(&fields, "suberror"),
            trace_id: json::text(&fields, "trace_id"),
            correlation_id: json::text(&fields, "correlation_id"),
            claims: json::text(&fields, "claims"),
        })
    }
}

/// Envoy's own reply for a token cluster at its limits: `x-envoy-overloaded` (a circuit breaker or
/// the pool overflowed), or 503 `no healthy upstream`. Entra ID answers neither way.
pub fn refused_by_envoy(status: Option<u16>, overloaded: bool, body: &[u8]) -> bool {
    overloaded || (status == Some(503) && body.starts_with(b"no healthy upstream"))
}

/// Reads a callout's answer. `status` is None when Envoy gave no `:status` (a reset).
pub fn read_answer(
    status: Option<u16>,
    retry_after: Option<&str>,
    body: &[u8],
) -> Result<IssuedToken, ExchangeFailure> {
    let Some(status) = status else {
        return Err(ExchangeFailure::Unreachable);
    };
    if body.len() > MAX_TOKEN_RESPONSE_BYTES {
        return Err(ExchangeFailure::BadAnswer("token response is too large"));
    }
    match status {
        200..=299 => read_success(body),
        429 => Err(ExchangeFailure::Throttled {
            retry_after: retry_after.map(str::to_string),
            idp: read_error(body),
        }),
        // Envoy answers a callout that outlives its timeout with 504 and one that cannot connect
        // with 503; an IdP's own 503/504 means the same to the caller.
        504 => Err(ExchangeFailure::Timeout),
        503 => match read_error(body) {
            Some(idp) => Err(ExchangeFailure::IdpError {
                status,
                idp: Some(idp),
            }),
            None => Err(ExchangeFailure::Unreachable),
        },
        400..=499 => match read_error(body) {
            Some(idp) if idp.is_claims_challenge() => Err(ExchangeFailure::ClaimsChallenge(idp)),
            Some(idp) if idp.error == "invalid_grant" => Err(ExchangeFailure::InvalidGrant(idp)),
            idp => Err(ExchangeFailure::IdpError { status, idp }),
        },
        _ => Err(ExchangeFailure::IdpError {
            status,
            idp: read_error(body),
        }),
    }
}

fn read_success(body: &[u8]) -> Result<IssuedToken, ExchangeFailure> {
    let Ok(Value::Object(parsed)) = crate::json::parse(body) else {
        return Err(ExchangeFailure::BadAnswer(
            "token response is not a JSON object",
        ));
    };
    let Some(access_token) = json::text(&parsed, "access_token").filter(|t| !t.is_empty()) else {
        return Err(ExchangeFailure::BadAnswer(
            "token response has no access_token",
        ));
    };
    if access_token.len() > MAX_ACCESS_TOKEN_BYTES {
        return Err(ExchangeFailure::BadAnswer("access_token is too large"));
    }
    if !access_token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ExchangeFailure::BadAnswer(
            "access_token has characters a header cannot carry",
        ));
    }
    let expires_in = match parsed.get("expires_in") {
        None | Some(Value::Null) => Some(0),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(whole) => Some(whole),
            // A fraction or a negative number; JSON has no infinity.
            None => n
                .as_f64()
                .map(|f| f.max(0.0).min(MAX_EXPIRES_IN_S as f64) as u64),
        },
        Some(Value::String(text)) => whole_seconds(text),
        Some(_) => None,
    }
    .ok_or(ExchangeFailure::BadAnswer("expires_in is not a number"))?
    .min(MAX_EXPIRES_IN_S);
    Ok(IssuedToken {
        access_token,
        expires_in,
    })
}

/// The whole seconds of a decimal number written as text (`"3599"`, `"3599.9"`), rounded down and
/// at most `MAX_EXPIRES_IN_S`. (Not `str::parse::<f64>`: its code would add 20 KB to the .wasm.)
fn whole_seconds(text: &str) -> Option<u64> {
    let text = text.trim();
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) {
        return None;
    }
    // Too many digits for a u64 is far more than a day.
    Some(
        whole
            .parse::<u64>()
            .map_or(MAX_EXPIRES_IN_S, |s| s.min(MAX_EXPIRES_IN_S)),
    )
}

fn read_error(body: &[u8]) -> Option<Box<IdpError>> {
    IdpError::from_json(body).map(Box::new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::fixture;

    #[test]
    fn success_with_numeric_expiry() {
        let t = read_answer(Some(200), None, &fixture("obo-success.json")).unwrap();
        assert!(t.access_token.starts_with("eyJ0eXAi"));
        assert_eq!(t.expires_in, 3599);
    }

    #[test]
    fn success_with_string_expiry() {
        let t = read_answer(Some(200), None, &fixture("obo-success-string-expiry.json")).unwrap();
        assert_eq!(t.expires_in, 3599);
    }

    #[test]
    fn expired_or_bad_assertion_is_invalid_grant() {
        for f in [
            "error-invalid-grant-expired.json",
            "error-invalid-grant-signature.json",
        ] {
            match read_answer(Some(400), None, &fixture(f)) {
                Err(ExchangeFailure::InvalidGrant(e)) => assert!(e.trace_id.is_some()),
                other => panic!("{f}: {other:?}"),
            }
        }
    }

    #[test]
    fn consent_required_is_invalid_grant_with_its_suberror() {
        match read_answer(Some(400), None, &fixture("error-consent-required.json")) {
            Err(ExchangeFailure::InvalidGrant(e)) => {
                assert_eq!(e.suberror.as_deref(), Some("consent_required"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn interaction_required_is_a_claims_challenge() {
        match read_answer(Some(400), None, &fixture("error-interaction-required.json")) {
            Err(ExchangeFailure::ClaimsChallenge(e)) => {
                assert!(e.claims.unwrap().contains("polids"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn any_error_with_claims_is_a_claims_challenge() {
        let body = br#"{"error":"invalid_grant","claims":"{\"access_token\":{}}"}"#;
        assert!(matches!(
            read_answer(Some(400), None, body),
            Err(ExchangeFailure::ClaimsChallenge(_))
        ));
    }

    #[test]
    fn throttling_keeps_retry_after() {
        match read_answer(Some(429), Some("60"), &fixture("error-throttled.json")) {
            Err(ExchangeFailure::Throttled { retry_after, idp }) => {
                assert_eq!(retry_after.as_deref(), Some("60"));
                assert_eq!(idp.unwrap().error_codes, vec![90055]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn client_and_scope_errors_are_idp_errors() {
        for (status, f) in [
            (401, "error-invalid-client.json"),
            (400, "error-invalid-scope.json"),
        ] {
            assert!(matches!(
                read_answer(Some(status), None, &fixture(f)),
                Err(ExchangeFailure::IdpError { idp: Some(_), .. })
            ));
        }
    }

    #[test]
    fn idp_503_with_a_body_is_an_idp_error_and_envoys_own_503_is_unreachable() {
        assert!(matches!(
            read_answer(
                Some(503),
                None,
                &fixture("error-temporarily-unavailable.json")
            ),
            Err(ExchangeFailure::IdpError { status: 503, .. })
        ));
        assert_eq!(
            read_answer(
                Some(503),
                None,
                b"upstream connect error or disconnect/reset before headers"
            ),
            Err(ExchangeFailure::Unreachable)
        );
    }

    #[test]
    fn timeouts_and_resets_are_recognised() {
        assert_eq!(
            read_answer(Some(504), None, b"upstream request timeout"),
            Err(ExchangeFailure::Timeout)
        );
        assert_eq!(
            read_answer(None, None, b""),
            Err(ExchangeFailure::Unreachable)
        );
    }

    #[test]
    fn unusable_success_bodies_are_bad_answers() {
        for body in [
            &b"<html>oops</html>"[..],
            br#"{"token_type":"Bearer","expires_in":3599}"#,
            br#"{"access_token":"","expires_in":3599}"#,
            br#"{"access_token":"a\nb","expires_in":3599}"#,
            br#"{"access_token":"abc","expires_in":"soon"}"#,
            br#"{"access_token":{"value":"abc"},"expires_in":3599}"#,
            br#"[1,2]"#,
            b"\xff\xfe",
        ] {
            assert!(
                matches!(
                    read_answer(Some(200), None, body),
                    Err(ExchangeFailure::BadAnswer(_))
                ),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn oversized_answers_and_tokens_are_bad_answers() {
        let huge = vec![b' '; MAX_TOKEN_RESPONSE_BYTES + 1];
        assert_eq!(
            read_answer(Some(200), None, &huge),
            Err(ExchangeFailure::BadAnswer("token response is too large"))
        );
        let token = "a".repeat(MAX_ACCESS_TOKEN_BYTES + 1);
        let body = format!(r#"{{"access_token":"{token}","expires_in":60}}"#);
        assert_eq!(
            read_answer(Some(200), None, body.as_bytes()),
            Err(ExchangeFailure::BadAnswer("access_token is too large"))
        );
    }

    #[test]
    fn expires_in_is_whole_seconds_rounded_down_and_at_most_a_day() {
        let expires_in = |value: &str| {
            let body = format!(r#"{{"access_token":"abc","expires_in":{value}}}"#);
            read_answer(Some(200), None, body.as_bytes()).map(|t| t.expires_in)
        };
        assert_eq!(expires_in("3599.9"), Ok(3599));
        assert_eq!(expires_in(r#""3599.9""#), Ok(3599));
        assert_eq!(expires_in("1e30"), Ok(MAX_EXPIRES_IN_S));
        assert_eq!(expires_in("18446744073709551615"), Ok(MAX_EXPIRES_IN_S));
        assert_eq!(expires_in("86401"), Ok(MAX_EXPIRES_IN_S));
        assert_eq!(expires_in("-5"), Ok(0));
        assert_eq!(expires_in("0.5"), Ok(0));
        assert_eq!(
            expires_in(r#"" 99999999999999999999999 ""#),
            Ok(MAX_EXPIRES_IN_S)
        );
        for bad in [
            r#""NaN""#, r#""inf""#, r#""1e4""#, r#""-5""#, r#"".5""#, r#""""#,
        ] {
            assert!(
                matches!(expires_in(bad), Err(ExchangeFailure::BadAnswer(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn envoys_own_replies_are_told_from_the_token_endpoints() {
        assert!(refused_by_envoy(
            Some(503),
            true,
            b"upstream connect error ... overflow"
        ));
        assert!(refused_by_envoy(Some(503), false, b"no healthy upstream"));
        assert!(!refused_by_envoy(
            Some(503),
            false,
            &fixture("error-temporarily-unavailable.json")
        ));
        assert!(!refused_by_envoy(Some(503), false, b"upstream connect error or disconnect/reset before headers. reset reason: remote connection failure"));
        assert!(!refused_by_envoy(
            Some(504),
            false,
            b"upstream request timeout"
        ));
        assert!(!refused_by_envoy(None, false, b""));
    }

    #[test]
    fn success_without_expiry_is_used_but_not_cacheable() {
        let t = read_answer(Some(200), None, br#"{"access_token":"abc"}"#).unwrap();
        assert_eq!(t.expires_in, 0);
    }

    #[test]
    fn an_idp_error_keeps_its_error_when_another_field_has_an_unexpected_type() {
        // `error` decides the answer; a field Entra ID might one day write differently must not
        // turn an invalid_grant into an unexplained IdP error.
        let body = br#"{"error":"invalid_grant","error_codes":["AADSTS50013",50013],"trace_id":7,
                        "correlation_id":"c0ffee","timestamp":"2026-11-26 06:00:00Z"}"#;
        match read_answer(Some(400), None, body) {
            Err(ExchangeFailure::InvalidGrant(e)) => {
                assert_eq!(e.error_codes, [50013]);
                assert_eq!(e.trace_id, None);
                assert_eq!(e.correlation_id.as_deref(), Some("c0ffee"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_error_kept_in_the_cache_reads_back_the_same() {
        let idp = IdpError::from_json(&fixture("error-consent-required.json")).unwrap();
        let kept = serde_json::to_string(&idp).unwrap();
        assert_eq!(IdpError::from_json(kept.as_bytes()), Some(idp));
    }

    #[test]
    fn a_remembered_refusal_is_told_as_it_was_first() {
        for (name, challenge) in [
            ("error-interaction-required.json", true),
            ("error-consent-required.json", false),
            ("error-invalid-grant-expired.json", false),
        ] {
            let idp = IdpError::from_json(&fixture(name)).unwrap();
            let first = read_answer(Some(400), None, &fixture(name)).unwrap_err();
            let kept = serde_json::to_string(&idp).unwrap();
            let again = ExchangeFailure::remembered(kept.as_bytes());
            assert_eq!(again, first, "{name}");
            assert_eq!(
                matches!(again, ExchangeFailure::ClaimsChallenge(_)),
                challenge,
                "{name}"
            );
        }
    }

    #[test]
    fn server_errors_are_idp_errors_even_without_json() {
        assert!(matches!(
            read_answer(Some(500), None, b"boom"),
            Err(ExchangeFailure::IdpError {
                status: 500,
                idp: None
            })
        ));
    }
}
