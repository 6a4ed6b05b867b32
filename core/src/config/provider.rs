//! Checking one provider: cluster, endpoint, client id, credential, the subject tokens it accepts.

use serde_json::Value;

use super::credentials::{client_auth, RawCredentials};
use super::env::{or_env, EnvNames, WorkloadIdentity};
use super::fields::{non_empty, ConfigError, Problems};
use super::raw::RawProvider;
use super::types::{Grant, Provider, TokenEndpoint, TENANT_PLACEHOLDER};
use crate::json;
use crate::subject_token::{is_guid, ANY_TENANT};

/// One provider's fields, named with `prefix` (`""` for the top level, `providers.NAME.`).
pub(super) fn validate_provider(
    prefix: &str,
    name: &str,
    raw: RawProvider,
    require_audience: bool,
    env: &dyn Fn(&str) -> Option<String>,
    p: &mut Problems,
) -> Option<Provider> {
    let field = |f: &str| format!("{prefix}{f}");
    let names = EnvNames::of(raw.grant);
    // Workload identity is the last default, for what is neither configured nor in AZURE_APP_*;
    // its variables are read only then.
    let workload_identity = || WorkloadIdentity::from_env(&names, env);
    // The authority host whose cluster workload identity made the token cluster, if it did.
    let mut defaulted_for = None;
    let token_cluster = match raw.token_cluster {
        Some(cluster) => p.check(non_empty(&field("token_cluster"), cluster)),
        None => match workload_identity() {
            // Istio's name for the cluster of a ServiceEntry for the authority host.
            Some(wi) => {
                let cluster = format!("outbound|80||{}", wi.authority_host);
                defaulted_for = Some(wi.authority_host);
                Some(cluster)
            }
            None => {
                let why = if prefix.is_empty() {
                    "is required: a target uses the default provider (no `provider`)"
                } else {
                    "is required"
                };
                p.0.push(ConfigError::new(field("token_cluster"), why));
                None
            }
        },
    };
    let (endpoint_configured, client_id_configured) =
        (raw.token_endpoint.is_some(), raw.client_id.is_some());
    let wi_default = |configured: bool, value: Option<String>, e: ConfigError| match value {
        Some(v) if !configured => Ok(v),
        _ => Err(e),
    };
    let token_endpoint = p.check(
        or_env(
            &field("token_endpoint"),
            raw.token_endpoint,
            names.endpoint,
            env,
        )
        .or_else(|e| {
            let value = workload_identity().and_then(|wi| wi.token_endpoint);
            wi_default(endpoint_configured, value, e)
        })
        .and_then(|e| parse_endpoint(&field("token_endpoint"), &e)),
    );
    // Workload identity's default cluster is its authority host's: never for an endpoint elsewhere.
    let token_cluster = match (&token_endpoint, &defaulted_for) {
        (Some(endpoint), Some(authority_host))
            if !host_of(&endpoint.authority).eq_ignore_ascii_case(authority_host) =>
        {
            p.0.push(ConfigError::new(
                field("token_cluster"),
                format!(
                    "is required: token_endpoint's host {} is not workload identity's authority host {authority_host}",
                    endpoint.authority
                ),
            ));
            None
        }
        _ => token_cluster,
    };
    let client_id = p.check(
        or_env(&field("client_id"), raw.client_id, names.client_id, env).or_else(|e| {
            let value = workload_identity().and_then(|wi| wi.client_id);
            wi_default(client_id_configured, value, e)
        }),
    );
    let endpoint_url = token_endpoint.as_ref().map(|e| e.url.as_str());
    let credentials = RawCredentials {
        secret: raw.client_secret,
        jwk: raw.client_jwk,
        assertion: raw.client_assertion,
        source: raw.client_assertion_source,
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
        |tenant| (is_guid(tenant) || tenant == ANY_TENANT).then(|| tenant.to_ascii_lowercase()),
        "a tenant id (a GUID such as 72f988bf-86f1-41af-91ab-2d7cd011db47), or \"*\" alone for any",
        p,
    );
    let allowed_tenants = allowed_tenants.and_then(|tenants| {
        // (Another grant with {tenant} is refused below, by token_endpoint.)
        let per_tenant = token_endpoint.as_ref().is_some_and(|e| e.per_tenant)
            && raw.grant == Grant::OnBehalfOf;
        match tenants {
            Some(list) if list.len() > 1 && list.iter().any(|t| t == ANY_TENANT) => {
                let why = "holds \"*\" (any tenant) beside tenant ids: write one or the other";
                p.0.push(ConfigError::new(field("allowed_tenants"), why));
                None
            }
            None if per_tenant => {
                p.0.push(ConfigError::new(
                    field("allowed_tenants"),
                    "is required when token_endpoint holds {tenant}: the tenant ids whose users may call, or [\"*\"] for any tenant",
                ));
                None
            }
            tenants => Some(tenants),
        }
    });
    if token_endpoint.as_ref().is_some_and(|e| e.per_tenant) && raw.grant != Grant::OnBehalfOf {
        p.0.push(ConfigError::new(
            field("token_endpoint"),
            format!(
                "may hold {{tenant}} only with grant on_behalf_of (the caller's tid), not {}",
                raw.grant.name()
            ),
        ));
    }
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
        // Set by `actor::resolve_actors`, once every provider is known.
        actor: None,
    })
}

/// `allowed_issuers` or `allowed_tenants`: Some(None) when absent; None when wrong (reported).
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

fn parse_endpoint(field: &str, raw: &str) -> Result<TokenEndpoint, ConfigError> {
    let per_tenant = raw.contains(TENANT_PLACEHOLDER);
    if per_tenant && raw.matches(TENANT_PLACEHOLDER).count() > 1 {
        return Err(ConfigError::new(field, "may hold {tenant} once"));
    }
    // Checked with a tenant in its place; kept with `{tenant}` to fill per request.
    let filled = raw.replace(TENANT_PLACEHOLDER, "00000000-0000-0000-0000-000000000000");
    let raw = filled.as_str();
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
    let path = if per_tenant {
        // Once in all, and in the path: a stand-in written out elsewhere would otherwise pass
        // {tenant} in the host or the query off as the path's.
        let in_path = uri.path().contains("00000000-0000-0000-0000-000000000000");
        if !in_path || raw.matches("00000000-0000-0000-0000-000000000000").count() != 1 {
            return Err(ConfigError::new(
                field,
                "may hold {tenant} only in its path",
            ));
        }
        path.replace("00000000-0000-0000-0000-000000000000", TENANT_PLACEHOLDER)
    } else {
        path
    };
    Ok(TokenEndpoint {
        url: format!("{scheme}://{authority}{path}"),
        authority,
        path,
        per_tenant,
    })
}

/// An authority's host, without its port (`[::1]` keeps its brackets).
fn host_of(authority: &str) -> &str {
    match authority.strip_prefix('[') {
        Some(rest) => rest
            .find(']')
            .map_or(authority, |end| &authority[..end + 2]),
        None => authority.split(':').next().unwrap_or(authority),
    }
}
