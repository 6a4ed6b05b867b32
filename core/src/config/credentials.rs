//! The application's credential at a provider: a client secret, or a private key.

use serde_json::Value;

use super::env::{EnvNames, ENV_WI_TOKEN_FILE};
use super::fields::{non_empty, ConfigError, Problems};
use super::raw::{RawAssertion, RawSource};
use super::types::{ClientAuth, Grant, Secret, TENANT_PLACEHOLDER};
use crate::assertion_source::{
    AssertionSource, SourceFormat, FEDERATED_TOKEN_CLUSTER, IMDS_AUTHORITY, IMDS_PATH,
};
use crate::client_assertion::{AssertionSettings, ClientKey};

const MAX_ASSERTION_LIFETIME_S: u64 = 600;

pub(super) struct RawCredentials {
    pub(super) secret: Option<String>,
    pub(super) jwk: Option<Value>,
    pub(super) assertion: RawAssertion,
    pub(super) source: RawSource,
}

/// Exactly one of a secret, a private key and an assertion source; configured values win, then the
/// grant's key variable (`AZURE_APP_JWK`, `TOKEN_X_PRIVATE_JWK`), then its secret variable, then
/// workload identity's token file.
pub(super) fn client_auth(
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
    if raw.source.configured {
        if raw.secret.is_some() || raw.jwk.is_some() {
            p.0.push(ConfigError::new(
                field("client_assertion_source"),
                "configure one of client_secret, client_jwk and client_assertion_source",
            ));
            return None;
        }
        if assertion.configured {
            p.0.push(ConfigError::new(
                field("client_assertion"),
                "applies only with a private key (client_jwk), and this provider fetches its assertion (client_assertion_source)",
            ));
        }
        let source = assertion_source(&field("client_assertion_source."), raw.source, p)?;
        return Some(ClientAuth::Fetched(Box::new(source)));
    }
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
            (None, None) if names.workload_identity && env_value(ENV_WI_TOKEN_FILE).is_some() => {
                if assertion.configured {
                    p.0.push(ConfigError::new(
                        field("client_assertion"),
                        format!("applies only with a private key (client_jwk), and this provider authenticates with workload identity's token file because {ENV_WI_TOKEN_FILE} is set"),
                    ));
                }
                return Some(ClientAuth::Fetched(Box::new(AssertionSource {
                    cluster: FEDERATED_TOKEN_CLUSTER.to_string(),
                    path: "/".to_string(),
                    authority: FEDERATED_TOKEN_CLUSTER.to_string(),
                    format: SourceFormat::Text,
                })));
            }
            (None, None) => {
                let variables = match names.secret {
                    Some(secret) => format!("neither {} nor {secret} is set", names.jwk),
                    None => format!("{} is not set", names.jwk),
                };
                let wi = if names.workload_identity {
                    format!(", nor {ENV_WI_TOKEN_FILE} (workload identity)")
                } else {
                    String::new()
                };
                p.0.push(ConfigError::new(
                    field("client_secret"),
                    format!("is not configured, nor client_jwk or client_assertion_source, and {variables}{wi}"),
                ));
                return None;
            }
        },
    };
    let key = p.check(jwk.map_err(|e| ConfigError::new(field("client_jwk"), e)));
    if endpoint_url.is_some_and(|url| url.contains(TENANT_PLACEHOLDER)) {
        p.0.push(ConfigError::new(
            field("client_jwk"),
            "signs assertions for one tenant's token endpoint, and token_endpoint holds {tenant}: use client_secret or client_assertion_source (workload identity) with a multi-tenant endpoint",
        ));
        return None;
    }
    Some(ClientAuth::PrivateKey(Box::new(AssertionSettings {
        key: key?,
        alg: assertion.alg,
        audience: audience?,
        lifetime_s: assertion.lifetime_s,
        reuse_s,
    })))
}

/// `client_assertion_source`: its cluster, and the path and authority its format implies unless set.
fn assertion_source(prefix: &str, raw: RawSource, p: &mut Problems) -> Option<AssertionSource> {
    let field = |f: &str| format!("{prefix}{f}");
    let cluster = match raw.cluster {
        Some(cluster) => p.check(non_empty(&field("cluster"), cluster)),
        None => {
            p.0.push(ConfigError::new(field("cluster"), "is required"));
            None
        }
    };
    if raw.client_id.is_some() && raw.format != SourceFormat::Imds {
        p.0.push(ConfigError::new(
            field("client_id"),
            "applies only to format imds (a user-assigned managed identity)",
        ));
    }
    let path = match (raw.path, raw.format) {
        (Some(path), _) if !path.starts_with('/') => {
            p.0.push(ConfigError::new(field("path"), "must start with /"));
            None
        }
        (Some(path), _) => Some(path),
        (None, SourceFormat::Text) => Some("/".to_string()),
        (None, SourceFormat::Imds) => Some(match &raw.client_id {
            Some(id) => format!(
                "{IMDS_PATH}&client_id={}",
                form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>()
            ),
            None => IMDS_PATH.to_string(),
        }),
    };
    let authority = match (raw.authority, raw.format) {
        (Some(a), _) => p.check(non_empty(&field("authority"), a)),
        (None, SourceFormat::Imds) => Some(IMDS_AUTHORITY.to_string()),
        (None, SourceFormat::Text) => cluster.clone(),
    };
    Some(AssertionSource {
        cluster: cluster?,
        path: path?,
        authority: authority?,
        format: raw.format,
    })
}
