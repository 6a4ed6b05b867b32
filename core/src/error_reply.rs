//! Where every reason not to forward a request becomes the status, headers and JSON body the
//! caller gets, and the log line the operator gets. The subject token is in none of them.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::Serialize;

use crate::host::Host;
use crate::subject_token::SubjectTokenProblem;
use crate::token_response::{ExchangeFailure, IdpError};

/// Why the filter answers a request itself instead of forwarding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A target matched but the request has no usable `Authorization: Bearer` token.
    NoBearerToken,
    UnmatchedDenied,
    MalformedAuthority,
    AmbiguousPath,
    TooManyExchanges,
    /// `existing_authorization: refuse`.
    AuthorizationPresent,
    /// The filter has no valid configuration (Envoy normally refuses such a filter outright).
    NotConfigured,
    /// The token request could not even be sent (unknown cluster, host refusal).
    CannotDispatch,
    BadSubjectToken(SubjectTokenProblem),
    BackingOff {
        retry_after_s: u64,
    },
    /// The provider's client assertion could not be fetched (`client_assertion_source`).
    AssertionUnavailable {
        retry_after_s: u64,
    },
    Exchange(ExchangeFailure),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u32,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_description: Option<&'a str>,
    #[serde(skip_serializing_if = "<[u64]>::is_empty")]
    error_codes: &'a [u64],
    #[serde(skip_serializing_if = "Option::is_none")]
    suberror: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    correlation_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    claims: Option<&'a str>,
}

impl<'a> Body<'a> {
    fn own(error: &'a str, description: &'a str) -> Self {
        Body {
            error,
            error_description: Some(description),
            error_codes: &[],
            suberror: None,
            trace_id: None,
            correlation_id: None,
            claims: None,
        }
    }

    fn from_idp(idp: &'a IdpError) -> Self {
        Body {
            error: &idp.error,
            error_description: idp.error_description.as_deref(),
            error_codes: &idp.error_codes,
            suberror: idp.suberror.as_deref(),
            trace_id: idp.trace_id.as_deref(),
            correlation_id: idp.correlation_id.as_deref(),
            claims: idp.claims.as_deref(),
        }
    }

    fn from_idp_or(idp: Option<&'a IdpError>, error: &'a str, description: &'a str) -> Self {
        idp.map_or_else(|| Body::own(error, description), Body::from_idp)
    }
}

const CONTENT_TYPE: (&str, &str) = ("content-type", "application/json");

