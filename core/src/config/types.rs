//! The validated, immutable configuration every request reads (fields: docs/configuration.md).

use std::fmt;
use std::time::Duration;

use serde_json::Value;

use crate::assertion_source::AssertionSource;
use crate::client_assertion::AssertionSettings;
use crate::json::{self, FromJson};
use crate::target_match::Target;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The default provider (the top-level fields) first, when present; targets name one by index.
    pub providers: Vec<Provider>,
    pub token_timeout: Duration,
    pub targets: Vec<Target>,
    pub unmatched: Unmatched,
    /// Some target names a cluster: only then do requests pay a hostcall for the route's cluster.
    pub reads_route_cluster: bool,
    pub envoy_normalizes_paths: bool,
    pub max_exchanges_in_flight_per_worker: u32,
    pub cache: CacheSettings,
    pub subject_token: SubjectTokenSettings,
    pub negative_cache_s: u64,
    pub backoff: BackoffSettings,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    /// `default` for the top-level fields, else its key in `providers`.
    pub name: String,
    pub token_cluster: String,
    pub token_endpoint: TokenEndpoint,
    pub client_id: String,
    pub client_auth: ClientAuth,
    pub grant: Grant,
    pub existing_authorization: ExistingAuthorization,
    /// With `require_audience`: the client id and `api://<client id>`.
    pub audiences: Option<Vec<String>>,
    pub allowed_issuers: Option<Vec<String>>,
    /// Lowercase.
    pub allowed_tenants: Option<Vec<String>>,
    /// RFC 8693 delegation (`token_exchange` only): who acts for the caller.
    pub actor: Option<Actor>,
}

impl Provider {
    /// The client as the cache key covers it: with its actor, if any, so that an actor of another
    /// configuration never finds this one's tokens (and keys without an actor are unchanged).
    pub fn key_client(&self) -> &str {
        self.actor
            .as_ref()
            .map_or(self.client_id.as_str(), |actor| actor.key_client.as_str())
    }
}

/// The provider whose client-credentials token is sent as `actor_token`, and for which scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// An index into `Config::providers`: a `client_credentials` provider.
    pub provider: usize,
    pub scope: String,
    /// `actor_token_type`.
    pub token_type: String,
    /// The delegating client and this actor, framed for the cache key (`Provider::key_client`).
    pub key_client: String,
}

/// RFC 8693's type of an access token, the default `actor_token_type`.
pub const TOKEN_TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Grant {
    #[default]
    OnBehalfOf,
    ClientCredentials,
    /// RFC 8693 (NAIS TokenX, Keycloak): the caller's token for one for the target's audience.
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExistingAuthorization {
    /// Put the application's token in its place (the caller's never reaches the upstream).
    #[default]
    Replace,
    Keep,
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectTokenSettings {
    /// A token is expired once `exp + leeway_s <= now`.
    pub leeway_s: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffSettings {
    pub default_s: u64,
    pub max_s: u64,
}

/// The token endpoint, split the way a callout needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenEndpoint {
    pub url: String,
    pub authority: String,
    /// Path and query.
    pub path: String,
    /// The path holds `{tenant}`, filled with the subject token's `tid` (multi-tenant).
    pub per_tenant: bool,
}

/// Where a templated endpoint's tenant goes.
pub const TENANT_PLACEHOLDER: &str = "{tenant}";

impl TokenEndpoint {
    /// The path and query for `tenant` (a checked GUID), or as configured.
    pub fn path_for(&self, tenant: Option<&str>) -> std::borrow::Cow<'_, str> {
        match tenant {
            Some(tenant) if self.per_tenant => self.path.replace(TENANT_PLACEHOLDER, tenant).into(),
            _ => self.path.as_str().into(),
        }
    }
}
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Unmatched {
    /// Forward it without `Authorization`: the caller's token goes nowhere a target does not name.
    #[default]
    Strip,
    Deny,
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
    pub worker_entries: u32,
    pub refresh_ahead_s: u64,
    pub refresh_ahead_percent: u64,
    pub claims_challenge_holdoff_s: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAuth {
    Secret(Secret),
    PrivateKey(Box<AssertionSettings>),
    /// An assertion fetched through Envoy (workload identity, managed identity).
    Fetched(Box<AssertionSource>),
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
