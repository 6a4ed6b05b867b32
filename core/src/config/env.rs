//! The VM's environment: `${NAME}` values, and the variables a provider's fields default to.

use serde_json::Value;

use super::fields::{non_empty, ConfigError, Problems};
use super::types::Grant;

pub const ENV_TOKEN_ENDPOINT: &str = "AZURE_OPENID_CONFIG_TOKEN_ENDPOINT";
pub const ENV_CLIENT_ID: &str = "AZURE_APP_CLIENT_ID";
pub const ENV_CLIENT_SECRET: &str = "AZURE_APP_CLIENT_SECRET";
/// The application's private key as a JWK; preferred over the secret when both are set.
pub const ENV_CLIENT_JWK: &str = "AZURE_APP_JWK";
/// NAIS TokenX: the defaults of a `token_exchange` provider.
pub const ENV_TOKEN_X_ENDPOINT: &str = "TOKEN_X_TOKEN_ENDPOINT";
pub const ENV_TOKEN_X_CLIENT_ID: &str = "TOKEN_X_CLIENT_ID";
pub const ENV_TOKEN_X_JWK: &str = "TOKEN_X_PRIVATE_JWK";

/// Workload identity on AKS: its webhook sets these in the pod, and the token file is the
/// credential (served to the filter by Envoy: `client_assertion_source`).
pub const ENV_WI_CLIENT_ID: &str = "AZURE_CLIENT_ID";
pub const ENV_WI_TENANT_ID: &str = "AZURE_TENANT_ID";
pub const ENV_WI_AUTHORITY_HOST: &str = "AZURE_AUTHORITY_HOST";
pub const ENV_WI_TOKEN_FILE: &str = "AZURE_FEDERATED_TOKEN_FILE";
const DEFAULT_AUTHORITY_HOST: &str = "https://login.microsoftonline.com/";

/// The environment variables a provider's fields default to.
pub(super) struct EnvNames {
    pub(super) endpoint: &'static str,
    pub(super) client_id: &'static str,
    pub(super) jwk: &'static str,
    pub(super) secret: Option<&'static str>,
    /// Whether workload identity's variables are the last default (Entra ID's grants).
    pub(super) workload_identity: bool,
}

impl EnvNames {
    pub(super) fn of(grant: Grant) -> EnvNames {
        match grant {
            Grant::OnBehalfOf | Grant::ClientCredentials => EnvNames {
                endpoint: ENV_TOKEN_ENDPOINT,
                client_id: ENV_CLIENT_ID,
                jwk: ENV_CLIENT_JWK,
                secret: Some(ENV_CLIENT_SECRET),
                workload_identity: true,
            },
            Grant::TokenExchange => EnvNames {
                endpoint: ENV_TOKEN_X_ENDPOINT,
                client_id: ENV_TOKEN_X_CLIENT_ID,
                jwk: ENV_TOKEN_X_JWK,
                secret: None,
                workload_identity: false,
            },
        }
    }
}

/// Replaces every string value of the form `${NAME}` with the environment variable NAME.
pub(super) fn expand_env(
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

pub(super) fn or_env(
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

/// Workload identity's settings, when its token file is named in the environment.
pub(super) struct WorkloadIdentity {
    pub(super) client_id: Option<String>,
    /// `{AZURE_AUTHORITY_HOST}{AZURE_TENANT_ID}/oauth2/v2.0/token`, with the tenant set.
    pub(super) token_endpoint: Option<String>,
    /// The authority host's name (`login.microsoftonline.com`), for Istio's cluster name.
    pub(super) authority_host: String,
}

impl WorkloadIdentity {
    pub(super) fn from_env(
        names: &EnvNames,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Option<WorkloadIdentity> {
        let value = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        if !names.workload_identity {
            return None;
        }
        value(ENV_WI_TOKEN_FILE)?;
        let host = value(ENV_WI_AUTHORITY_HOST).unwrap_or_else(|| DEFAULT_AUTHORITY_HOST.into());
        let host = host.trim_end_matches('/').to_string();
        let token_endpoint = value(ENV_WI_TENANT_ID)
            .map(|tenant| format!("{host}/{}/oauth2/v2.0/token", tenant.trim()));
        let authority_host = host
            .split_once("://")
            .map_or(host.as_str(), |(_, rest)| rest)
            .split(['/', ':'])
            .next()
            .unwrap_or_default()
            .to_string();
        Some(WorkloadIdentity {
            client_id: value(ENV_WI_CLIENT_ID),
            token_endpoint,
            authority_host,
        })
    }
}