fn reply(status: u32, extra: Vec<(&'static str, String)>, body: &Body<'_>) -> Reply {
    let mut headers = vec![(CONTENT_TYPE.0, CONTENT_TYPE.1.to_string())];
    headers.extend(extra);
    Reply {
        status,
        headers,
        // Serializing these plain structs cannot fail; an empty object is still valid JSON.
        body: serde_json::to_string(body).unwrap_or_else(|_| "{}".into()),
    }
}

pub fn reply_for(refusal: &Refusal) -> Reply {
    use ExchangeFailure as F;
    match refusal {
        Refusal::NoBearerToken => reply(
            401,
            vec![www_authenticate("invalid_token", None, None)],
            &Body::own("invalid_token", "the request carries no bearer token"),
        ),
        Refusal::BadSubjectToken(problem) => {
            let description = subject_token_problem(*problem);
            reply(
                401,
                vec![www_authenticate("invalid_token", Some(description), None)],
                &Body::own("invalid_token", description),
            )
        }
        Refusal::AssertionUnavailable { retry_after_s } => reply(
            503,
            vec![("retry-after", retry_after_s.to_string())],
            &Body::own(
                "temporarily_unavailable",
                "the application's client assertion could not be fetched; retry later",
            ),
        ),
        Refusal::BackingOff { retry_after_s } => reply(
            503,
            vec![("retry-after", retry_after_s.to_string())],
            &Body::own(
                "temporarily_unavailable",
                "the token endpoint is throttling or failing; retry later",
            ),
        ),
        Refusal::AuthorizationPresent => reply(
            400,
            vec![],
            &Body::own(
                "invalid_request",
                "the request already carries an Authorization header",
            ),
        ),
        Refusal::MalformedAuthority => reply(
            400,
            vec![],
            &Body::own(
                "invalid_request",
                "the request's host is not a plain host name with an optional port",
            ),
        ),
        Refusal::AmbiguousPath => reply(
            400,
            vec![],
            &Body::own(
                "invalid_request",
                "the request path has dot-segments, empty segments or escaped characters that \
                 could send it elsewhere than its prefix says",
            ),
        ),
        Refusal::TooManyExchanges => reply(
            503,
            vec![("retry-after", "1".to_string())],
            &Body::own(
                "temporarily_unavailable",
                "too many token requests are in exchange; retry later",
            ),
        ),
        Refusal::UnmatchedDenied => reply(
            403,
            vec![],
            &Body::own(
                "access_denied",
                "no target is configured for this host and path",
            ),
        ),
        Refusal::NotConfigured => reply(
            500,
            vec![],
            &Body::own(
                "server_error",
                "the token exchange filter is not configured",
            ),
        ),
        Refusal::CannotDispatch | Refusal::Exchange(F::Unreachable) => reply(
            503,
            vec![],
            &Body::own(
                "temporarily_unavailable",
                "the token endpoint could not be reached",
            ),
        ),
        Refusal::Exchange(F::RefusedByEnvoy) => reply(
            503,
            vec![("retry-after", "1".to_string())],
            &Body::own(
                "temporarily_unavailable",
                "the token cluster is at its limits; retry later",
            ),
        ),
        Refusal::Exchange(F::Timeout) => reply(
            504,
            vec![],
            &Body::own(
                "temporarily_unavailable",
                "the token endpoint did not answer in time",
            ),
        ),
        Refusal::Exchange(F::InvalidGrant(idp)) => reply(
            401,
            vec![www_authenticate(
                "invalid_token",
                idp.error_description.as_deref(),
                None,
            )],
            &Body::from_idp(idp),
        ),
        Refusal::Exchange(F::ClaimsChallenge(idp)) => {
            let claims = idp
                .claims
                .as_deref()
                .filter(|c| !c.is_empty())
                .map(|c| STANDARD.encode(c));
            reply(
                401,
                vec![www_authenticate(
                    "insufficient_claims",
                    None,
                    claims.as_deref(),
                )],
                &Body::from_idp(idp),
            )
        }
        Refusal::Exchange(F::Throttled { retry_after, idp }) => {
            let extra = retry_after
                .as_deref()
                .filter(|v| is_safe_header_value(v, 64))
                .map(|v| vec![("retry-after", v.to_string())])
                .unwrap_or_default();
            reply(
                503,
                extra,
                &Body::from_idp_or(
                    idp.as_deref(),
                    "temporarily_unavailable",
                    "the token endpoint is throttling requests",
                ),
            )
        }
        Refusal::Exchange(F::IdpError { status, idp }) => reply(
            if *status == 503 { 503 } else { 502 },
            vec![],
            &Body::from_idp_or(
                idp.as_deref(),
                "server_error",
                "the token endpoint answered with an error",
            ),
        ),
        Refusal::Exchange(F::BadAnswer(why)) => reply(502, vec![], &Body::own("server_error", why)),
    }
}

/// Why a subject token was refused, for the caller and the log alike (it quotes no claim).
fn subject_token_problem(problem: SubjectTokenProblem) -> &'static str {
    match problem {
        SubjectTokenProblem::TooLarge => "the bearer token is too large",
        SubjectTokenProblem::NotJwt => "the bearer token is not a JWT",
        SubjectTokenProblem::Expired => "the bearer token has expired",
        SubjectTokenProblem::WrongAudience => {
            "the bearer token was not issued for this application"
        }
        SubjectTokenProblem::NoExpiry => "the bearer token has no expiry (exp)",
        SubjectTokenProblem::UntrustedIssuer => {
            "the bearer token's issuer is not one this application accepts"
        }
        SubjectTokenProblem::UntrustedTenant => {
            "the bearer token's tenant is not one this application accepts"
        }
    }
}

