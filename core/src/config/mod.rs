//! The plugin configuration, validated once in `on_configure`: `parse` runs `env` (`${NAME}`),
//! then `raw` (each field with its type, through `fields`), then `validate` into `types`.

mod actor;
mod credentials;
mod env;
mod fields;
mod provider;
mod raw;
mod types;
mod validate;

#[cfg(test)]
mod tests;

use serde_json::Value;

pub use env::{
    ENV_CLIENT_ID, ENV_CLIENT_JWK, ENV_CLIENT_SECRET, ENV_TOKEN_ENDPOINT, ENV_TOKEN_X_CLIENT_ID,
    ENV_TOKEN_X_ENDPOINT, ENV_TOKEN_X_JWK, ENV_WI_AUTHORITY_HOST, ENV_WI_CLIENT_ID,
    ENV_WI_TENANT_ID, ENV_WI_TOKEN_FILE,
};
pub use fields::{ConfigError, ConfigErrors};
pub use types::{
    Actor, BackoffSettings, CacheSettings, ClientAuth, Config, ExistingAuthorization, Grant,
    Provider, Secret, SubjectTokenSettings, TokenEndpoint, Unmatched,
};

use env::expand_env;
use fields::{Fields, Problems};
use raw::RawConfig;
use validate::validate;

/// `env` reads the VM's environment (`${NAME}` values and the `AZURE_*` defaults).
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
    // Types and unknown fields first, then values, in one report that names each field once.
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

/// One line about a valid configuration, for the log and `obo-config`.
pub fn summary(config: &Config) -> String {
    let providers: Vec<String> = config
        .providers
        .iter()
        .map(|p| {
            let credential = match &p.client_auth {
                ClientAuth::Secret(_) => "client secret".to_string(),
                ClientAuth::PrivateKey(_) => "private key".to_string(),
                ClientAuth::Fetched(source) => {
                    format!("assertion fetched from cluster {}", source.cluster)
                }
            };
            let actor = match &p.actor {
                Some(actor) => format!(
                    ", actor {} for {}",
                    config.providers[actor.provider].name, actor.scope
                ),
                None => String::new(),
            };
            format!(
                "{} ({} via cluster {}, {}, {credential}{actor})",
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
