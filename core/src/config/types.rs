//! The validated configuration every request reads: providers, targets and settings, immutable
//! once `parse` has built it.

use std::fmt;
use std::time::Duration;

use serde_json::Value;

use crate::client_assertion::AssertionSettings;
use crate::json::{self, FromJson};
use crate::target_match::Target;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where tokens come from. The top-level fields make the default provider (first, when
    /// present); `providers` adds named ones. Each target names its provider by index.
    pub providers: Vec<Provider>,
    pub token_timeout: Duration,
    pub targets: Vec<Target>,
    pub unmatched: Unmatched,
    /// Some target names a cluster: requests read the cluster Envoy's route picked.
    pub reads_route_cluster: bool,
    /// The operator says Envoy normalizes paths before the filter, so `path_prefix` targets take
    /// paths as they come (no dot-segment check).
    pub envoy_normalizes_paths: bool,
    /// How many exchanges (token requests in flight, refreshes included) a worker runs at once;
    /// a request that needs one more is answered 503 at once.
    pub max_exchanges_in_flight_per_worker: u32,
    pub cache: CacheSettings,
    pub subject_token: SubjectTokenSettings,
    /// How long an `invalid_grant` or a claims challenge for one subject token and scope is
    /// remembered (0: not at all).
    pub negative_cache_s: u64,
    pub backoff: BackoffSettings,
}

/// A token provider: where token requests go, how the filter authenticates there, and which
/// grant it asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    /// `default` for the top-level fields, else its key in `providers`.
    pub name: String,
    pub token_cluster: String,
    pub token_endpoint: TokenEndpoint,
    pub client_id: String,
    /// How the filter authenticates as the application: a secret or a private key.
    pub client_auth: ClientAuth,
    pub grant: Grant,
    /// `client_credentials` only: what to do with a request that already has `Authorization`.
    pub existing_authorization: ExistingAuthorization,
    /// With `require_audience`: the subject token `aud` values accepted (the client id and
    /// `api://<client id>`).
    pub audiences: Option<Vec<String>>,
    /// The subject token `iss` values accepted (None: any).
    pub allowed_issuers: Option<Vec<String>>,
    /// The subject token `tid` values accepted, lowercase (None: any).
    pub allowed_tenants: Option<Vec<String>>,
}

/// The OAuth 2.0 grant a provider is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Grant {
    /// Entra ID's on-behalf-of flow: the caller's token for one for the target's scope.
    #[default]
    OnBehalfOf,
    /// The application as itself: a token for the target's scope, no caller token needed.
    ClientCredentials,
    /// RFC 8693 token exchange (NAIS TokenX, Keycloak): the caller's token for one for the
    /// target's audience.
    TokenExchange,
}

impl Grant {
    pub fn name(self) -> &'static str {
        match self {
            Grant::OnBehalfOf => "on_behalf_of",
            Grant::ClientCredentials => "client_credentials",
            Grant::TokenExchange => "token_exchange",
        }
    }

    /// Whether a request needs a caller's bearer token (the subject token) for this grant.
    pub fn needs_subject_token(self) -> bool {
        self != Grant::ClientCredentials
    }
}

impl FromJson for Grant {
    const EXPECTED: &'static str = "`on_behalf_of`, `client_credentials` or `token_exchange`";
    fn from_json(value: &Value) -> Option<Self> {
        [
            Grant::OnBehalfOf,
            Grant::ClientCredentials,
            Grant::TokenExchange,
        ]
        .into_iter()
        .find(|grant| value.as_str() == Some(grant.name()))
    }
}

/// What a `client_credentials` target does with a request that already carries `Authorization`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExistingAuthorization {
    /// Put the application's token in its place (the caller's never reaches the upstream).
    #[default]
    Replace,
    /// Forward the request as it is.
    Keep,
    /// Answer 400.
    Refuse,
}

impl FromJson for ExistingAuthorization {
    const EXPECTED: &'static str = "`replace`, `keep` or `refuse`";
    fn from_json(value: &Value) -> Option<Self> {
        use ExistingAuthorization::*;
        json::named(
            value,
            &[("replace", Replace), ("keep", Keep), ("refuse", Refuse)],
        )
    }
}

/// The local checks on a subject token before it is exchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectTokenSettings {
    /// A token is expired once `exp + leeway_s <= now`.
    pub leeway_s: u64,
}

/// How long token requests for a scope stop after the IdP throttled or failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffSettings {
    /// The wait after a 5xx, or a 429 without a usable `Retry-After` (0: no backoff).
    pub default_s: u64,
    /// The most an IdP's `Retry-After` is honoured for.
    pub max_s: u64,
}

/// The token endpoint, split the way a callout needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenEndpoint {
    pub url: String,
    pub authority: String,
    /// Path and query.
    pub path: String,
}
/// What happens to a request no target matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Unmatched {
    /// Forward it without `Authorization`: the caller's token goes nowhere a target does not name.
    #[default]
    Strip,
    /// Answer 403.
    Deny,
    /// Forward it untouched, `Authorization` included.
    Passthrough,
}

impl FromJson for Unmatched {
    const EXPECTED: &'static str = "`strip`, `deny` or `passthrough`";
    fn from_json(value: &Value) -> Option<Self> {
        json::named(
            value,
            &[
                ("strip", Unmatched::Strip),
                ("deny", Unmatched::Deny),
                ("passthrough", Unmatched::Passthrough),
            ],
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSettings {
    pub max_entries: u32,
    pub expiry_skew_s: u64,
    /// Entries of each worker's front cache (0: none).
    pub worker_entries: u32,
    /// A token is refreshed in the background during the last `refresh_ahead_s` seconds or the last
    /// `refresh_ahead_percent` of its lifetime, whichever is shorter.
    pub refresh_ahead_s: u64,
    pub refresh_ahead_percent: u64,
    /// After a worker drops a token for an upstream's claims challenge, it keeps the next one for
    /// the same key this long even if the upstream challenges it too (0: drops on every challenge).
    pub claims_challenge_holdoff_s: u64,
}

/// The application's credential at the token endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAuth {
    /// `client_secret` in every token request.
    Secret(Secret),
    /// `private_key_jwt`: a fresh `client_assertion` signed with the application's key.
    PrivateKey(Box<AssertionSettings>),
}

/// A string that never shows in `Debug` output, so a logged config cannot leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub(super) String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}
