//! The token request of each grant: a form-encoded POST with the fields each one documents
//! (`grant_type` from `GRANT_TYPE_*` below; the credential is `client_secret`, or
//! `client_assertion_type` and `client_assertion`):
//! - `on_behalf_of` (Microsoft identity platform): `client_id`, credential, `assertion`, `scope`,
//!   `requested_token_use=on_behalf_of`;
//! - `client_credentials` (RFC 6749): `client_id`, credential, `scope`;
//! - `token_exchange` (RFC 8693, as NAIS TokenX expects): credential (`client_id` only beside a
//!   secret), `subject_token_type`, `subject_token`, `audience`; with an `actor` (delegation),
//!   `actor_token` and `actor_token_type` too.

use crate::assertion_source::HeldAssertion;
use crate::client_assertion::{LastAssertion, CLIENT_ASSERTION_TYPE};
use crate::config::{ClientAuth, Grant, Provider};
use crate::error_reply::Refusal;
use crate::host::{Callout, DispatchError, Host, LogLevel};
use crate::metrics::Counter;

pub const GRANT_TYPE_JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
pub const GRANT_TYPE_CLIENT_CREDENTIALS: &str = "client_credentials";
pub const GRANT_TYPE_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const TOKEN_TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
pub const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded";

pub enum ClientCredential<'a> {
    Secret(&'a str),
    Assertion(&'a str),
}

/// The secret, or the provider's assertion valid at `arrive_by`: signed (`last`, anew when due)
/// or fetched (`fetched`; None while the worker holds none).
pub fn client_credential<'a>(
    provider: &'a Provider,
    last: &'a mut LastAssertion,
    fetched: &'a HeldAssertion,
    now: u64,
    arrive_by: u64,
) -> Result<Option<ClientCredential<'a>>, String> {
    match &provider.client_auth {
        ClientAuth::Secret(secret) => Ok(Some(ClientCredential::Secret(secret.expose()))),
        ClientAuth::PrivateKey(settings) => last
            .for_request(settings, &provider.client_id, now, arrive_by)
            .map(|jwt| Some(ClientCredential::Assertion(jwt))),
        ClientAuth::Fetched(_) => Ok(fetched.usable(arrive_by).map(ClientCredential::Assertion)),
    }
}

/// For whom a token is asked: the caller's token (empty for `client_credentials`), its tenant where
/// the endpoint is per tenant, and the actor's token where the provider delegates.
#[derive(Clone, Copy, Default)]
pub struct OnBehalf<'a> {
    pub subject_token: &'a str,
    pub tenant: Option<&'a str>,
    pub actor_token: Option<&'a str>,
}

/// `resource` is the scope or the audience. The body holds the client's credential and the subject
/// and actor tokens: it is sent, never logged.
/// `indicators`: RFC 8707's `resource` parameters, one each.
pub fn form_body(
    provider: &Provider,
    credential: &ClientCredential<'_>,
    (resource, indicators): (&str, &[String]),
    on_behalf: OnBehalf<'_>,
) -> Vec<u8> {
    let subject_token = on_behalf.subject_token;
    let mut form = form_urlencoded::Serializer::new(String::new());
    let grant_type = match provider.grant {
        Grant::OnBehalfOf => GRANT_TYPE_JWT_BEARER,
        Grant::ClientCredentials => GRANT_TYPE_CLIENT_CREDENTIALS,
        Grant::TokenExchange => GRANT_TYPE_TOKEN_EXCHANGE,
    };
    form.append_pair("grant_type", grant_type);
    // RFC 8693 servers such as TokenX know the client from its assertion.
    let assertion_alone = provider.grant == Grant::TokenExchange
        && matches!(credential, ClientCredential::Assertion(_));
    if !assertion_alone {
        form.append_pair("client_id", &provider.client_id);
    }
    match credential {
        ClientCredential::Secret(secret) => form.append_pair("client_secret", secret),
        ClientCredential::Assertion(jwt) => form
            .append_pair("client_assertion_type", CLIENT_ASSERTION_TYPE)
            .append_pair("client_assertion", jwt),
    };
    match provider.grant {
        Grant::OnBehalfOf => form
            .append_pair("assertion", subject_token)
            .append_pair("scope", resource)
            .append_pair("requested_token_use", "on_behalf_of"),
        Grant::ClientCredentials => form.append_pair("scope", resource),
        Grant::TokenExchange => form
            .append_pair("subject_token_type", TOKEN_TYPE_JWT)
            .append_pair("subject_token", subject_token)
            .append_pair("audience", resource),
    };
    if let (Some(actor), Some(actor_token)) = (&provider.actor, on_behalf.actor_token) {
        form.append_pair("actor_token", actor_token)
            .append_pair("actor_token_type", &actor.token_type);
    }
    for indicator in indicators {
        form.append_pair("resource", indicator);
    }
    form.finish().into_bytes()
}

/// `path`: the endpoint's, with the tenant filled in where it has one.
pub fn headers<'a>(provider: &'a Provider, path: &'a str) -> [(&'a str, &'a str); 5] {
    [
        (":method", "POST"),
        (":path", path),
        (":authority", &provider.token_endpoint.authority),
        ("content-type", FORM_CONTENT_TYPE),
        ("accept", "application/json"),
    ]
}

/// What is left of the time budget (ms, at least 1), and the last second in which the token
/// endpoint may still receive a request sent now.
fn time_left(host: &dyn Host, deadline_ms: u64) -> (u64, u64) {
    let left_ms = deadline_ms.saturating_sub(host.now_ms()).max(1);
    let arrive_by = host.now_unix().saturating_add(left_ms.div_ceil(1000));
    (left_ms, arrive_by)
}