/// What happened and the IdP's ids to look it up by; no error description, token or secret.
pub fn log_line(refusal: &Refusal) -> String {
    use ExchangeFailure as F;
    let idp = match refusal {
        Refusal::Exchange(F::InvalidGrant(idp) | F::ClaimsChallenge(idp)) => Some(&**idp),
        Refusal::Exchange(F::Throttled { idp, .. } | F::IdpError { idp, .. }) => idp.as_deref(),
        _ => None,
    };
    let status = reply_for(refusal).status;
    let what = match refusal {
        Refusal::NoBearerToken => {
            "request refused: it carries no bearer token; the caller must send Authorization: \
             Bearer <the employee's token>"
                .to_string()
        }
        Refusal::UnmatchedDenied => {
            "request refused: no target matches its cluster, host and path (unmatched: deny); add \
             a target if the application should call it"
                .to_string()
        }
        Refusal::MalformedAuthority => {
            "request refused: its host is not host[:port] but names a target's host, and Envoy \
             would route it elsewhere; the client must send a plain host name"
                .to_string()
        }
        Refusal::AmbiguousPath => {
            "request refused: its path has dot-segments, empty segments or escapes that a \
             target's path_prefix could misread; have Envoy normalize paths (normalize_path, \
             merge_slashes) or fix the client"
                .to_string()
        }
        Refusal::TooManyExchanges => {
            "request refused: this worker already runs max_exchanges_in_flight_per_worker token \
             requests; raise it if real users meet it, else look for a flood of new tokens"
                .to_string()
        }
        Refusal::AuthorizationPresent => {
            "request refused: it already carries Authorization and its provider says \
             existing_authorization: refuse"
                .to_string()
        }
        Refusal::NotConfigured => {
            "request refused: the filter has no valid configuration; see the configuration \
             errors logged when Envoy loaded it"
                .to_string()
        }
        Refusal::CannotDispatch => {
            "token request not sent: Envoy has no such token_cluster, or refused the call; compare \
             token_cluster with Envoy's clusters"
                .to_string()
        }
        Refusal::BadSubjectToken(problem) => format!(
            "request refused: {}; the caller must send a valid token issued for this application",
            subject_token_problem(*problem)
        ),
        Refusal::AssertionUnavailable { retry_after_s } => format!(
            "request refused: the client assertion could not be fetched from \
             client_assertion_source; token requests for this scope wait {retry_after_s} s"
        ),
        Refusal::BackingOff { retry_after_s } => format!(
            "request refused: token requests for this scope wait {retry_after_s} s more, after \
             the token endpoint throttled or failed"
        ),
        Refusal::Exchange(F::Unreachable) => {
            "token endpoint unreachable: check the token cluster's endpoints, DNS and TLS".into()
        }
        Refusal::Exchange(F::Timeout) => {
            "token endpoint did not answer within token_timeout_ms".to_string()
        }
        Refusal::Exchange(F::RefusedByEnvoy) => {
            "token request refused by Envoy itself: the token cluster's circuit breakers \
             overflowed or it has no healthy host; raise its limits or lower \
             max_exchanges_in_flight_per_worker"
                .to_string()
        }
        Refusal::Exchange(F::InvalidGrant(_)) => {
            "token exchange refused: the caller's token is expired, revoked or not for this \
             application (invalid_grant)"
                .to_string()
        }
        Refusal::Exchange(F::ClaimsChallenge(_)) => {
            "token exchange refused: Entra ID wants more of the user (MFA, consent, Conditional \
             Access); the caller got the claims challenge to step up"
                .to_string()
        }
        Refusal::Exchange(F::Throttled { .. }) => {
            "token endpoint throttled the request (429); new users of this scope get 503 until \
             its Retry-After"
                .to_string()
        }
        Refusal::Exchange(F::IdpError { status, .. }) => format!(
            "token endpoint answered HTTP {status}; invalid_client means the client secret or \
             key is wrong, invalid_scope or invalid_resource a target's scope"
        ),
        Refusal::Exchange(F::BadAnswer(why)) => {
            format!("token endpoint answer unusable: {why}")
        }
    };
    let what = format!("{what} (answered {status})");
    match idp {
        None => what,
        Some(idp) => format!(
            "{what}: error={} error_codes={:?} trace_id={} correlation_id={}",
            sanitize_for_log(&idp.error),
            idp.error_codes,
            sanitize_for_log(idp.trace_id.as_deref().unwrap_or("-")),
            sanitize_for_log(idp.correlation_id.as_deref().unwrap_or("-")),
        ),
    }
}

