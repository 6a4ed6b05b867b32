//! A client assertion fetched through Envoy instead of a secret or a key: workload identity's
//! projected service-account token (served by Envoy from its file), or a managed identity's token
//! from the instance metadata service. Its request, reading its answer, and the one a worker holds.

use crate::json;
use crate::subject_token::read_claims;

/// The Envoy cluster that serves the federated token file when workload identity configures the
/// provider (`AZURE_FEDERATED_TOKEN_FILE`).
pub const FEDERATED_TOKEN_CLUSTER: &str = "azure_federated_token";
/// The instance metadata service's token for the audience Entra ID takes assertions for.
pub const IMDS_PATH: &str =
    "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=api%3A%2F%2FAzureADTokenExchange";
pub const IMDS_AUTHORITY: &str = "169.254.169.254";
/// Larger answers are junk: a projected token is about 1 KB, a managed identity's about 2 KB.
pub const MAX_ASSERTION_ANSWER_BYTES: usize = 64 * 1024;
/// Not sent when it would reach Entra ID this close to its `exp`.
const USE_MARGIN_S: u64 = 30;
/// Fetched again this long before its `exp` (or at half its life, if that is sooner).
const REFRESH_AHEAD_S: u64 = 300;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SourceFormat {
    /// The answer's body is the assertion (a token file Envoy serves).
    #[default]
    Text,
    /// The instance metadata service's JSON, the assertion in `access_token`.
    Imds,
}

impl SourceFormat {
    pub fn name(self) -> &'static str {
        match self {
            SourceFormat::Text => "text",
            SourceFormat::Imds => "imds",
        }
    }
}

impl json::FromJson for SourceFormat {
    const EXPECTED: &'static str = "`text` or `imds`";
    fn from_json(value: &serde_json::Value) -> Option<Self> {
        [SourceFormat::Text, SourceFormat::Imds]
            .into_iter()
            .find(|f| value.as_str() == Some(f.name()))
    }
}

/// Where a provider fetches its client assertion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssertionSource {
    pub cluster: String,
    /// Path and query.
    pub path: String,
    pub authority: String,
    pub format: SourceFormat,
}

impl AssertionSource {
    pub fn headers(&self) -> Vec<(&str, &str)> {
        let mut headers = vec![
            (":method", "GET"),
            (":path", self.path.as_str()),
            (":authority", self.authority.as_str()),
        ];
        if self.format == SourceFormat::Imds {
            // The metadata service refuses a request without it (a guard against SSRF).
            headers.push(("metadata", "true"));
        }
        headers
    }
}

/// An assertion as fetched, with its `exp`.
#[derive(Clone, PartialEq, Eq)]
pub struct Fetched {
    pub jwt: String,
    pub exp: u64,
    pub fetched_at: u64,
}

impl Fetched {
    /// Whether a token request that reaches Entra ID by `arrive_by` may carry it.
    pub fn usable_at(&self, arrive_by: u64) -> bool {
        arrive_by.saturating_add(USE_MARGIN_S) < self.exp
    }
}

impl std::fmt::Debug for Fetched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fetched(<redacted>, exp {})", self.exp)
    }
}

/// Why a fetch gave no assertion, in words for the log (never the answer's body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchFailure {
    /// No answer: a timeout, a reset, or no route to the source.
    NoAnswer,
    Status(u16),
    /// An answer that holds no usable assertion.
    Junk(&'static str),
}

impl std::fmt::Display for FetchFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchFailure::NoAnswer => f.write_str("no answer (timeout, reset or no route)"),
            FetchFailure::Status(status) => write!(f, "answered {status}"),
            FetchFailure::Junk(why) => write!(f, "answered 200 with {why}"),
        }
    }
}

/// The assertion in a source's answer, if it is a JWT that is still valid at `now`.
pub fn read_answer(
    format: SourceFormat,
    status: Option<u16>,
    body: &[u8],
    now: u64,
) -> Result<Fetched, FetchFailure> {
    match status {
        None => return Err(FetchFailure::NoAnswer),
        Some(200) => {}
        Some(status) => return Err(FetchFailure::Status(status)),
    }
    if body.len() > MAX_ASSERTION_ANSWER_BYTES {
        return Err(FetchFailure::Junk("a body too large"));
    }
    let text = std::str::from_utf8(body).map_err(|_| FetchFailure::Junk("a body not UTF-8"))?;
    let jwt = match format {
        SourceFormat::Text => text.trim().to_string(),
        SourceFormat::Imds => {
            let value = json::parse(text).map_err(|_| FetchFailure::Junk("a body not JSON"))?;
            value
                .get("access_token")
                .and_then(|t| t.as_str())
                .ok_or(FetchFailure::Junk("no access_token"))?
                .to_string()
        }
    };
    let claims = read_claims(&jwt).map_err(|_| FetchFailure::Junk("no JWT"))?;
    let exp = claims.exp.ok_or(FetchFailure::Junk("a JWT without exp"))?;
    if exp <= now.saturating_add(USE_MARGIN_S) {
        return Err(FetchFailure::Junk("an expired JWT"));
    }
    Ok(Fetched {
        jwt,
        exp,
        fetched_at: now,
    })
}

/// The assertion one worker holds for one provider, and its fetch in flight. Kept in the worker's
/// memory only: never in shared data beside the tokens.
#[derive(Debug, Default)]
pub struct HeldAssertion {
    held: Option<Fetched>,
    /// The host's id of the fetch in flight.
    pub fetching: Option<u32>,
    /// After a failed fetch, no refresh ahead before this second.
    next_try: u64,
}