/// Sends the token request with what is left of the time budget; returns the host's id of the call,
/// or None when the provider's assertion is to be fetched first.
pub fn send(
    host: &dyn Host,
    provider: &Provider,
    (last, fetched): (&mut LastAssertion, &HeldAssertion),
    requested: (&str, &[String]),
    on_behalf: OnBehalf<'_>,
    deadline_ms: u64,
) -> Result<Option<u32>, Refusal> {
    if provider.actor.is_some() && on_behalf.actor_token.is_none() {
        // Never without the actor: the issued token would name no one acting.
        host.log(LogLevel::Warn, "token request not sent: no actor token");
        return Err(Refusal::CannotDispatch);
    }
    let (left_ms, arrive_by) = time_left(host, deadline_ms);
    let now = host.now_unix();
    let signatures = last.signatures();
    let credential = client_credential(provider, last, fetched, now, arrive_by).map_err(|why| {
        host.count_failed_exchange(Counter::ExchangesUpstreamError, on_behalf.tenant);
        host.log(LogLevel::Warn, &format!("token request not sent: {why}"));
        Refusal::CannotDispatch
    })?;
    let Some(credential) = credential else {
        return Ok(None);
    };
    let body = form_body(provider, &credential, requested, on_behalf);
    if last.signatures() > signatures {
        host.count(Counter::ClientAssertionsSigned);
    }
    let path = provider.token_endpoint.path_for(on_behalf.tenant);
    let headers = headers(provider, &path);
    let callout = Callout {
        cluster: &provider.token_cluster,
        headers: &headers,
        body: &body,
        timeout: std::time::Duration::from_millis(left_ms),
    };
    host.dispatch(&callout).map(Some).map_err(|e| {
        host.count_failed_exchange(Counter::ExchangesUpstreamError, on_behalf.tenant);
        let why = match e {
            DispatchError::UnknownCluster => "unknown token_cluster",
            DispatchError::Refused => "refused by the host",
        };
        host.log(
            LogLevel::Warn,
            &format!(
                "token request to cluster {} not sent: {why}",
                provider.token_cluster
            ),
        );
        Refusal::CannotDispatch
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    fn provider_with(grant: &str) -> Provider {
        let json = format!(
            r#"{{"token_cluster":"entra_id", "grant":"{grant}",
            "token_endpoint":"https://login.microsoftonline.com/tenant/oauth2/v2.0/token",
            "client_id":"client-1","client_secret":"s3cret&=+",
            "targets":[{{"host":"a","{}":"api://x/.default"}}]}}"#,
            if grant == "token_exchange" {
                "audience"
            } else {
                "scope"
            }
        );
        parse(json.as_bytes(), &|_| None)
            .unwrap()
            .providers
            .remove(0)
    }

    fn provider() -> Provider {
        provider_with("on_behalf_of")
    }

    fn fields(provider: &Provider, resource: &str, subject: &str) -> Vec<(String, String)> {
        let mut last = LastAssertion::default();
        let fetched = HeldAssertion::default();
        let credential = client_credential(provider, &mut last, &fetched, 0, 5)
            .unwrap()
            .unwrap();
        let on_behalf = OnBehalf {
            subject_token: subject,
            ..OnBehalf::default()
        };
        let body = form_body(provider, &credential, (resource, &[]), on_behalf);
        form_urlencoded::parse(&body).into_owned().collect()
    }

    #[test]
    fn client_credentials_body_carries_exactly_the_documented_fields() {
        let fields = fields(&provider_with("client_credentials"), "api://x/.default", "");
        let expected: Vec<(String, String)> = [
            ("grant_type", "client_credentials"),
            ("client_id", "client-1"),
            ("client_secret", "s3cret&=+"),
            ("scope", "api://x/.default"),
        ]
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
        assert_eq!(fields, expected);
    }

    #[test]
    fn token_exchange_body_carries_exactly_the_rfc_8693_fields() {
        let fields = fields(&provider_with("token_exchange"), "dev:team:app", "eyJ.s.t");
        let expected: Vec<(String, String)> = [
            ("grant_type", GRANT_TYPE_TOKEN_EXCHANGE),
            ("client_id", "client-1"),
            ("client_secret", "s3cret&=+"),
            ("subject_token_type", TOKEN_TYPE_JWT),
            ("subject_token", "eyJ.s.t"),
            ("audience", "dev:team:app"),
        ]
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
        assert_eq!(fields, expected);
    }

    #[test]
    fn body_carries_exactly_the_documented_fields() {
        let fields = fields(&provider(), "api://prod.team.api/.default", "eyJ.a+b/c.d");
        assert_eq!(
            fields,
            vec![
                ("grant_type".into(), GRANT_TYPE_JWT_BEARER.into()),
                ("client_id".into(), "client-1".into()),
                ("client_secret".into(), "s3cret&=+".into()),
                ("assertion".into(), "eyJ.a+b/c.d".into()),
                ("scope".into(), "api://prod.team.api/.default".into()),
                ("requested_token_use".into(), "on_behalf_of".into()),
            ]
        );
    }

    #[test]
    fn headers_address_the_endpoint_with_a_form_post() {
        let cfg = provider();
        let path = cfg.token_endpoint.path_for(None);
        let h = headers(&cfg, &path);
        assert!(h.contains(&(":method", "POST")));
        assert!(h.contains(&(":path", "/tenant/oauth2/v2.0/token")));
        assert!(h.contains(&(":authority", "login.microsoftonline.com")));
        assert!(h.contains(&("content-type", FORM_CONTENT_TYPE)));
    }
}