pub fn send_reply(host: &dyn Host, reply: &Reply) {
    let headers: Vec<(&str, &str)> = reply
        .headers
        .iter()
        .map(|(n, v)| (*n, v.as_str()))
        .collect();
    host.send_reply(reply.status, &headers, reply.body.as_bytes());
}

pub fn sanitize_for_log(s: &str) -> String {
    sanitize_for_log_with(s, "")
}

/// At most 64 (128 with extra characters allowed) characters of letters, digits, `-_.` and
/// `extra`; anything else becomes `?`, so a value from outside cannot forge a log line.
pub fn sanitize_for_log_with(s: &str, extra: &str) -> String {
    let max = if extra.is_empty() { 64 } else { 128 };
    s.chars()
        .take(max)
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) || extra.contains(c) {
                c
            } else {
                '?'
            }
        })
        .collect()
}

fn is_safe_header_value(v: &str, max: usize) -> bool {
    !v.is_empty() && v.len() <= max && v.bytes().all(|b| b == b' ' || b.is_ascii_graphic())
}

/// `Bearer error="…"[, error_description="…"][, claims="…"]`, each a safe quoted-string.
fn www_authenticate(
    error: &str,
    description: Option<&str>,
    claims: Option<&str>,
) -> (&'static str, String) {
    let mut value = format!("Bearer error=\"{error}\"");
    if let Some(d) = description {
        value.push_str(&format!(", error_description=\"{}\"", quoted(d, 512)));
    }
    if let Some(c) = claims {
        value.push_str(&format!(", claims=\"{c}\""));
    }
    ("www-authenticate", value)
}

