//! The on-behalf-of token request, exactly as the Microsoft identity platform documents it:
//! a form-encoded POST with `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`,
//! `client_id`, the client's credential (`client_secret`, or `client_assertion_type` and
//! `client_assertion`), `assertion`, `scope` and `requested_token_use=on_behalf_of`.

use crate::client_assertion::{self, CLIENT_ASSERTION_TYPE};
use crate::config::{ClientAuth, Config};

pub const GRANT_TYPE_JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
pub const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded";

/// How the application proves itself in one token request.
pub enum ClientCredential<'a> {
    Secret(&'a str),
    /// A freshly signed `client_assertion`.
    Assertion(String),
}

/// The credential for a token request sent at `now`: the secret, or a new signed assertion.
pub fn client_credential(config: &Config, now: u64) -> Result<ClientCredential<'_>, String> {
    match &config.client_auth {
        ClientAuth::Secret(secret) => Ok(ClientCredential::Secret(secret.expose())),
        ClientAuth::PrivateKey(settings) => {
            client_assertion::sign(settings, &config.client_id, now)
                .map(ClientCredential::Assertion)
        }
    }
}

/// The form body of the token request. It holds the client's credential and the subject token:
/// it is sent, never logged.
pub fn form_body(
    config: &Config,
    credential: &ClientCredential<'_>,
    scope: &str,
    subject_token: &str,
) -> Vec<u8> {
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("grant_type", GRANT_TYPE_JWT_BEARER)
        .append_pair("client_id", &config.client_id);
    match credential {
        ClientCredential::Secret(secret) => form.append_pair("client_secret", secret),
        ClientCredential::Assertion(jwt) => form
            .append_pair("client_assertion_type", CLIENT_ASSERTION_TYPE)
            .append_pair("client_assertion", jwt),
    };
    form.append_pair("assertion", subject_token)
        .append_pair("scope", scope)
        .append_pair("requested_token_use", "on_behalf_of")
        .finish()
        .into_bytes()
}

/// The callout's headers: pseudo-headers from the endpoint URL, then the content type.
pub fn headers(config: &Config) -> [(&str, &str); 5] {
    [
        (":method", "POST"),
        (":path", &config.token_endpoint.path),
        (":authority", &config.token_endpoint.authority),
        ("content-type", FORM_CONTENT_TYPE),
        ("accept", "application/json"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    fn config() -> Config {
        let json = br#"{"token_cluster":"entra_id",
            "token_endpoint":"https://login.microsoftonline.com/tenant/oauth2/v2.0/token",
            "client_id":"client-1","client_secret":"s3cret&=+",
            "targets":[{"host":"a","scope":"api://x/.default"}]}"#;
        parse(json, &|_| None).unwrap()
    }

    #[test]
    fn body_carries_exactly_the_documented_fields() {
        let cfg = config();
        let credential = client_credential(&cfg, 0).unwrap();
        let body = form_body(
            &cfg,
            &credential,
            "api://prod.team.api/.default",
            "eyJ.a+b/c.d",
        );
        let fields: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
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
        let cfg = config();
        let h = headers(&cfg);
        assert!(h.contains(&(":method", "POST")));
        assert!(h.contains(&(":path", "/tenant/oauth2/v2.0/token")));
        assert!(h.contains(&(":authority", "login.microsoftonline.com")));
        assert!(h.contains(&("content-type", FORM_CONTENT_TYPE)));
    }
}