impl HeldAssertion {
    /// The assertion, if it is still valid when a token request sent now reaches Entra ID.
    pub fn usable(&self, arrive_by: u64) -> Option<&str> {
        self.held
            .as_ref()
            .filter(|f| f.usable_at(arrive_by))
            .map(|f| f.jwt.as_str())
    }

    /// Whether it is time to fetch a new one: none held, or its `exp` is near.
    pub fn refresh_due(&self, now: u64) -> bool {
        match &self.held {
            None => true,
            Some(f) => {
                let ahead = REFRESH_AHEAD_S.min(f.exp.saturating_sub(f.fetched_at) / 2);
                now.saturating_add(ahead) >= f.exp
            }
        }
    }

    /// Whether to fetch ahead of time: one is held, its `exp` is near, and no fetch failed lately.
    pub fn refresh_ahead_due(&self, now: u64) -> bool {
        self.held.is_some() && self.refresh_due(now) && now >= self.next_try
    }

    pub fn hold(&mut self, fetched: Fetched) {
        self.held = Some(fetched);
        self.next_try = 0;
    }

    /// A fetch failed: the one held (if any) stays in use, and the next refresh waits a while.
    pub fn failed(&mut self, next_try: u64) {
        self.next_try = next_try;
    }

    /// Entra ID refused it (`invalid_client`): perhaps the file was rotated and it was revoked.
    pub fn forget(&mut self) {
        self.held = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::jwt_with_exp;

    #[test]
    fn a_token_file_is_its_trimmed_body() {
        let jwt = jwt_with_exp(2_000, "workload");
        let body = format!("{jwt}\n");
        let fetched = read_answer(SourceFormat::Text, Some(200), body.as_bytes(), 1_000).unwrap();
        assert_eq!((fetched.jwt.as_str(), fetched.exp), (jwt.as_str(), 2_000));
    }

    #[test]
    fn the_metadata_service_answer_carries_it_in_access_token() {
        let jwt = jwt_with_exp(2_000, "vm");
        let body = serde_json::json!({"access_token": jwt, "expires_on": "2000"}).to_string();
        let fetched = read_answer(SourceFormat::Imds, Some(200), body.as_bytes(), 1_000).unwrap();
        assert_eq!(fetched.jwt, jwt);
    }

    #[test]
    fn failures_and_junk_hold_nothing() {
        let fresh = jwt_with_exp(2_000, "w");
        let cases: [(Option<u16>, Vec<u8>, FetchFailure); 6] = [
            (None, vec![], FetchFailure::NoAnswer),
            (
                Some(404),
                fresh.clone().into_bytes(),
                FetchFailure::Status(404),
            ),
            (
                Some(200),
                b"not a jwt".to_vec(),
                FetchFailure::Junk("no JWT"),
            ),
            (
                Some(200),
                vec![0xff, 0xfe],
                FetchFailure::Junk("a body not UTF-8"),
            ),
            (
                Some(200),
                jwt_with_exp(1_010, "w").into_bytes(),
                FetchFailure::Junk("an expired JWT"),
            ),
            (
                Some(200),
                vec![b'a'; MAX_ASSERTION_ANSWER_BYTES + 1],
                FetchFailure::Junk("a body too large"),
            ),
        ];
        for (status, body, expected) in cases {
            assert_eq!(
                read_answer(SourceFormat::Text, status, &body, 1_000).unwrap_err(),
                expected
            );
        }
        let no_token = br#"{"token_type":"Bearer"}"#;
        assert_eq!(
            read_answer(SourceFormat::Imds, Some(200), no_token, 1_000).unwrap_err(),
            FetchFailure::Junk("no access_token")
        );
    }

    #[test]
    fn a_held_assertion_is_used_until_near_its_exp_and_refreshed_ahead_of_that() {
        let mut held = HeldAssertion::default();
        assert!(held.refresh_due(1_000) && held.usable(1_000).is_none());
        held.hold(Fetched {
            jwt: "a.b.c".into(),
            exp: 4_600,
            fetched_at: 1_000,
        });
        assert!(!held.refresh_due(4_299));
        assert!(held.refresh_due(4_300));
        assert_eq!(held.usable(4_569), Some("a.b.c"));
        assert_eq!(held.usable(4_570), None);
        held.forget();
        assert!(held.usable(1_000).is_none() && held.refresh_due(1_000));
    }

    #[test]
    fn a_short_lived_assertion_is_refreshed_at_half_its_life() {
        let mut held = HeldAssertion::default();
        held.hold(Fetched {
            jwt: "a.b.c".into(),
            exp: 1_200,
            fetched_at: 1_000,
        });
        assert!(!held.refresh_due(1_099));
        assert!(held.refresh_due(1_100));
    }

    #[test]
    fn the_metadata_service_gets_its_guard_header_and_a_token_file_does_not() {
        let mut source = AssertionSource {
            cluster: "imds".into(),
            path: IMDS_PATH.into(),
            authority: IMDS_AUTHORITY.into(),
            format: SourceFormat::Imds,
        };
        assert!(source.headers().contains(&("metadata", "true")));
        source.format = SourceFormat::Text;
        assert!(!source.headers().iter().any(|(n, _)| *n == "metadata"));
    }
}
