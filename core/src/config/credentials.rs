//! The application's credential at a provider: a client secret, or a private key.

use serde_json::Value;

use super::env::EnvNames;
use super::fields::{non_empty, ConfigError, Problems};
use super::raw::RawAssertion;
use super::types::{ClientAuth, Grant, Secret};
use crate::client_assertion::{AssertionSettings, ClientKey};

const MAX_ASSERTION_LIFETIME_S: u64 = 600;

pub(super) struct RawCredentials {
    pub(super) secret: Option<String>,
    pub(super) jwk: Option<Value>,
    pub(super) assertion: RawAssertion,
}

/// Exactly one of a secret and a private key; configured values win, then the grant's key
/// variable (`AZURE_APP_JWK`, `TOKEN_X_PRIVATE_JWK`), then its secret variable.
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
