//! The plugin configuration: parsed, expanded from the environment and validated once, in
//! `on_configure`. Requests only ever see a `Config` that passed every check here.

use std::fmt;
use std::time::Duration;

use serde_json::Value;

use crate::client_assertion::{AssertionSettings, ClientKey, SigningAlg};
use crate::json::{self, FromJson};
use crate::target_match::{ClusterPattern, HostPattern, Target};

pub const ENV_TOKEN_ENDPOINT: &str = "AZURE_OPENID_CONFIG_TOKEN_ENDPOINT";
pub const ENV_CLIENT_ID: &str = "AZURE_APP_CLIENT_ID";
pub const ENV_CLIENT_SECRET: &str = "AZURE_APP_CLIENT_SECRET";
/// The application's private key as a JWK; preferred over the secret when both are set.
pub const ENV_CLIENT_JWK: &str = "AZURE_APP_JWK";
/// NAIS TokenX: the defaults of a `token_exchange` provider.
pub const ENV_TOKEN_X_ENDPOINT: &str = "TOKEN_X_TOKEN_ENDPOINT";
pub const ENV_TOKEN_X_CLIENT_ID: &str = "TOKEN_X_CLIENT_ID";
pub const ENV_TOKEN_X_JWK: &str = "TOKEN_X_PRIVATE_JWK";

const DEFAULT_TOKEN_TIMEOUT_MS: u64 = 5_000;
const MAX_TOKEN_TIMEOUT_MS: u64 = 300_000;
const DEFAULT_MAX_ENTRIES: u32 = 10_000;
const MAX_MAX_ENTRIES: u32 = 1_000_000;
const DEFAULT_EXPIRY_SKEW_S: u64 = 60;
const DEFAULT_WORKER_ENTRIES: u32 = 1_024;
const MAX_WORKER_ENTRIES: u64 = 100_000;
const DEFAULT_REFRESH_AHEAD_S: u64 = 300;
const DEFAULT_REFRESH_AHEAD_PERCENT: u64 = 10;
const DEFAULT_CLAIMS_CHALLENGE_HOLDOFF_S: u64 = 60;
const MAX_CLAIMS_CHALLENGE_HOLDOFF_S: u64 = 3_600;
const MAX_EXPIRY_SKEW_S: u64 = 3_600;
const DEFAULT_SUBJECT_TOKEN_LEEWAY_S: u64 = 60;
const MAX_SUBJECT_TOKEN_LEEWAY_S: u64 = 3_600;
const DEFAULT_NEGATIVE_CACHE_S: u64 = 5;
const MAX_NEGATIVE_CACHE_S: u64 = 300;
const DEFAULT_BACKOFF_S: u64 = 5;
const DEFAULT_BACKOFF_MAX_S: u64 = 60;
const MAX_BACKOFF_S: u64 = 3_600;
const DEFAULT_ASSERTION_LIFETIME_S: u64 = 60;
const MAX_ASSERTION_LIFETIME_S: u64 = 600;
/// Below Envoy's default circuit breakers on the token cluster (1024 requests) with a few workers.
const DEFAULT_MAX_EXCHANGES_IN_FLIGHT_PER_WORKER: u32 = 100;
const MAX_MAX_EXCHANGES_IN_FLIGHT_PER_WORKER: u32 = 10_000;

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

    /// The environment variables a provider's fields default to.
    fn env_names(self) -> EnvNames {
        match self {
            Grant::OnBehalfOf | Grant::ClientCredentials => EnvNames {
                endpoint: ENV_TOKEN_ENDPOINT,
                client_id: ENV_CLIENT_ID,
                jwk: ENV_CLIENT_JWK,
                secret: Some(ENV_CLIENT_SECRET),
            },
            Grant::TokenExchange => EnvNames {
                endpoint: ENV_TOKEN_X_ENDPOINT,
                client_id: ENV_TOKEN_X_CLIENT_ID,
                jwk: ENV_TOKEN_X_JWK,
                secret: None,
            },
        }
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

struct EnvNames {
    endpoint: &'static str,
    client_id: &'static str,
    jwk: &'static str,
    secret: Option<&'static str>,
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
pub struct Secret(String);

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

/// What is wrong with a configuration, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub problem: String,
}

impl ConfigError {
    fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration: {}: {}", self.field, self.problem)
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in a configuration, in field order: a platform team sees them all at once
/// (the filter's log, `obo-config check`) rather than one per rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(Vec<ConfigError>);

impl ConfigErrors {
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }

    /// The first problem (there is always at least one).
    pub fn first(&self) -> &ConfigError {
        &self.0[0]
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Collects problems while validation goes on past the first one.
#[derive(Default)]
struct Problems(Vec<ConfigError>);

impl Problems {
    fn check<T>(&mut self, result: Result<T, ConfigError>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.0.push(e);
                None
            }
        }
    }

    fn into_result<T>(self, value: Option<T>) -> Result<T, ConfigErrors> {
        match value {
            Some(v) if self.0.is_empty() => Ok(v),
            _ => Err(ConfigErrors(self.0)),
        }
    }
}

/// One JSON object read field by field: a field of the wrong type and an unknown field are named
/// with their whole path (`targets[1].scope`), and every such problem is reported, not only the
/// first. (Reading with serde's derive would stop at the first, and naming its path would take
/// another crate and a second copy of the deserialization code in the .wasm.)
struct Fields<'a> {
    map: serde_json::Map<String, Value>,
    /// The fields asked for (only looked up, not removed: that keeps the map's removal code out
    /// of the .wasm).
    read: Vec<&'static str>,
    /// `""` at the top level, else the object's path and a dot: `cache.`, `targets[0].`.
    prefix: String,
    problems: &'a mut Problems,
}

impl<'a> Fields<'a> {
    /// The object at `path` (`""`: the whole configuration), or None (reported) if it is not one.
    fn of(value: Value, path: &str, problems: &'a mut Problems) -> Option<Self> {
        match value {
            Value::Object(map) => Some(Fields {
                map,
                read: Vec::new(),
                prefix: if path.is_empty() {
                    String::new()
                } else {
                    format!("{path}.")
                },
                problems,
            }),
            _ => {
                let field = if path.is_empty() {
                    "configuration"
                } else {
                    path
                };
                problems
                    .0
                    .push(ConfigError::new(field, "must be a JSON object"));
                None
            }
        }
    }

    fn path(&self, field: &str) -> String {
        format!("{}{field}", self.prefix)
    }

    /// The field's value; None if it is absent or null.
    fn value(&mut self, field: &'static str) -> Option<Value> {
        self.read.push(field);
        self.map.get(field).filter(|v| !v.is_null()).cloned()
    }

    /// The field as a T; None if it is absent, or of the wrong type (reported).
    fn opt<T: FromJson>(&mut self, field: &'static str) -> Option<T> {
        let value = self.value(field)?;
        let read = T::from_json(&value);
        if read.is_none() {
            let path = self.path(field);
            let problem = format!("must be {}, not {}", T::EXPECTED, json::described(&value));
            self.problems.0.push(ConfigError::new(path, problem));
        }
        read
    }

    /// A string that is a secret: a value of another type is refused without being quoted (`opt`'s
    /// message would quote it).
    fn secret(&mut self, field: &'static str) -> Option<String> {
        match self.value(field)? {
            Value::String(secret) => Some(secret),
            _ => {
                let path = self.path(field);
                let problem = ConfigError::new(path, "must be a string (the value is not shown)");
                self.problems.0.push(problem);
                None
            }
        }
    }

    fn or<T: FromJson>(&mut self, field: &'static str, default: T) -> T {
        self.opt(field).unwrap_or(default)
    }

    /// A nested object, read by `read`. Absent, or not an object (reported), `read` sees an empty
    /// object and so gives the defaults.
    fn object<T>(&mut self, field: &'static str, read: impl FnOnce(&mut Fields) -> T) -> T {
        let value = self
            .value(field)
            .unwrap_or_else(|| Value::Object(Default::default()));
        let path = self.path(field);
        let map = match value {
            Value::Object(map) => map,
            _ => {
                let problem = ConfigError::new(path.clone(), "must be a JSON object");
                self.problems.0.push(problem);
                Default::default()
            }
        };
        let mut fields = Fields {
            map,
            read: Vec::new(),
            prefix: format!("{path}."),
            problems: self.problems,
        };
        let read = read(&mut fields);
        fields.finish();
        read
    }

    /// Reports the fields nobody read.
    fn finish(self) {
        for key in self.map.keys().filter(|k| !self.read.contains(&k.as_str())) {
            let path = format!("{}{key}", self.prefix);
            self.problems
                .0
                .push(ConfigError::new(path, "is not a known field"));
        }
    }
}

struct RawConfig {
    /// The top-level provider fields.
    default: RawProvider,
    providers: Vec<(String, RawProvider)>,
    token_timeout_ms: u64,
    targets: Vec<RawTarget>,
    unmatched: Unmatched,
    envoy_normalizes_paths: bool,
    max_exchanges_in_flight_per_worker: u32,
    cache: RawCache,
    require_audience: bool,
    subject_token_leeway_s: u64,
    negative_cache_s: u64,
    backoff: RawBackoff,
}