/// Text fit for a quoted-string in a header: printable ASCII, `"` and `\` escaped, cut at `max`.
fn quoted(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max));
    for c in s.chars().take(max) {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => out.push(' '),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::fixture;
    use crate::token_response::read_answer;
    use serde_json::Value;

    fn fixture_refusal(status: u16, retry_after: Option<&str>, name: &str) -> Refusal {
        let body = fixture(name);
        Refusal::Exchange(read_answer(Some(status), retry_after, &body).unwrap_err())
    }

    fn header<'a>(r: &'a Reply, name: &str) -> Option<&'a str> {
        r.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    fn body(r: &Reply) -> Value {
        crate::json::parse(&r.body).unwrap()
    }

    #[test]
    fn missing_bearer_is_401_invalid_token() {
        let r = reply_for(&Refusal::NoBearerToken);
        assert_eq!(r.status, 401);
        assert_eq!(
            header(&r, "www-authenticate"),
            Some("Bearer error=\"invalid_token\"")
        );
        assert_eq!(header(&r, "content-type"), Some("application/json"));
        assert_eq!(body(&r)["error"], "invalid_token");
    }

    #[test]
    fn invalid_grant_is_401_with_description_and_idp_ids() {
        let r = reply_for(&fixture_refusal(
            400,
            None,
            "error-invalid-grant-expired.json",
        ));
        assert_eq!(r.status, 401);
        let www = header(&r, "www-authenticate").unwrap();
        assert!(
            www.starts_with("Bearer error=\"invalid_token\", error_description=\"AADSTS500133"),
            "{www}"
        );
        let b = body(&r);
        assert_eq!(b["error"], "invalid_grant");
        assert_eq!(b["error_codes"][0], 500133);
        assert_eq!(b["trace_id"], "0b5e6a4e-1b2c-4d3e-9f00-1a2b3c4d5e6f");
        assert_eq!(b["correlation_id"], "7c8d9e0f-1a2b-4c3d-8e9f-0a1b2c3d4e5f");
    }

    #[test]
    fn interaction_required_is_401_insufficient_claims_with_base64_claims() {
        let r = reply_for(&fixture_refusal(
            400,
            None,
            "error-interaction-required.json",
        ));
        assert_eq!(r.status, 401);
        let www = header(&r, "www-authenticate").unwrap();
        let claims = r#"{"access_token":{"polids":{"essential":true,"values":["9ab03e19-ed42-4168-b6b7-7001fb3e933a"]}}}"#;
        assert_eq!(
            www,
            format!(
                "Bearer error=\"insufficient_claims\", claims=\"{}\"",
                STANDARD.encode(claims)
            )
        );
        assert_eq!(body(&r)["error"], "interaction_required");
    }

    #[test]
    fn throttling_is_503_with_retry_after() {
        let r = reply_for(&fixture_refusal(429, Some("60"), "error-throttled.json"));
        assert_eq!(r.status, 503);
        assert_eq!(header(&r, "retry-after"), Some("60"));
        assert_eq!(body(&r)["error_codes"][0], 90055);
    }

    #[test]
    fn unsafe_retry_after_is_dropped() {
        let r = reply_for(&Refusal::Exchange(ExchangeFailure::Throttled {
            retry_after: Some("1\r\nx-evil: 1".into()),
            idp: None,
        }));
        assert_eq!(header(&r, "retry-after"), None);
        assert_eq!(body(&r)["error"], "temporarily_unavailable");
    }

    #[test]
    fn other_idp_errors_are_502_and_idp_503_stays_503() {
        assert_eq!(
            reply_for(&fixture_refusal(401, None, "error-invalid-client.json")).status,
            502
        );
        assert_eq!(
            reply_for(&fixture_refusal(400, None, "error-invalid-scope.json")).status,
            502
        );
        assert_eq!(
            reply_for(&fixture_refusal(
                503,
                None,
                "error-temporarily-unavailable.json"
            ))
            .status,
            503
        );
        let r = reply_for(&Refusal::Exchange(ExchangeFailure::IdpError {
            status: 500,
            idp: None,
        }));
        assert_eq!(
            (r.status, body(&r)["error"].as_str()),
            (502, Some("server_error"))
        );
    }

    #[test]
    fn transport_failures_map_to_503_and_504() {
        assert_eq!(reply_for(&Refusal::CannotDispatch).status, 503);
        assert_eq!(
            reply_for(&Refusal::Exchange(ExchangeFailure::Unreachable)).status,
            503
        );
        assert_eq!(
            reply_for(&Refusal::Exchange(ExchangeFailure::Timeout)).status,
            504
        );
        assert_eq!(
            reply_for(&Refusal::Exchange(ExchangeFailure::BadAnswer("x"))).status,
            502
        );
        assert_eq!(reply_for(&Refusal::UnmatchedDenied).status, 403);
    }

    #[test]
    fn description_is_made_a_safe_quoted_string() {
        let r = reply_for(&Refusal::Exchange(ExchangeFailure::InvalidGrant(Box::new(
            IdpError {
                error: "invalid_grant".into(),
                error_description: Some("say \"hi\" \\ then\r\nx-evil: 1 é".into()),
                ..IdpError::default()
            },
        ))));
        let www = header(&r, "www-authenticate").unwrap();
        assert!(www.contains(r#"say \"hi\" \\ then  x-evil: 1  "#), "{www}");
        assert!(!www.contains('\n') && !www.contains('\r'));
    }

    #[test]
    fn local_subject_token_refusals_are_401_with_a_description() {
        let r = reply_for(&Refusal::BadSubjectToken(SubjectTokenProblem::Expired));
        assert_eq!(r.status, 401);
        assert_eq!(
            header(&r, "www-authenticate"),
            Some("Bearer error=\"invalid_token\", error_description=\"the bearer token has expired\"")
        );
    }

    #[test]
    fn backing_off_is_503_with_retry_after() {
        let r = reply_for(&Refusal::BackingOff { retry_after_s: 7 });
        assert_eq!(r.status, 503);
        assert_eq!(header(&r, "retry-after"), Some("7"));
    }

    #[test]
    fn every_refusal_is_logged_in_words_with_the_status_the_caller_got() {
        use crate::subject_token::SubjectTokenProblem as P;
        let idp = || Box::new(IdpError::default());
        let refusals = [
            Refusal::NoBearerToken,
            Refusal::UnmatchedDenied,
            Refusal::MalformedAuthority,
            Refusal::AmbiguousPath,
            Refusal::TooManyExchanges,
            Refusal::AuthorizationPresent,
            Refusal::NotConfigured,
            Refusal::CannotDispatch,
            Refusal::BadSubjectToken(P::TooLarge),
            Refusal::BadSubjectToken(P::NotJwt),
            Refusal::BadSubjectToken(P::Expired),
            Refusal::BadSubjectToken(P::WrongAudience),
            Refusal::BadSubjectToken(P::NoExpiry),
            Refusal::BadSubjectToken(P::UntrustedIssuer),
            Refusal::BadSubjectToken(P::UntrustedTenant),
            Refusal::BackingOff { retry_after_s: 3 },
            Refusal::AssertionUnavailable { retry_after_s: 3 },
            Refusal::Exchange(ExchangeFailure::Unreachable),
            Refusal::Exchange(ExchangeFailure::Timeout),
            Refusal::Exchange(ExchangeFailure::RefusedByEnvoy),
            Refusal::Exchange(ExchangeFailure::InvalidGrant(idp())),
            Refusal::Exchange(ExchangeFailure::ClaimsChallenge(idp())),
            Refusal::Exchange(ExchangeFailure::Throttled {
                retry_after: None,
                idp: None,
            }),
            Refusal::Exchange(ExchangeFailure::IdpError {
                status: 500,
                idp: None,
            }),
            Refusal::Exchange(ExchangeFailure::BadAnswer(
                "token response has no access_token",
            )),
        ];
        let rust_names = [
            "NotJwt",
            "TooLarge",
            "WrongAudience",
            "NoExpiry",
            "Untrusted",
            "InvalidGrant",
            "Refusal",
            "Some(",
            "None",
            "Box",
        ];
        for refusal in &refusals {
            let line = log_line(refusal);
            let status = reply_for(refusal).status;
            assert!(line.contains(&format!("(answered {status})")), "{line}");
            assert!(!rust_names.iter().any(|n| line.contains(n)), "{line}");
        }
    }

    #[test]
    fn log_line_carries_ids_but_no_description() {
        let line = log_line(&fixture_refusal(
            400,
            None,
            "error-invalid-grant-expired.json",
        ));
        assert!(line.contains("error=invalid_grant"), "{line}");
        assert!(
            line.contains("trace_id=0b5e6a4e-1b2c-4d3e-9f00-1a2b3c4d5e6f"),
            "{line}"
        );
        assert!(
            line.contains("correlation_id=7c8d9e0f-1a2b-4c3d-8e9f-0a1b2c3d4e5f"),
            "{line}"
        );
        assert!(!line.contains("AADSTS"), "{line}");
    }
}