impl RawConfig {
    fn read(f: &mut Fields) -> Self {
        let default = RawProvider::read(f);
        let providers = match f.value("providers") {
            None => Vec::new(),
            Some(Value::Object(map)) => map
                .into_iter()
                .filter_map(|(name, value)| {
                    let path = format!("providers.{name}");
                    let mut fields = Fields::of(value, &path, f.problems)?;
                    let provider = RawProvider::read(&mut fields);
                    fields.finish();
                    Some((name, provider))
                })
                .collect(),
            Some(_) => {
                let problem = "must be an object of named providers";
                f.problems.0.push(ConfigError::new("providers", problem));
                Vec::new()
            }
        };
        let targets = match f.value("targets") {
            None => {
                f.problems
                    .0
                    .push(ConfigError::new("targets", "is required"));
                None
            }
            Some(Value::Array(items)) => Some(
                items
                    .into_iter()
                    .enumerate()
                    .filter_map(|(i, item)| {
                        let mut fields = Fields::of(item, &format!("targets[{i}]"), f.problems)?;
                        let target = RawTarget::read(&mut fields);
                        fields.finish();
                        Some(target)
                    })
                    .collect(),
            ),
            Some(_) => {
                f.problems
                    .0
                    .push(ConfigError::new("targets", "must be a list"));
                None
            }
        };
        RawConfig {
            default,
            providers,
            token_timeout_ms: f.or("token_timeout_ms", DEFAULT_TOKEN_TIMEOUT_MS),
            targets: targets.unwrap_or_default(),
            unmatched: f.or("unmatched", Unmatched::default()),
            envoy_normalizes_paths: f.or("envoy_normalizes_paths", false),
            max_exchanges_in_flight_per_worker: f.or(
                "max_exchanges_in_flight_per_worker",
                DEFAULT_MAX_EXCHANGES_IN_FLIGHT_PER_WORKER,
            ),
            cache: f.object("cache", RawCache::read),
            require_audience: f.or("require_audience", false),
            subject_token_leeway_s: f.or("subject_token_leeway_s", DEFAULT_SUBJECT_TOKEN_LEEWAY_S),
            negative_cache_s: f.or("negative_cache_s", DEFAULT_NEGATIVE_CACHE_S),
            backoff: f.object("backoff", RawBackoff::read),
        }
    }
}

/// A provider's fields, in `providers` and (the default provider) at the top level.
struct RawProvider {
    token_cluster: Option<String>,
    token_endpoint: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    /// A JWK: a JSON object, or a string holding one (`${AZURE_APP_JWK}`).
    client_jwk: Option<Value>,
    client_assertion: RawAssertion,
    grant: Grant,
    existing_authorization: Option<ExistingAuthorization>,
    allowed_issuers: Option<Value>,
    allowed_tenants: Option<Value>,
}

impl RawProvider {
    fn read(f: &mut Fields) -> Self {
        RawProvider {
            token_cluster: f.opt("token_cluster"),
            token_endpoint: f.opt("token_endpoint"),
            client_id: f.opt("client_id"),
            client_secret: f.secret("client_secret"),
            client_jwk: f.value("client_jwk"),
            client_assertion: f.object("client_assertion", RawAssertion::read),
            grant: f.or("grant", Grant::default()),
            existing_authorization: f.opt("existing_authorization"),
            allowed_issuers: f.value("allowed_issuers"),
            allowed_tenants: f.value("allowed_tenants"),
        }
    }
}

struct RawAssertion {
    /// Whether the object has any field: it applies only with a private key.
    configured: bool,
    alg: SigningAlg,
    audience: Option<String>,
    lifetime_s: u64,
    reuse_s: Option<u64>,
}

impl RawAssertion {
    fn read(f: &mut Fields) -> Self {
        RawAssertion {
            configured: !f.map.is_empty(),
            alg: f.or("alg", SigningAlg::default()),
            audience: f.opt("audience"),
            lifetime_s: f.or("lifetime_s", DEFAULT_ASSERTION_LIFETIME_S),
            reuse_s: f.opt("reuse_s"),
        }
    }
}

struct RawBackoff {
    default_s: u64,
    max_s: u64,
}

impl RawBackoff {
    fn read(f: &mut Fields) -> Self {
        RawBackoff {
            default_s: f.or("default_s", DEFAULT_BACKOFF_S),
            max_s: f.or("max_s", DEFAULT_BACKOFF_MAX_S),
        }
    }
}

struct RawTarget {
    host: Option<String>,
    cluster: Option<String>,
    path_prefix: Option<String>,
    scope: Option<String>,
    audience: Option<String>,
    provider: Option<String>,
}

impl RawTarget {
    fn read(f: &mut Fields) -> Self {
        RawTarget {
            host: f.opt("host"),
            cluster: f.opt("cluster"),
            path_prefix: f.opt("path_prefix"),
            scope: f.opt("scope"),
            audience: f.opt("audience"),
            provider: f.opt("provider"),
        }
    }
}

struct RawCache {
    max_entries: u32,
    expiry_skew_s: u64,
    worker_entries: u32,
    refresh_ahead_s: u64,
    refresh_ahead_percent: u64,
    claims_challenge_holdoff_s: u64,
}

impl RawCache {
    fn read(f: &mut Fields) -> Self {
        RawCache {
            max_entries: f.or("max_entries", DEFAULT_MAX_ENTRIES),
            expiry_skew_s: f.or("expiry_skew_s", DEFAULT_EXPIRY_SKEW_S),
            worker_entries: f.or("worker_entries", DEFAULT_WORKER_ENTRIES),
            refresh_ahead_s: f.or("refresh_ahead_s", DEFAULT_REFRESH_AHEAD_S),
            refresh_ahead_percent: f.or("refresh_ahead_percent", DEFAULT_REFRESH_AHEAD_PERCENT),
            claims_challenge_holdoff_s: f.or(
                "claims_challenge_holdoff_s",
                DEFAULT_CLAIMS_CHALLENGE_HOLDOFF_S,
            ),
        }
    }
}

/// One line about a valid configuration, for the log and `obo-config`: targets, what happens to
/// the rest, and providers.
pub fn summary(config: &Config) -> String {
    let providers: Vec<String> = config
        .providers
        .iter()
        .map(|p| {
            format!(
                "{} ({} via cluster {}, {})",
                p.name,
                p.grant.name(),
                p.token_cluster,
                p.token_endpoint.url
            )
        })
        .collect();
    let unmatched = match config.unmatched {
        Unmatched::Strip => "strip",
        Unmatched::Deny => "deny",
        Unmatched::Passthrough => "passthrough",
    };
    format!(
        "{} target(s); unmatched: {unmatched}; provider(s): {}",
        config.targets.len(),
        providers.join(", ")
    )
}

/// Parses the plugin configuration. `env` reads the VM's environment (`${NAME}` values and the
/// `AZURE_*` defaults).
pub fn parse(bytes: &[u8], env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigErrors> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ConfigError::new(
            "configuration",
            "is empty: the filter needs at least token_cluster and targets",
        )
        .into());
    }
    let mut tree: Value = crate::json::parse(bytes)
        .map_err(|e| ConfigError::new("configuration", format!("is not valid JSON: {e}")))?;
    let mut problems = Problems::default();
    expand_env(&mut tree, &mut String::new(), env, &mut problems);
    if !problems.0.is_empty() {
        return problems.into_result(None);
    }
    // Every field of the wrong type and every unknown field first, then every value that is out
    // of range or inconsistent, in one report: a field already named is not named again (a
    // required value of the wrong type is not also "required").
    let raw = Fields::of(tree, "", &mut problems).map(|mut fields| {
        let raw = RawConfig::read(&mut fields);
        fields.finish();
        raw
    });
    let Some(raw) = raw else {
        return problems.into_result(None);
    };
    match validate(raw, env) {
        Ok(config) => problems.into_result(Some(config)),
        Err(more) => {
            for e in more.0 {
                if !problems.0.iter().any(|named| named.field == e.field) {
                    problems.0.push(e);
                }
            }
            problems.into_result(None)
        }
    }
}

/// Replaces every string value of the form `${NAME}` with the environment variable NAME.
fn expand_env(
    value: &mut Value,
    path: &mut String,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Problems,
) {
    match value {
        Value::String(s) => {
            if let Some(name) = env_reference(s) {
                match env(name).filter(|v| !v.is_empty()) {
                    Some(v) => *s = v,
                    None => problems.0.push(ConfigError::new(
                        path.clone(),
                        format!("environment variable {name} is not set or is empty"),
                    )),
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                expand_env(item, path, env, problems);
                path.truncate(len);
            }
        }
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                expand_env(item, path, env, problems);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

/// `${NAME}` → `NAME`, for names made of letters, digits and underscores.
fn env_reference(s: &str) -> Option<&str> {
    let name = s.strip_prefix("${")?.strip_suffix('}')?;
    let valid = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    valid.then_some(name)
}

fn validate(raw: RawConfig, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigErrors> {
    let mut p = Problems::default();
    // The top-level fields are the default provider: validated when a target uses it or when it
    // is configured at all.
    let default = raw.default;
    let default_used = raw.targets.iter().any(|t| t.provider.is_none());
    let mut providers = Vec::new();
    // Each provider's name, index (None if it is invalid) and grant.
    let mut names: Vec<(String, Option<usize>, Grant)> = Vec::new();
    if default_used || default.token_cluster.is_some() {
        let grant = default.grant;
        let provider = validate_provider("", "default", default, raw.require_audience, env, &mut p);
        names.push((
            "default".into(),
            provider.map(|pr| push(&mut providers, pr)),
            grant,
        ));
    }
    for (name, raw_provider) in raw.providers {
        let prefix = format!("providers.{name}.");
        if name.trim().is_empty() || name == "default" {
            p.0.push(ConfigError::new(
                format!("providers.{name}"),
                "needs a name other than \"\" and \"default\"",
            ));
            continue;
        }
        let grant = raw_provider.grant;
        let provider = validate_provider(
            &prefix,
            &name,
            raw_provider,
            raw.require_audience,
            env,
            &mut p,
        );
        names.push((name, provider.map(|pr| push(&mut providers, pr)), grant));
    }
    if !(1..=MAX_TOKEN_TIMEOUT_MS).contains(&raw.token_timeout_ms) {
        p.0.push(ConfigError::new(
            "token_timeout_ms",
            format!("must be between 1 and {MAX_TOKEN_TIMEOUT_MS}"),
        ));
    }
    if !(1..=MAX_MAX_EXCHANGES_IN_FLIGHT_PER_WORKER)
        .contains(&raw.max_exchanges_in_flight_per_worker)
    {
        p.0.push(ConfigError::new(
            "max_exchanges_in_flight_per_worker",
            format!("must be between 1 and {MAX_MAX_EXCHANGES_IN_FLIGHT_PER_WORKER}"),
        ));
    }
    if !(1..=MAX_MAX_ENTRIES).contains(&raw.cache.max_entries) {
        p.0.push(ConfigError::new(
            "cache.max_entries",
            format!("must be between 1 and {MAX_MAX_ENTRIES}"),
        ));
    }
    for (field, value, max) in [
        (
            "cache.expiry_skew_s",
            raw.cache.expiry_skew_s,
            MAX_EXPIRY_SKEW_S,
        ),
        (
            "cache.worker_entries",
            u64::from(raw.cache.worker_entries),
            MAX_WORKER_ENTRIES,
        ),
        ("cache.refresh_ahead_s", raw.cache.refresh_ahead_s, 86_400),
        (
            "cache.refresh_ahead_percent",
            raw.cache.refresh_ahead_percent,
            90,
        ),
        (
            "cache.claims_challenge_holdoff_s",
            raw.cache.claims_challenge_holdoff_s,
            MAX_CLAIMS_CHALLENGE_HOLDOFF_S,
        ),
        (
            "subject_token_leeway_s",
            raw.subject_token_leeway_s,
            MAX_SUBJECT_TOKEN_LEEWAY_S,
        ),
        (
            "negative_cache_s",
            raw.negative_cache_s,
            MAX_NEGATIVE_CACHE_S,
        ),
        ("backoff.default_s", raw.backoff.default_s, MAX_BACKOFF_S),
        ("backoff.max_s", raw.backoff.max_s, MAX_BACKOFF_S),
    ] {
        if value > max {
            p.0.push(ConfigError::new(field, format!("must be at most {max}")));
        }
    }
    if raw.targets.is_empty() {
        p.0.push(ConfigError::new("targets", "must list at least one target"));
    }
    let mut targets = Vec::with_capacity(raw.targets.len());
    for (i, t) in raw.targets.into_iter().enumerate() {
        if let Some(t) = validate_target(i, t, &names, &mut p) {
            targets.push(t);
        }
    }
    let config = Config {
        providers,
        token_timeout: Duration::from_millis(raw.token_timeout_ms),
        reads_route_cluster: targets.iter().any(|t| t.cluster.is_some()),
        targets,
        unmatched: raw.unmatched,
        envoy_normalizes_paths: raw.envoy_normalizes_paths,
        max_exchanges_in_flight_per_worker: raw.max_exchanges_in_flight_per_worker,
        cache: CacheSettings {
            max_entries: raw.cache.max_entries,
            expiry_skew_s: raw.cache.expiry_skew_s,
            worker_entries: raw.cache.worker_entries,
            refresh_ahead_s: raw.cache.refresh_ahead_s,
            refresh_ahead_percent: raw.cache.refresh_ahead_percent,
            claims_challenge_holdoff_s: raw.cache.claims_challenge_holdoff_s,
        },
        subject_token: SubjectTokenSettings {
            leeway_s: raw.subject_token_leeway_s,
        },
        negative_cache_s: raw.negative_cache_s,
        backoff: BackoffSettings {
            default_s: raw.backoff.default_s,
            max_s: raw.backoff.max_s,
        },
    };
    p.into_result(Some(config))
}

fn push(providers: &mut Vec<Provider>, provider: Provider) -> usize {
    providers.push(provider);
    providers.len() - 1
}

/// One provider's fields, named with `prefix` (`""` for the top level, `providers.NAME.`).
fn validate_provider(
    prefix: &str,
    name: &str,
    raw: RawProvider,
    require_audience: bool,
    env: &dyn Fn(&str) -> Option<String>,
    p: &mut Problems,
) -> Option<Provider> {
    let field = |f: &str| format!("{prefix}{f}");
    let names = raw.grant.env_names();
    let token_cluster = match raw.token_cluster {
        Some(cluster) => p.check(non_empty(&field("token_cluster"), cluster)),
        None => {
            let why = if prefix.is_empty() {
                "is required: a target uses the default provider (no `provider`)"
            } else {
                "is required"
            };
            p.0.push(ConfigError::new(field("token_cluster"), why));
            None
        }
    };
    let token_endpoint = p.check(
        or_env(
            &field("token_endpoint"),
            raw.token_endpoint,
            names.endpoint,
            env,
        )
        .and_then(|e| parse_endpoint(&field("token_endpoint"), &e)),
    );
    let client_id = p.check(or_env(
        &field("client_id"),
        raw.client_id,
        names.client_id,
        env,
    ));
    let endpoint_url = token_endpoint.as_ref().map(|e| e.url.as_str());
    let credentials = RawCredentials {
        secret: raw.client_secret,
        jwk: raw.client_jwk,
        assertion: raw.client_assertion,
    };
    let client_auth = client_auth(prefix, &names, credentials, raw.grant, endpoint_url, env, p);
    let existing_authorization = match raw.existing_authorization {
        Some(_) if raw.grant != Grant::ClientCredentials => {
            p.0.push(ConfigError::new(
                field("existing_authorization"),
                "applies only to grant client_credentials",
            ));
            None
        }
        other => Some(other.unwrap_or_default()),
    };
    let allowed_issuers = subject_filter(
        &field("allowed_issuers"),
        raw.allowed_issuers,
        raw.grant,
        |issuer| issuer.contains("://").then(|| issuer.to_string()),
        "an issuer URL as the tokens' `iss` claim has it, such as https://login.microsoftonline.com/<tenant id>/v2.0",
        p,
    );
    let allowed_tenants = subject_filter(
        &field("allowed_tenants"),
        raw.allowed_tenants,
        raw.grant,
        |tenant| is_guid(tenant).then(|| tenant.to_ascii_lowercase()),
        "a tenant id (a GUID such as 72f988bf-86f1-41af-91ab-2d7cd011db47)",
        p,
    );
    let (token_cluster, token_endpoint, client_id) = (token_cluster?, token_endpoint?, client_id?);
    let audiences = require_audience.then(|| vec![client_id.clone(), format!("api://{client_id}")]);
    Some(Provider {
        name: name.to_string(),
        token_cluster,
        token_endpoint,
        client_id,
        client_auth: client_auth?,
        grant: raw.grant,
        existing_authorization: existing_authorization?,
        audiences,
        allowed_issuers: allowed_issuers?,
        allowed_tenants: allowed_tenants?,
    })
}

/// `allowed_issuers` or `allowed_tenants`: a non-empty list of values that `read` accepts (and
/// gives in the form compared), for a grant that exchanges a caller's token. Some(None) when the
/// field is absent; None when it is wrong (reported).
fn subject_filter(
    field: &str,
    raw: Option<Value>,
    grant: Grant,
    read: impl Fn(&str) -> Option<String>,
    wanted: &str,
    p: &mut Problems,
) -> Option<Option<Vec<String>>> {
    let Some(raw) = raw else {
        return Some(None);
    };
    if !grant.needs_subject_token() {
        p.0.push(ConfigError::new(
            field,
            format!(
                "applies only to grants that exchange a caller's token, not {}",
                grant.name()
            ),
        ));
        return None;
    }
    let items = match raw {
        Value::Array(items) if !items.is_empty() => items,
        _ => {
            p.0.push(ConfigError::new(
                field,
                format!("must be a non-empty list, each {wanted}"),
            ));
            return None;
        }
    };
    let mut values = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        match item.as_str().and_then(&read) {
            Some(value) => values.push(value),
            None => p.0.push(ConfigError::new(
                format!("{field}[{i}]"),
                format!("must be {wanted}, not {}", json::described(item)),
            )),
        }
    }
    (values.len() == items.len()).then_some(Some(values))
}

/// A GUID in its usual form: 8-4-4-4-12 hexadecimal digits.
fn is_guid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

struct RawCredentials {
    secret: Option<String>,
    jwk: Option<Value>,
    assertion: RawAssertion,
}

/// The application's credential: exactly one of a secret and a private key. Configured values win;
/// with neither configured, the grant's key variable (`AZURE_APP_JWK`, `TOKEN_X_PRIVATE_JWK`) is
/// preferred over its secret variable (`AZURE_APP_CLIENT_SECRET`).
fn client_auth(
    prefix: &str,
    names: &EnvNames,
    raw: RawCredentials,
    grant: Grant,
    endpoint_url: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
    p: &mut Problems,
) -> Option<ClientAuth> {
    let field = |f: &str| format!("{prefix}{f}");
    let assertion = raw.assertion;
    if !(1..=MAX_ASSERTION_LIFETIME_S).contains(&assertion.lifetime_s) {
        p.0.push(ConfigError::new(
            field("client_assertion.lifetime_s"),
            format!("must be between 1 and {MAX_ASSERTION_LIFETIME_S}"),
        ));
    }
    // Entra ID accepts an assertion until its exp, and on-behalf-of needs one for every new
    // user; an IdP that refuses a repeated `jti` (Keycloak) gets a new one unless configured.
    let reuse_s = match (assertion.reuse_s, grant) {
        (Some(reuse_s), _) => reuse_s,
        (None, Grant::OnBehalfOf) => assertion.lifetime_s / 2,
        (None, _) => 0,
    };
    if assertion.reuse_s.is_some() && reuse_s >= assertion.lifetime_s {
        p.0.push(ConfigError::new(
            field("client_assertion.reuse_s"),
            format!(
                "must be less than client_assertion.lifetime_s ({})",
                assertion.lifetime_s
            ),
        ));
    }
    let audience = match assertion.audience {
        Some(a) => p.check(non_empty(&field("client_assertion.audience"), a)),
        None => endpoint_url.map(str::to_string),
    };
    let env_value = |name: &str| env(name).filter(|v| !v.is_empty());
    // `why`: how the provider came to authenticate with a secret, for a `client_assertion` that
    // would otherwise be ignored.
    let secret_auth = |secret: String, why: &str, p: &mut Problems| {
        if assertion.configured {
            p.0.push(ConfigError::new(
                field("client_assertion"),
                format!("applies only with a private key (client_jwk), and {why}"),
            ));
        }
        p.check(non_empty(&field("client_secret"), secret))
            .map(|s| ClientAuth::Secret(Secret(s)))
    };
    let jwk = match (raw.secret, raw.jwk) {
        (Some(_), Some(_)) => {
            p.0.push(ConfigError::new(
                field("client_jwk"),
                "configure either client_secret or client_jwk, not both",
            ));
            return None;
        }
        (Some(secret), None) => {
            return secret_auth(secret, "this provider is configured with client_secret", p)
        }
        (None, Some(Value::String(text))) => ClientKey::from_jwk(&text),
        (None, Some(object @ Value::Object(_))) => ClientKey::from_jwk_value(object),
        (None, Some(_)) => {
            p.0.push(ConfigError::new(
                field("client_jwk"),
                "must be a JWK: a JSON object, or a string holding one",
            ));
            return None;
        }
        (None, None) => match (env_value(names.jwk), names.secret.and_then(env_value)) {
            (Some(jwk), _) => ClientKey::from_jwk(&jwk),
            (None, Some(secret)) => {
                let why = format!(
                    "this provider authenticates with the secret in {} because {} is not set",
                    names.secret.unwrap_or_default(),
                    names.jwk
                );
                return secret_auth(secret, &why, p);
            }
            (None, None) => {
                let variables = match names.secret {
                    Some(secret) => format!("neither {} nor {secret} is set", names.jwk),
                    None => format!("{} is not set", names.jwk),
                };
                p.0.push(ConfigError::new(
                    field("client_secret"),
                    format!("is not configured, nor client_jwk, and {variables}"),
                ));
                return None;
            }
        },
    };
    let key = p.check(jwk.map_err(|e| ConfigError::new(field("client_jwk"), e)));
    Some(ClientAuth::PrivateKey(Box::new(AssertionSettings {
        key: key?,
        alg: assertion.alg,
        audience: audience?,
        lifetime_s: assertion.lifetime_s,
        reuse_s,
    })))
}

fn non_empty(field: &str, value: String) -> Result<String, ConfigError> {
    if value.trim().is_empty() {
        Err(ConfigError::new(field, "must not be empty"))
    } else if value.chars().any(char::is_control) {
        Err(ConfigError::new(
            field,
            "must not contain control characters",
        ))
    } else {
        Ok(value)
    }
}

fn or_env(
    field: &str,
    configured: Option<String>,
    env_name: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ConfigError> {
    match configured {
        Some(v) => non_empty(field, v),
        None => match env(env_name).filter(|v| !v.is_empty()) {
            Some(v) => non_empty(field, v),
            None => Err(ConfigError::new(
                field,
                format!("is not configured and the environment variable {env_name} is not set"),
            )),
        },
    }
}

fn parse_endpoint(field: &str, raw: &str) -> Result<TokenEndpoint, ConfigError> {
    let uri: http::Uri = raw.parse().map_err(|e| {
        let wanted =
            "a URL such as https://login.microsoftonline.com/<tenant id>/oauth2/v2.0/token";
        ConfigError::new(field, format!("must be {wanted} ({e})"))
    })?;
    let scheme = match uri.scheme_str() {
        Some(scheme @ ("https" | "http")) => scheme,
        _ => {
            return Err(ConfigError::new(
                field,
                "must be an https:// (or http://) URL",
            ))
        }
    };
    let Some(authority) = uri.authority().filter(|a| !a.host().is_empty()) else {
        return Err(ConfigError::new(field, "has no host"));
    };
    // The parser accepts both and drops a fragment silently.
    if authority.as_str().contains('@') {
        return Err(ConfigError::new(field, "must not carry credentials"));
    }
    if raw.contains('#') {
        return Err(ConfigError::new(field, "must not have a #fragment"));
    }
    let host = authority.host().to_ascii_lowercase();
    let default_port = if scheme == "https" { 443 } else { 80 };
    let authority = match authority.port_u16() {
        Some(port) if port != default_port => format!("{host}:{port}"),
        _ => host,
    };
    // `path()` is "/" when the URL has none; `path_and_query()` would then start with the `?`.
    let path = match uri.query() {
        Some(query) => format!("{}?{query}", uri.path()),
        None => uri.path().to_string(),
    };
    Ok(TokenEndpoint {
        url: format!("{scheme}://{authority}{path}"),
        authority,
        path,
    })
}

fn validate_target(
    index: usize,
    raw: RawTarget,
    names: &[(String, Option<usize>, Grant)],
    p: &mut Problems,
) -> Option<Target> {
    let field = |name: &str| format!("targets[{index}].{name}");
    if raw.host.is_none() && raw.cluster.is_none() {
        p.0.push(ConfigError::new(
            format!("targets[{index}]"),
            "needs host or cluster (or both): where its token may go",
        ));
    }
    let host = p.check(match &raw.host {
        None => Ok(None),
        Some(host) => HostPattern::parse(host)
            .map(Some)
            .map_err(|e| ConfigError::new(field("host"), e)),
    });
    let cluster = p.check(match &raw.cluster {
        None => Ok(None),
        Some(cluster) => ClusterPattern::parse(cluster)
            .map(Some)
            .map_err(|e| ConfigError::new(field("cluster"), e)),
    });
    let path_prefix = p.check(match raw.path_prefix {
        None => Ok(None),
        Some(prefix) if !prefix.starts_with('/') => Err(ConfigError::new(
            field("path_prefix"),
            "must start with '/'",
        )),
        Some(prefix) if prefix.chars().any(|c| c.is_whitespace() || c.is_control()) => {
            Err(ConfigError::new(
                field("path_prefix"),
                "must not contain spaces or control characters",
            ))
        }
        Some(prefix) => Ok(Some(prefix)),
    });
    let wanted = raw.provider.as_deref().unwrap_or("default");
    // An invalid provider's problems are reported already; its grant still decides the rest.
    let (provider, grant) = match names.iter().find(|(name, _, _)| name == wanted) {
        Some((_, index, grant)) => (*index, Some(*grant)),
        None => {
            p.0.push(ConfigError::new(
                field("provider"),
                format!("no provider is named {wanted:?}"),
            ));
            (None, None)
        }
    };
    // The scope for on_behalf_of and client_credentials, the audience for token_exchange.
    let resource = match (grant, raw.scope, raw.audience) {
        (None, _, _) => None,
        (Some(Grant::TokenExchange), None, Some(audience)) => {
            p.check(non_empty(&field("audience"), audience))
        }
        (Some(Grant::TokenExchange), _, _) => {
            p.0.push(ConfigError::new(
                field("audience"),
                "is required (and scope is not used) with the token_exchange grant",
            ));
            None
        }
        (Some(_), Some(scope), None) => p.check(non_empty(&field("scope"), scope)),
        (Some(g), _, _) => {
            p.0.push(ConfigError::new(
                field("scope"),
                format!(
                    "is required (and audience is not used) with the {} grant",
                    g.name()
                ),
            ));
            None
        }
    };
    if raw.host.is_none() && raw.cluster.is_none() {
        return None;
    }
    Some(Target {
        host: host?,
        cluster: cluster?,
        path_prefix: path_prefix?,
        provider: provider?,
        resource: resource?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env_with(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    const ENV: &[(&str, &str)] = &[
        (
            ENV_TOKEN_ENDPOINT,
            "https://login.example/tenant/oauth2/v2.0/token",
        ),
        (ENV_CLIENT_ID, "client-from-env"),
        (ENV_CLIENT_SECRET, "secret-from-env"),
        ("OTHER_SECRET", "other-secret"),
    ];

    fn minimal() -> Value {
        json!({
            "token_cluster": "entra_id",
            "targets": [{"host": "api.example.com", "scope": "api://prod.team.api/.default"}]
        })
    }

    fn parse_value(v: &Value, env: &[(&'static str, &'static str)]) -> Result<Config, ConfigError> {
        let vars: &'static [(&'static str, &'static str)] =
            Box::leak(env.to_vec().into_boxed_slice());
        parse(v.to_string().as_bytes(), &env_with(vars)).map_err(|e| e.first().clone())
    }

    fn secret_of(cfg: &Config) -> &str {
        match &cfg.providers[0].client_auth {
            ClientAuth::Secret(secret) => secret.expose(),
            ClientAuth::PrivateKey(_) => panic!("a private key where a secret was expected"),
        }
    }

    fn error_of(v: Value) -> ConfigError {
        parse_value(&v, ENV).expect_err("configuration should be refused")
    }

    #[test]
    fn issue_example_parses_with_every_value() {
        let cfg = parse_value(
            &json!({
              "token_cluster": "entra_id",
              "token_endpoint": "https://login.microsoftonline.com/tenant/oauth2/v2.0/token",
              "client_id": "${AZURE_APP_CLIENT_ID}",
              "client_secret": "${AZURE_APP_CLIENT_SECRET}",
              "token_timeout_ms": 2500,
              "targets": [
                {"host": "api.example.com", "scope": "api://prod.team.api/.default"},
                {"host": "*.team.svc.cluster.local", "path_prefix": "/v2/", "scope": "api://prod.team.other/.default"}
              ],
              "unmatched": "deny",
              "cache": {"max_entries": 500, "expiry_skew_s": 30}
            }),
            ENV,
        )
        .unwrap();
        assert_eq!(cfg.providers[0].token_cluster, "entra_id");
        assert_eq!(
            cfg.providers[0].token_endpoint.authority,
            "login.microsoftonline.com"
        );
        assert_eq!(
            cfg.providers[0].token_endpoint.path,
            "/tenant/oauth2/v2.0/token"
        );
        assert_eq!(cfg.providers[0].client_id, "client-from-env");
        assert_eq!(secret_of(&cfg), "secret-from-env");
        assert_eq!(cfg.token_timeout, Duration::from_millis(2500));
        assert_eq!(cfg.targets.len(), 2);
        assert_eq!(cfg.targets[1].path_prefix.as_deref(), Some("/v2/"));
        assert_eq!(cfg.unmatched, Unmatched::Deny);
        assert_eq!(cfg.cache.max_entries, 500);
        assert_eq!(cfg.cache.expiry_skew_s, 30);
    }

    #[test]
    fn absent_fields_take_documented_defaults_and_environment() {
        let cfg = parse_value(&minimal(), ENV).unwrap();
        assert_eq!(
            cfg.providers[0].token_endpoint.url,
            "https://login.example/tenant/oauth2/v2.0/token"
        );
        assert_eq!(cfg.providers[0].client_id, "client-from-env");
        assert_eq!(secret_of(&cfg), "secret-from-env");
        assert_eq!(cfg.token_timeout, Duration::from_millis(5000));
        assert_eq!(cfg.unmatched, Unmatched::Strip);
        assert!(!cfg.envoy_normalizes_paths);
        assert!(!cfg.reads_route_cluster);
        assert_eq!(cfg.max_exchanges_in_flight_per_worker, 100);
        assert_eq!(cfg.providers[0].allowed_issuers, None);
        assert_eq!(cfg.providers[0].allowed_tenants, None);
        assert_eq!(cfg.cache.max_entries, 10_000);
        assert_eq!(cfg.cache.expiry_skew_s, 60);
        assert_eq!(cfg.cache.worker_entries, 1_024);
        assert_eq!(
            (cfg.cache.refresh_ahead_s, cfg.cache.refresh_ahead_percent),
            (300, 10)
        );
        assert_eq!(cfg.cache.claims_challenge_holdoff_s, 60);
        assert_eq!(cfg.subject_token.leeway_s, 60);
        assert_eq!(cfg.providers[0].audiences, None);
        assert_eq!(cfg.negative_cache_s, 5);
        assert_eq!(
            cfg.backoff,
            BackoffSettings {
                default_s: 5,
                max_s: 60
            }
        );
    }

    #[test]
    fn require_audience_accepts_the_client_id_and_its_app_id_uri() {
        let mut v = minimal();
        v["require_audience"] = json!(true);
        let cfg = parse_value(&v, ENV).unwrap();
        assert_eq!(
            cfg.providers[0].audiences,
            Some(vec![
                "client-from-env".to_string(),
                "api://client-from-env".to_string()
            ])
        );
    }

    #[test]
    fn reliability_settings_are_range_checked() {
        for (field, value) in [
            ("subject_token_leeway_s", json!(99_999)),
            ("negative_cache_s", json!(301)),
        ] {
            let mut v = minimal();
            v[field] = value;
            assert_eq!(error_of(v).field, field);
        }
        let mut v = minimal();
        v["backoff"] = json!({"max_s": 99_999});
        assert_eq!(error_of(v).field, "backoff.max_s");
        let mut v = minimal();
        v["backoff"] = json!({"defualt_s": 1});
        assert!(error_of(v).to_string().contains("defualt_s"));
    }

    #[test]
    fn explicit_values_win_over_environment() {
        let mut v = minimal();
        v["client_id"] = json!("explicit-client");
        v["client_secret"] = json!("${OTHER_SECRET}");
        let cfg = parse_value(&v, ENV).unwrap();
        assert_eq!(cfg.providers[0].client_id, "explicit-client");
        assert_eq!(secret_of(&cfg), "other-secret");
    }

    #[test]
    fn endpoint_with_port_and_query_keeps_both() {
        let mut v = minimal();
        v["token_endpoint"] = json!("http://127.0.0.1:8080/t/oauth2/v2.0/token?x=1");
        let cfg = parse_value(&v, ENV).unwrap();
        assert_eq!(cfg.providers[0].token_endpoint.authority, "127.0.0.1:8080");
        assert_eq!(
            cfg.providers[0].token_endpoint.path,
            "/t/oauth2/v2.0/token?x=1"
        );
    }

    #[test]
    fn bad_json_is_refused() {
        let e = parse(b"{\"token_cluster\": ", &env_with(ENV_STATIC))
            .unwrap_err()
            .first()
            .clone();
        assert_eq!(e.field, "configuration");
        assert!(e.problem.contains("not valid JSON"), "{e}");
    }

    const ENV_STATIC: &[(&str, &str)] = ENV;

    #[test]
    fn empty_configuration_is_refused() {
        let e = parse(b"  ", &env_with(ENV_STATIC))
            .unwrap_err()
            .first()
            .clone();
        assert_eq!(e.field, "configuration");
    }

    #[test]
    fn unknown_top_level_field_is_named() {
        let mut v = minimal();
        v["token_clustr"] = json!("typo");
        let e = error_of(v);
        assert!(e.to_string().contains("token_clustr"), "{e}");
    }

    #[test]
    fn unknown_target_field_is_named_with_its_index() {
        let mut v = minimal();
        v["targets"][0]["path_prefx"] = json!("/v1");
        let e = error_of(v);
        assert_eq!(e.field, "targets[0].path_prefx");
    }

    #[test]
    fn missing_token_cluster_is_named() {
        let mut v = minimal();
        v.as_object_mut().unwrap().remove("token_cluster");
        assert!(error_of(v).to_string().contains("token_cluster"));
    }

    #[test]
    fn missing_targets_and_empty_targets_are_refused() {
        let mut v = minimal();
        v.as_object_mut().unwrap().remove("targets");
        assert!(error_of(v).to_string().contains("targets"));
        let mut v = minimal();
        v["targets"] = json!([]);
        assert_eq!(error_of(v).field, "targets");
    }

    #[test]
    fn missing_scope_is_named_with_its_target() {
        let mut v = minimal();
        v["targets"] = json!([{"host": "a.example"}, {"host": "b.example"}]);
        let e = error_of(v);
        assert_eq!(e.field, "targets[0].scope");
        assert!(e.problem.contains("required"), "{e}");
    }

    #[test]
    fn unset_environment_reference_names_field_and_variable() {
        let mut v = minimal();
        v["client_secret"] = json!("${NOT_SET_ANYWHERE}");
        let e = error_of(v);
        assert_eq!(e.field, "client_secret");
        assert!(e.problem.contains("NOT_SET_ANYWHERE"), "{e}");
    }

    #[test]
    fn environment_reference_works_inside_targets() {
        let mut v = minimal();
        v["targets"][0]["scope"] = json!("${AZURE_APP_CLIENT_ID}");
        let cfg = parse_value(&v, ENV).unwrap();
        assert_eq!(cfg.targets[0].resource, "client-from-env");
        v["targets"][0]["scope"] = json!("${MISSING_SCOPE}");
        assert_eq!(error_of(v).field, "targets[0].scope");
    }

    #[test]
    fn missing_defaults_name_field_and_variable() {
        let e = parse_value(&minimal(), &[]).unwrap_err();
        assert_eq!(e.field, "token_endpoint");
        assert!(e.problem.contains(ENV_TOKEN_ENDPOINT), "{e}");
        let e = parse_value(&minimal(), &ENV[..1]).unwrap_err();
        assert_eq!(e.field, "client_id");
        let e = parse_value(&minimal(), &ENV[..2]).unwrap_err();
        assert_eq!(e.field, "client_secret");
        assert!(e.problem.contains(ENV_CLIENT_SECRET), "{e}");
    }

    #[test]
    fn endpoint_host_is_lowercased_and_a_default_port_dropped() {
        for (raw, authority, url) in [
            (
                "https://LOGIN.example:443",
                "login.example",
                "https://login.example/",
            ),
            (
                "http://idp.local:80/t?a=b",
                "idp.local",
                "http://idp.local/t?a=b",
            ),
            ("https://[::1]:8443/t", "[::1]:8443", "https://[::1]:8443/t"),
            (
                "https://login.example?x=1",
                "login.example",
                "https://login.example/?x=1",
            ),
        ] {
            let mut v = minimal();
            v["token_endpoint"] = json!(raw);
            let endpoint = parse_value(&v, ENV).unwrap().providers[0]
                .token_endpoint
                .clone();
            assert_eq!(
                (endpoint.authority.as_str(), endpoint.url.as_str()),
                (authority, url)
            );
        }
    }

    #[test]
    fn malformed_endpoints_are_refused() {
        for bad in [
            "not a url",
            "ftp://login.example/token",
            "https://user:pw@login.example/token",
            "https://login.example/token#frag",
            "login.example/token",
            "https:///token",
            "https://login.example/to ken",
        ] {
            let mut v = minimal();
            v["token_endpoint"] = json!(bad);
            assert_eq!(error_of(v).field, "token_endpoint", "{bad}");
        }
    }

    #[test]
    fn bad_hosts_are_refused() {
        for bad in [
            "",
            "api.example.com.",
            "api.example.com:",
            "api.example.com:0",
            "api.example.com:65536",
            "https://api.example.com",
            "a.*.example",
            "*",
            "*.",
            "*.com",
            "api/x",
            "a b",
        ] {
            let mut v = minimal();
            v["targets"][0]["host"] = json!(bad);
            assert_eq!(error_of(v).field, "targets[0].host", "{bad}");
        }
    }

    #[test]
    fn a_target_names_a_host_or_a_cluster_or_both() {
        let mut v = minimal();
        v["targets"] = json!([
            {"cluster": "outbound|80||orders.shop.svc.cluster.local", "scope": "s1"},
            {"host": "api.example.com:8080", "cluster": "api", "scope": "s2"}
        ]);
        let cfg = parse_value(&v, ENV).unwrap();
        assert!(cfg.reads_route_cluster);
        assert!(cfg.targets[0].host.is_none() && cfg.targets[0].cluster.is_some());
        assert!(cfg.targets[1].host.is_some() && cfg.targets[1].cluster.is_some());
        let mut v = minimal();
        v["targets"] = json!([{"scope": "s", "path_prefix": "/v2/"}]);
        let e = error_of(v);
        assert_eq!(e.field, "targets[0]");
        assert!(e.problem.contains("host or cluster"), "{e}");
        for bad in ["", "a b", "*|*|*|*|*"] {
            let mut v = minimal();
            v["targets"][0]["cluster"] = json!(bad);
            assert_eq!(error_of(v).field, "targets[0].cluster", "{bad:?}");
        }
    }

    #[test]
    fn unmatched_paths_and_exchange_limit_are_read_and_checked() {
        let mut v = minimal();
        v["unmatched"] = json!("passthrough");
        v["envoy_normalizes_paths"] = json!(true);
        v["max_exchanges_in_flight_per_worker"] = json!(7);
        let cfg = parse_value(&v, ENV).unwrap();
        assert_eq!(cfg.unmatched, Unmatched::Passthrough);
        assert!(cfg.envoy_normalizes_paths);
        assert_eq!(cfg.max_exchanges_in_flight_per_worker, 7);
        for bad in [0, 10_001] {
            let mut v = minimal();
            v["max_exchanges_in_flight_per_worker"] = json!(bad);
            assert_eq!(error_of(v).field, "max_exchanges_in_flight_per_worker");
        }
    }

    #[test]
    fn allowed_issuers_and_tenants_are_checked_when_loaded() {
        let mut v = minimal();
        v["allowed_issuers"] = json!(["https://login.microsoftonline.com/t/v2.0"]);
        v["allowed_tenants"] = json!(["72F988BF-86F1-41AF-91AB-2D7CD011DB47"]);
        let cfg = parse_value(&v, ENV).unwrap();
        assert_eq!(
            cfg.providers[0].allowed_tenants.as_deref(),
            Some(&["72f988bf-86f1-41af-91ab-2d7cd011db47".to_string()][..])
        );
        for (field, value, wrong) in [
            (
                "allowed_tenants",
                json!(["not-a-guid"]),
                "allowed_tenants[0]",
            ),
            ("allowed_tenants", json!([]), "allowed_tenants"),
            (
                "allowed_tenants",
                json!("72f988bf-86f1-41af-91ab-2d7cd011db47"),
                "allowed_tenants",
            ),
            (
                "allowed_issuers",
                json!(["login.microsoftonline.com"]),
                "allowed_issuers[0]",
            ),
            ("allowed_issuers", json!([5]), "allowed_issuers[0]"),
        ] {
            let mut v = minimal();
            v[field] = value;
            assert_eq!(error_of(v).field, wrong, "{field}");
        }
        let mut v = minimal();
        v["grant"] = json!("client_credentials");
        v["allowed_tenants"] = json!(["72f988bf-86f1-41af-91ab-2d7cd011db47"]);
        let e = error_of(v);
        assert_eq!(e.field, "allowed_tenants");
        assert!(e.problem.contains("client_credentials"), "{e}");
    }

    #[test]
    fn bad_path_prefix_and_scope_are_refused() {
        let mut v = minimal();
        v["targets"][0]["path_prefix"] = json!("v2/");
        assert_eq!(error_of(v).field, "targets[0].path_prefix");
        let mut v = minimal();
        v["targets"][0]["scope"] = json!(" ");
        assert_eq!(error_of(v).field, "targets[0].scope");
    }

    #[test]
    fn out_of_range_numbers_are_refused() {
        let mut v = minimal();
        v["token_timeout_ms"] = json!(0);
        assert_eq!(error_of(v).field, "token_timeout_ms");
        let mut v = minimal();
        v["token_timeout_ms"] = json!(-5);
        assert_eq!(error_of(v).field, "token_timeout_ms");
        let mut v = minimal();
        v["cache"] = json!({"max_entries": 0});
        assert_eq!(error_of(v).field, "cache.max_entries");
        let mut v = minimal();
        v["cache"] = json!({"worker_entries": 100_001});
        assert_eq!(error_of(v).field, "cache.worker_entries");
        let mut v = minimal();
        v["cache"] = json!({"claims_challenge_holdoff_s": 3_601});
        assert_eq!(error_of(v).field, "cache.claims_challenge_holdoff_s");
        let mut v = minimal();
        v["cache"] = json!({"expiry_skew_s": 100000});
        assert_eq!(error_of(v).field, "cache.expiry_skew_s");
        let mut v = minimal();
        v["cache"] = json!({"max_entrys": 5});
        assert!(error_of(v).to_string().contains("max_entrys"));
    }

    #[test]
    fn unmatched_accepts_only_documented_values() {
        let mut v = minimal();
        v["unmatched"] = json!("allow");
        let e = error_of(v);
        assert_eq!(e.field, "unmatched");
    }

    #[test]
    fn every_problem_is_reported_not_only_the_first() {
        let v = json!({
            "token_cluster": "",
            "token_endpoint": "ftp://login.example/token",
            "token_timeout_ms": 0,
            "targets": [
                {"host": "a.*.example", "scope": "api://x/.default"},
                {"host": "b.example", "path_prefix": "v2", "scope": " "}
            ],
            "cache": {"max_entries": 0},
            "backoff": {"max_s": 99999}
        });
        let vars: &'static [(&'static str, &'static str)] = &ENV[1..];
        let errors = parse(v.to_string().as_bytes(), &env_with(vars)).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "token_cluster",
                "token_endpoint",
                "token_timeout_ms",
                "cache.max_entries",
                "backoff.max_s",
                "targets[0].host",
                "targets[1].path_prefix",
                "targets[1].scope",
            ]
        );
        assert_eq!(errors.to_string().lines().count(), fields.len());
    }

    #[test]
    fn a_typo_and_the_problems_behind_it_are_reported_together() {
        let mut v = minimal();
        v["targets"] = json!([{"host": "*", "scop": "api://x/.default"}]);
        let errors = parse(v.to_string().as_bytes(), &env_with(ENV)).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["targets[0].scop", "targets[0].host", "targets[0].scope"]
        );
    }

    #[test]
    fn a_malformed_token_endpoint_says_what_form_is_wanted() {
        let mut v = minimal();
        v["token_endpoint"] = json!("login.microsoftonline.com/tenant token");
        let e = error_of(v);
        assert_eq!(e.field, "token_endpoint");
        assert!(
            e.problem
                .contains("https://login.microsoftonline.com/<tenant id>/oauth2/v2.0/token"),
            "{e}"
        );
    }

    #[test]
    fn every_problem_is_reported_in_one_pass_with_its_path() {
        let mut v = minimal();
        v["token_clustr"] = json!("typo");
        v["token_timeout_ms"] = json!(-5);
        v["unmatched"] = json!("allow");
        v["cache"] = json!({"max_entries": "many", "max_entrys": 5});
        v["providers"] = json!({"tokenx": {"grant": "magic", "client_jwk": {}}});
        v["targets"] =
            json!([{"host": "a.example", "path_prefx": "/v1"}, {"host": "b", "scope": 7}, 5]);
        let errors = parse(v.to_string().as_bytes(), &env_with(ENV)).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "providers.tokenx.grant",
                "targets[0].path_prefx",
                "targets[1].scope",
                "targets[2]",
                "token_timeout_ms",
                "unmatched",
                "cache.max_entries",
                "cache.max_entrys",
                "token_clustr",
                // Then what the values mean, in the same report.
                "providers.tokenx.token_cluster",
                "providers.tokenx.client_jwk",
                "targets[0].scope",
            ]
        );
        let text = errors.to_string();
        assert!(
            text.contains("cache.max_entrys: is not a known field"),
            "{text}"
        );
        // Each wrong value says what the field takes and what it got.
        for message in [
            "unmatched: must be `strip`, `deny` or `passthrough`, not the string \"allow\"",
            "token_timeout_ms: must be a whole number, 0 or more, not `-5`",
            "targets[1].scope: must be a string, not `7`",
        ] {
            assert!(text.contains(message), "{text}");
        }
    }

    #[test]
    fn a_settings_object_of_the_wrong_type_is_named() {
        let mut v = minimal();
        v["backoff"] = json!(5);
        let e = error_of(v);
        assert_eq!(
            (e.field.as_str(), e.problem.as_str()),
            ("backoff", "must be a JSON object")
        );
    }

    #[test]
    fn a_client_secret_of_the_wrong_type_is_refused_without_its_value() {
        let mut v = minimal();
        v["client_secret"] = json!(918273645);
        let e = error_of(v);
        assert_eq!(e.field, "client_secret");
        assert!(!e.to_string().contains("918273645"), "{e}");
    }

    #[test]
    fn every_unset_environment_reference_is_reported() {
        let mut v = minimal();
        v["client_id"] = json!("${UNSET_ONE}");
        v["targets"][0]["scope"] = json!("${UNSET_TWO}");
        let errors = parse(v.to_string().as_bytes(), &env_with(ENV)).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["client_id", "targets[0].scope"]);
    }

    fn jwk_env(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        let jwk: &'static str =
            Box::leak(crate::client_assertion::test_key::jwk().into_boxed_str());
        let mut vars = vec![
            (
                ENV_TOKEN_ENDPOINT,
                "https://login.example/tenant/oauth2/v2.0/token",
            ),
            (ENV_CLIENT_ID, "client-from-env"),
            (ENV_CLIENT_JWK, jwk),
        ];
        vars.extend_from_slice(extra);
        vars
    }

    fn assertion_settings(cfg: &Config) -> &AssertionSettings {
        match &cfg.providers[0].client_auth {
            ClientAuth::PrivateKey(settings) => settings,
            ClientAuth::Secret(_) => panic!("a secret where a private key was expected"),
        }
    }

    #[test]
    fn private_key_from_the_environment_is_preferred_over_the_secret() {
        let cfg = parse_value(&minimal(), &jwk_env(&[(ENV_CLIENT_SECRET, "s")])).unwrap();
        let settings = assertion_settings(&cfg);
        assert_eq!(settings.alg, SigningAlg::Rs256);
        assert_eq!(
            settings.audience,
            "https://login.example/tenant/oauth2/v2.0/token"
        );
        assert_eq!(settings.lifetime_s, 60);
    }

    #[test]
    fn configured_credential_wins_over_the_environment() {
        let mut v = minimal();
        v["client_secret"] = json!("explicit");
        let cfg = parse_value(&v, &jwk_env(&[])).unwrap();
        assert_eq!(
            cfg.providers[0].client_auth,
            ClientAuth::Secret(Secret("explicit".into()))
        );
        let mut v = minimal();
        v["client_jwk"] = json!("${AZURE_APP_JWK}");
        v["client_assertion"] =
            json!({"alg": "PS256", "audience": "https://issuer.example/v2.0", "lifetime_s": 600});
        let cfg = parse_value(&v, &jwk_env(&[(ENV_CLIENT_SECRET, "s")])).unwrap();
        let settings = assertion_settings(&cfg);
        assert_eq!(settings.alg, SigningAlg::Ps256);
        assert_eq!(settings.audience, "https://issuer.example/v2.0");
        assert_eq!(settings.lifetime_s, 600);
    }

    #[test]
    fn a_jwk_object_is_accepted_inline() {
        let mut v = minimal();
        v["client_jwk"] = crate::json::parse(crate::client_assertion::test_key::jwk()).unwrap();
        assert!(matches!(
            parse_value(&v, ENV).unwrap().providers[0].client_auth,
            ClientAuth::PrivateKey(_)
        ));
    }

    #[test]
    fn client_assertion_settings_with_a_secret_are_refused_by_name() {
        let mut v = minimal();
        v["client_secret"] = json!("s");
        v["client_assertion"] = json!({"reuse_s": 10});
        let e = parse_value(&v, &jwk_env(&[])).unwrap_err();
        assert_eq!(e.field, "client_assertion");
        assert!(e.problem.contains("configured with client_secret"), "{e}");
        // From the environment: the secret is used because the key variable is not set.
        let mut v = minimal();
        v["client_assertion"] = json!({"alg": "PS256"});
        let e = parse_value(&v, ENV).unwrap_err();
        assert_eq!(e.field, "client_assertion");
        assert!(
            e.problem.contains(ENV_CLIENT_SECRET) && e.problem.contains(ENV_CLIENT_JWK),
            "{e}"
        );
        assert!(!e.problem.contains("secret-from-env"), "{e}");
        // An empty object sets nothing, and the key variable set makes the settings apply.
        v["client_assertion"] = json!({});
        assert_eq!(secret_of(&parse_value(&v, ENV).unwrap()), "secret-from-env");
        v["client_assertion"] = json!({"alg": "PS256"});
        let cfg = parse_value(&v, &jwk_env(&[(ENV_CLIENT_SECRET, "s")])).unwrap();
        assert_eq!(assertion_settings(&cfg).alg, SigningAlg::Ps256);
    }

    #[test]
    fn secret_and_jwk_together_are_refused() {
        let mut v = minimal();
        v["client_secret"] = json!("s");
        v["client_jwk"] = json!("${AZURE_APP_JWK}");
        let e = parse_value(&v, &jwk_env(&[])).unwrap_err();
        assert_eq!(e.field, "client_jwk");
        assert!(e.problem.contains("not both"), "{e}");
    }

    #[test]
    fn bad_jwk_and_assertion_settings_are_refused_by_name() {
        let mut v = minimal();
        v["client_jwk"] = json!("{\"kty\": \"RSA\", \"n\": \"secret-material\"}");
        let e = parse_value(&v, ENV).unwrap_err();
        assert_eq!(e.field, "client_jwk");
        assert!(!e.problem.contains("secret-material"), "{e}");
        let mut v = minimal();
        v["client_assertion"] = json!({"lifetime_s": 601});
        assert_eq!(
            parse_value(&v, &jwk_env(&[])).unwrap_err().field,
            "client_assertion.lifetime_s"
        );
        let mut v = minimal();
        v["client_assertion"] = json!({"alg": "HS256"});
        assert!(parse_value(&v, &jwk_env(&[]))
            .unwrap_err()
            .field
            .starts_with("client_assertion"));
    }

    #[test]
    fn an_assertion_is_sent_again_for_half_its_lifetime_by_default_with_on_behalf_of_only() {
        let reuse = |cfg: &Config| -> Vec<u64> {
            let settings = cfg.providers.iter().map(|p| match &p.client_auth {
                ClientAuth::PrivateKey(settings) => settings.reuse_s,
                ClientAuth::Secret(_) => panic!("a secret where a private key was expected"),
            });
            settings.collect()
        };
        let env = jwk_env(&[
            (ENV_TOKEN_X_ENDPOINT, "https://tokenx.example/token"),
            (ENV_TOKEN_X_CLIENT_ID, "dev:team:me"),
        ]);
        // on_behalf_of, client_credentials, token_exchange.
        assert_eq!(reuse(&parse_value(&mixed(), &env).unwrap()), [30, 0, 0]);
        let mut v = mixed();
        v["client_assertion"] = json!({"lifetime_s": 600});
        v["providers"]["tokenx"]["client_assertion"] = json!({"reuse_s": 20});
        assert_eq!(reuse(&parse_value(&v, &env).unwrap()), [300, 0, 20]);
        v["client_assertion"] = json!({"reuse_s": 0});
        assert_eq!(reuse(&parse_value(&v, &env).unwrap()), [0, 0, 20]);
    }

    #[test]
    fn an_assertion_sent_again_after_it_expires_is_refused_by_name() {
        let mut v = minimal();
        v["client_assertion"] = json!({"lifetime_s": 60, "reuse_s": 60});
        let e = parse_value(&v, &jwk_env(&[])).unwrap_err();
        assert_eq!(e.field, "client_assertion.reuse_s");
        assert!(e.problem.contains("less than"), "{e}");
        let mut v = mixed();
        v["providers"]["tokenx"]["client_assertion"] = json!({"reuse_s": "10"});
        let env = jwk_env(&[
            (ENV_TOKEN_X_ENDPOINT, "https://tokenx.example/token"),
            (ENV_TOKEN_X_CLIENT_ID, "dev:team:me"),
        ]);
        let e = parse_value(&v, &env).unwrap_err();
        assert_eq!(e.field, "providers.tokenx.client_assertion.reuse_s");
    }

    fn mixed() -> Value {
        json!({
            "token_cluster": "entra_id",
            "providers": {
                "app": {"token_cluster": "entra_id", "grant": "client_credentials",
                        "existing_authorization": "keep"},
                "tokenx": {"token_cluster": "tokenx", "grant": "token_exchange",
                           "client_jwk": "${AZURE_APP_JWK}",
                           "client_assertion": {"alg": "RS256"}}
            },
            "targets": [
                {"host": "obo.example", "scope": "api://obo/.default"},
                {"host": "app.example", "provider": "app", "scope": "api://app/.default"},
                {"host": "tx.example", "provider": "tokenx", "audience": "dev:team:app"}
            ]
        })
    }

    #[test]
    fn providers_each_get_their_grant_defaults_and_targets_find_theirs() {
        let tokenx_env: Vec<(&'static str, &'static str)> = jwk_env(&[
            (ENV_CLIENT_SECRET, "azure-secret"),
            (ENV_TOKEN_X_ENDPOINT, "https://tokenx.example/token"),
            (ENV_TOKEN_X_CLIENT_ID, "dev:team:me"),
        ]);
        let cfg = parse_value(&mixed(), &tokenx_env).unwrap();
        let names: Vec<(&str, Grant)> = cfg
            .providers
            .iter()
            .map(|p| (p.name.as_str(), p.grant))
            .collect();
        assert_eq!(
            names,
            [
                ("default", Grant::OnBehalfOf),
                ("app", Grant::ClientCredentials),
                ("tokenx", Grant::TokenExchange)
            ]
        );
        let tokenx = &cfg.providers[2];
        assert_eq!(tokenx.token_endpoint.url, "https://tokenx.example/token");
        assert_eq!(tokenx.client_id, "dev:team:me");
        assert_eq!(
            cfg.providers[1].existing_authorization,
            ExistingAuthorization::Keep
        );
        assert_eq!(cfg.providers[1].client_id, "client-from-env");
        let targets: Vec<(usize, &str)> = cfg
            .targets
            .iter()
            .map(|t| (t.provider, t.resource.as_str()))
            .collect();
        assert_eq!(
            targets,
            [
                (0, "api://obo/.default"),
                (1, "api://app/.default"),
                (2, "dev:team:app")
            ]
        );
    }

    #[test]
    fn token_exchange_defaults_to_the_token_x_variables() {
        let mut v = mixed();
        v["providers"]["tokenx"]
            .as_object_mut()
            .unwrap()
            .remove("client_jwk");
        let jwk: &'static str =
            Box::leak(crate::client_assertion::test_key::jwk().into_boxed_str());
        let vars = jwk_env(&[
            (ENV_TOKEN_X_ENDPOINT, "https://tokenx.example/token"),
            (ENV_TOKEN_X_CLIENT_ID, "dev:team:me"),
            (ENV_TOKEN_X_JWK, jwk),
        ]);
        let cfg = parse_value(&v, &vars).unwrap();
        assert!(matches!(
            cfg.providers[2].client_auth,
            ClientAuth::PrivateKey(_)
        ));
        // Without TOKEN_X_PRIVATE_JWK, the Azure secret is not a fallback for TokenX.
        let vars = jwk_env(&[
            (ENV_TOKEN_X_ENDPOINT, "https://tokenx.example/token"),
            (ENV_TOKEN_X_CLIENT_ID, "dev:team:me"),
        ]);
        let e = parse_value(&v, &vars).unwrap_err();
        assert_eq!(e.field, "providers.tokenx.client_secret");
        assert!(e.problem.contains(ENV_TOKEN_X_JWK), "{e}");
    }

    #[test]
    fn provider_mistakes_are_named() {
        let vars = jwk_env(&[
            (ENV_TOKEN_X_ENDPOINT, "https://tokenx.example/token"),
            (ENV_TOKEN_X_CLIENT_ID, "dev:team:me"),
        ]);
        type Change = Box<dyn Fn(&mut Value)>;
        let cases: Vec<(Change, &str)> = vec![
            (
                Box::new(|v| v["targets"][1]["provider"] = json!("nope")),
                "targets[1].provider",
            ),
            (
                Box::new(|v| {
                    v["targets"][2]["scope"] = json!("api://x/.default");
                }),
                "targets[2].audience",
            ),
            (
                Box::new(|v| {
                    v["targets"][1].as_object_mut().unwrap().remove("scope");
                    v["targets"][1]["audience"] = json!("a");
                }),
                "targets[1].scope",
            ),
            (
                Box::new(|v| {
                    v["providers"]["app"]
                        .as_object_mut()
                        .unwrap()
                        .remove("token_cluster");
                }),
                "providers.app.token_cluster",
            ),
            (
                Box::new(|v| v["providers"]["tokenx"]["existing_authorization"] = json!("keep")),
                "providers.tokenx.existing_authorization",
            ),
            (
                Box::new(|v| v["providers"]["app"]["grant"] = json!("password")),
                "providers",
            ),
            (
                Box::new(|v| v["providers"]["default"] = json!({"token_cluster": "x"})),
                "providers.default",
            ),
        ];
        for (change, field) in cases {
            let mut v = mixed();
            change(&mut v);
            let e = parse_value(&v, &vars).unwrap_err();
            assert!(e.field.starts_with(field), "{field}: {e}");
        }
    }

    #[test]
    fn the_default_provider_is_needed_only_when_a_target_uses_it() {
        let v = json!({
            "providers": {"app": {"token_cluster": "entra_id", "grant": "client_credentials"}},
            "targets": [{"host": "app.example", "provider": "app", "scope": "api://app/.default"}]
        });
        let cfg = parse_value(&v, ENV).unwrap();
        assert_eq!(cfg.providers.len(), 1);
        assert_eq!(cfg.targets[0].provider, 0);
        let mut v = v;
        v["targets"]
            .as_array_mut()
            .unwrap()
            .push(json!({"host": "obo.example", "scope": "api://obo/.default"}));
        let e = parse_value(&v, ENV).unwrap_err();
        assert_eq!(e.field, "token_cluster");
    }

    #[test]
    fn secret_never_shows_in_debug_output() {
        let cfg = parse_value(&minimal(), ENV).unwrap();
        let dump = format!("{cfg:?}");
        assert!(!dump.contains("secret-from-env"), "{dump}");
    }
}
