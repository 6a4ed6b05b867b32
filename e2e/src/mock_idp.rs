//! A mock Entra ID v2.0 token endpoint. It checks every token request the way Entra ID does for
//! the on-behalf-of flow and answers as told: issue a token, answer with a fixture, or stall.
//! It serves one tenant's endpoint, or, like Entra ID, every tenant's (`/<tenant id>/...`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;

use crate::server::Server;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rsa::PublicKey;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const TOKEN_PATH: &str = "/test-tenant/oauth2/v2.0/token";
/// What follows the tenant in every tenant's endpoint path.
const TENANT_TOKEN_PATH: &str = "/oauth2/v2.0/token";
pub const CLIENT_ID: &str = "6f1b1a7e-test-client-id";
pub const CLIENT_SECRET: &str = "test-client-secret-7Qp~Vx.s3cr3t";
const GRANT_OBO: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const GRANT_CLIENT_CREDENTIALS: &str = "client_credentials";
const GRANT_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

#[derive(Clone, Debug)]
pub enum Behaviour {
    /// 200 with a token made from the assertion and scope (see `obo_token_for`).
    Issue { expires_in: Value },
    /// The same, padded to this many bytes (real Entra ID tokens are 1.5 KB and more).
    IssueSized(usize),
    /// The given status, body and headers.
    Answer {
        status: u16,
        body: Vec<u8>,
        headers: Vec<(String, String)>,
    },
    /// Wait, then behave as `then`.
    Delay(Duration, Box<Behaviour>),
    /// The n-th token request gets the (n mod len)-th behaviour: an IdP that flaps.
    Cycle(Vec<Behaviour>),
}

impl Behaviour {
    pub fn issue() -> Self {
        Behaviour::Issue {
            expires_in: json!(3599),
        }
    }
    pub fn fixture(status: u16, name: &str) -> Self {
        Behaviour::Answer {
            status,
            body: crate::fixture(name),
            headers: vec![],
        }
    }
}

#[derive(Clone, Debug)]
pub struct TokenRequest {
    pub method: String,
    pub path: String,
    pub host: Option<String>,
    content_type: Option<String>,
    pub form: Vec<(String, String)>,
}

impl TokenRequest {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a field the request repeats (RFC 8707's `resource`), in order.
    pub fn fields(&self, name: &str) -> Vec<&str> {
        self.form
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The tenant id in the path of a request to a tenant's endpoint (`/<guid>/oauth2/v2.0/token`).
    pub fn tenant(&self) -> Option<&str> {
        tenant_of_path(&self.path)
    }
}

/// The tenant of `/<tenant>/oauth2/v2.0/token`, where it is a GUID written as Entra ID's `tid`
/// claims are (lowercase hex).
fn tenant_of_path(path: &str) -> Option<&str> {
    let tenant = path.strip_prefix('/')?.strip_suffix(TENANT_TOKEN_PATH)?;
    let groups: Vec<&str> = tenant.split('-').collect();
    let lengths: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    let lowercase_hex = |g: &&str| g.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    (lengths == [8, 4, 4, 4, 12] && groups.iter().all(lowercase_hex)).then_some(tenant)
}

/// How the mock expects the filter to authenticate as the application.
#[derive(Clone)]
enum ClientAuth {
    Secret,
    /// `private_key_jwt`: a `client_assertion` signed by this key, for this `aud`.
    PrivateKey {
        public: PublicKey,
        audience: String,
    },
    /// Workload identity: a `client_assertion` Entra ID trusts as long as it is the one the
    /// federated credential's issuer serves now (the token file's content, say).
    Federated(CurrentAssertion),
}

/// The assertion a federated credential accepts at this moment.
pub type CurrentAssertion = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// Every token a mock issued, and until when it is good.
type IssuedTokens = Arc<Mutex<HashMap<String, Instant>>>;

/// How long past its end a token service still takes a token (their clocks differ a little).
const CLOCK_SKEW: Duration = Duration::from_secs(1);

struct State {
    behaviour: Behaviour,
    /// Whether every tenant's endpoint is served, rather than the one tenant's `TOKEN_PATH`.
    every_tenant: bool,
    /// A tenant's own behaviour, in place of `behaviour`, for requests to its endpoint.
    tenant_behaviours: HashMap<String, Behaviour>,
    requests: Vec<TokenRequest>,
    violations: Vec<String>,
    client_auth: ClientAuth,
    /// The `client_id` (and assertion issuer) the application must present.
    client_id: String,
    /// Every assertion `jti` seen.
    seen_jti: HashSet<String>,
    /// Whether an assertion is refused when its `jti` was seen before (as RFC 7523 allows and
    /// Keycloak does), or accepted again until its `exp`, as Entra ID does.
    refuse_reused_assertions: bool,
    /// Token requests refused with `invalid_client` (a federated assertion that is not the
    /// current one).
    invalid_client: usize,
    /// The tokens it issued, kept only once a token service takes them as actor tokens.
    issued: Option<IssuedTokens>,
    /// As an RFC 8693 token service: the tokens of the IdP whose tokens it takes as `actor_token`.
    actor_issuer: Option<IssuedTokens>,
}

pub struct MockIdp {
    pub port: u16,
    state: Arc<Mutex<State>>,
    _server: Server,
}

/// Whose token a request asks for: the OBO `assertion`, the `subject_token`, or nobody ("").
fn subject_of(req: &TokenRequest) -> &str {
    req.field("assertion")
        .or(req.field("subject_token"))
        .unwrap_or("")
}

/// What it asks for: the `scope` or the `audience`, and each `resource` (RFC 8707); with an
/// `actor_token` (RFC 8693 delegation), who acts too (see `delegated_token_for`).
fn resource_of(req: &TokenRequest) -> String {
    let named = req.field("scope").or(req.field("audience")).unwrap_or("");
    let resource = with_resources(named, &req.fields("resource"));
    match req.field("actor_token") {
        Some(actor) => acting(&resource, actor),
        None => resource,
    }
}

fn acting(resource: &str, actor_token: &str) -> String {
    format!("{resource} act={actor_token}")
}

/// The token the mock issues for a delegated exchange: `subject_token` for `audience`, with
/// `actor_token` acting (a new actor token makes a new token, as a new `act` claim would).
pub fn delegated_token_for(subject_token: &str, audience: &str, actor_token: &str) -> String {
    obo_token_for(subject_token, &acting(audience, actor_token))
}

/// What the mock issues a token for when a request names `resource`s beside its scope or
/// audience (see `obo_token_for`): the scope alone when it names none.
pub fn with_resources(scope: &str, resources: &[&str]) -> String {
    std::iter::once(scope)
        .chain(resources.iter().copied())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The token the mock issues for this subject token (the OBO `assertion` or RFC 8693
/// `subject_token`; "" for client credentials) and scope or audience: tests know which token
/// each request should arrive with.
pub fn obo_token_for(assertion: &str, scope: &str) -> String {
    let digest = Sha256::digest(format!("{assertion}|{scope}").as_bytes());
    let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
    format!("obo-{hex}")
}

impl MockIdp {
    pub fn start() -> Self {
        Self::start_on(0)
    }

    /// Listens on 127.0.0.1:`port` (0: any free port).
    pub fn start_on(port: u16) -> Self {
        Self::try_start_on(port).unwrap_or_else(|e| panic!("mock IdP: {e}"))
    }

    /// The same; Err says why it cannot listen.
    pub fn try_start_on(port: u16) -> Result<Self, String> {
        let state = Arc::new(Mutex::new(State {
            behaviour: Behaviour::issue(),
            every_tenant: false,
            tenant_behaviours: HashMap::new(),
            requests: Vec::new(),
            violations: Vec::new(),
            client_auth: ClientAuth::Secret,
            client_id: CLIENT_ID.to_string(),
            seen_jti: HashSet::new(),
            refuse_reused_assertions: false,
            invalid_client: 0,
            issued: None,
            actor_issuer: None,
        }));
        let st = state.clone();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let st = st.clone();
                async move { handle(&st, method, uri, headers, body).await }
            },
        );
        let server = Server::try_start_on(port, app)?;
        Ok(MockIdp {
            port: server.port,
            state,
            _server: server,
        })
    }

    /// From now on, expect `client_assertion`s signed by `public`'s key with this `aud` instead
    /// of the client secret.
    pub fn expect_private_key(&self, public: PublicKey, audience: &str) {
        self.state.lock().unwrap().client_auth = ClientAuth::PrivateKey {
            public,
            audience: audience.to_string(),
        };
    }

    /// From now on, expect a federated `client_assertion` equal to what `current` gives at the
    /// time of each request; any other is answered 401 `invalid_client`, as Entra ID does.
    pub fn expect_federated(&self, current: CurrentAssertion) {
        self.state.lock().unwrap().client_auth = ClientAuth::Federated(current);
    }

    /// How many token requests were refused with `invalid_client`.
    pub fn invalid_client_count(&self) -> usize {
        self.state.lock().unwrap().invalid_client
    }

    /// From now on, refuse a client assertion whose `jti` was seen before.
    pub fn refuse_reused_assertions(&self) {
        self.state.lock().unwrap().refuse_reused_assertions = true;
    }

    /// From now on, take as `actor_token` only a token `issuer` issued and that has not expired,
    /// as a token service validates an actor token; any other is a violation (RFC 8693 answers it
    /// with `invalid_request`).
    pub fn accept_actor_tokens_from(&self, issuer: &MockIdp) {
        let issued = issuer
            .state
            .lock()
            .unwrap()
            .issued
            .get_or_insert_default()
            .clone();
        self.state.lock().unwrap().actor_issuer = Some(issued);
    }

    /// From now on, expect this client id (the mock as another identity provider, e.g. TokenX).
    pub fn expect_client_id(&self, client_id: &str) {
        self.state.lock().unwrap().client_id = client_id.to_string();
    }

    /// The requests the mock refused for breaking the protocol, and why.
    pub fn violations(&self) -> Vec<String> {
        self.state.lock().unwrap().violations.clone()
    }

    pub fn set(&self, behaviour: Behaviour) {
        self.state.lock().unwrap().behaviour = behaviour;
    }

    /// From now on, serve every tenant's endpoint (`tenant_endpoint`) instead of the one tenant's,
    /// as Entra ID does; a request to any other path is a violation.
    pub fn serve_every_tenant(&self) {
        self.state.lock().unwrap().every_tenant = true;
    }

    /// From now on, answer requests to `tenant`'s endpoint this way; other tenants as `set` says.
    pub fn set_for_tenant(&self, tenant: &str, behaviour: Behaviour) {
        let mut state = self.state.lock().unwrap();
        state
            .tenant_behaviours
            .insert(tenant.to_string(), behaviour);
    }

    /// The tenant of each token request, in order (None: not a tenant's endpoint).
    pub fn tenants_asked(&self) -> Vec<Option<String>> {
        let state = self.state.lock().unwrap();
        let tenant = |r: &TokenRequest| r.tenant().map(str::to_string);
        state.requests.iter().map(tenant).collect()
    }

    pub fn requests(&self) -> Vec<TokenRequest> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn count(&self) -> usize {
        self.state.lock().unwrap().requests.len()
    }

    /// Panics if any token request broke the protocol.
    pub fn assert_protocol_followed(&self) {
        let v = self.state.lock().unwrap().violations.clone();
        assert!(v.is_empty(), "token requests broke the OBO protocol: {v:?}");
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}{TOKEN_PATH}", self.port)
    }

    /// The endpoint with `{tenant}` where the filter writes each user's tenant id.
    pub fn tenant_endpoint(&self) -> String {
        format!(
            "http://127.0.0.1:{}/{{tenant}}{TENANT_TOKEN_PATH}",
            self.port
        )
    }
}

async fn handle(
    state: &Mutex<State>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let token_request = TokenRequest {
        method: method.to_string(),
        path: uri.to_string(),
        host: header("host"),
        content_type: header("content-type"),
        form: form_urlencoded::parse(&body).into_owned().collect(),
    };
    let behaviour = {
        let mut s = state.lock().unwrap();
        let problems = check(&token_request, &mut s);
        let trusted = federated_trust(&token_request, &s);
        s.requests.push(token_request.clone());
        s.violations.extend(problems.iter().cloned());
        if problems.is_empty() && !trusted {
            s.invalid_client += 1;
        }
        let own = token_request
            .tenant()
            .and_then(|t| s.tenant_behaviours.get(t));
        (own.unwrap_or(&s.behaviour).clone(), problems, trusted)
    };
    let (behaviour, problems, trusted) = behaviour;
    if !problems.is_empty() {
        let body = json!({"error": "invalid_request", "error_description": problems.join("; ")});
        return respond(400, body.to_string().into_bytes(), vec![]);
    }
    if !trusted {
        let (status, body, headers) = answer(
            &Behaviour::fixture(401, "error-invalid-client.json"),
            &token_request,
        );
        return respond(status, body, headers);
    }
    let mut next = behaviour;
    let behaviour = loop {
        next = match next {
            Behaviour::Delay(d, then) => {
                tokio::time::sleep(d).await;
                *then
            }
            Behaviour::Cycle(list) if !list.is_empty() => {
                let n = state.lock().unwrap().requests.len() - 1;
                list[n % list.len()].clone()
            }
            other => break other,
        };
    };
    let (status, body, headers) = answer(&behaviour, &token_request);
    let issued = state.lock().unwrap().issued.clone();
    if let (200, Some(issued)) = (status, issued) {
        remember_issued(&issued, &body);
    }
    respond(status, body, headers)
}

fn respond(status: u16, body: Vec<u8>, headers: Vec<(String, String)>) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (n, v) in headers {
        if let (Ok(n), Ok(v)) = (HeaderName::try_from(n), HeaderValue::try_from(v)) {
            response.headers_mut().append(n, v);
        }
    }
    response
}

fn answer(behaviour: &Behaviour, req: &TokenRequest) -> (u16, Vec<u8>, Vec<(String, String)>) {
    match behaviour {
        Behaviour::Issue { expires_in } => {
            let token = obo_token_for(subject_of(req), &resource_of(req));
            let body = json!({
                "token_type": "Bearer",
                "scope": req.field("scope"),
                "expires_in": expires_in,
                "ext_expires_in": expires_in,
                "access_token": token,
            });
            (
                200,
                body.to_string().into_bytes(),
                vec![("content-type".into(), "application/json".into())],
            )
        }
        Behaviour::IssueSized(bytes) => {
            let mut token = obo_token_for(subject_of(req), &resource_of(req));
            while token.len() < *bytes {
                token.push('x');
            }
            let body = json!({"token_type": "Bearer", "expires_in": 3599, "access_token": token});
            (200, body.to_string().into_bytes(), vec![])
        }
        Behaviour::Answer {
            status,
            body,
            headers,
        } => {
            let mut h = headers.clone();
            h.push((
                "content-type".into(),
                "application/json; charset=utf-8".into(),
            ));
            (*status, body.clone(), h)
        }
        Behaviour::Delay(_, then) => answer(then, req),
        Behaviour::Cycle(_) => (500, b"empty cycle".to_vec(), vec![]),
    }
}

/// Keeps the access token of a token response, and until when it is good.
fn remember_issued(issued: &IssuedTokens, body: &[u8]) {
    let Ok(answer) = obo_core::json::parse(body) else {
        return;
    };
    let lifetime = match &answer["expires_in"] {
        Value::String(s) => s.parse().ok(),
        n => n.as_u64(),
    };
    if let (Some(token), Some(lifetime)) = (answer["access_token"].as_str(), lifetime) {
        let until = Instant::now() + Duration::from_secs(lifetime);
        issued.lock().unwrap().insert(token.to_string(), until);
    }
}

/// What a token service that validates actor tokens would refuse in `actor_token`.
fn actor_token_problem(r: &TokenRequest, state: &State) -> Option<String> {
    let (issued, actor) = (state.actor_issuer.as_ref()?, r.field("actor_token")?);
    match issued.lock().unwrap().get(actor) {
        None => Some("actor_token is no token the actor's IdP issued".into()),
        Some(until) if Instant::now() > *until + CLOCK_SKEW => {
            Some("actor_token has expired".into())
        }
        Some(_) => None,
    }
}

/// Whether a federated credential trusts the request's `client_assertion` (true for the other
/// ways to authenticate, which `check` judges).
fn federated_trust(r: &TokenRequest, state: &State) -> bool {
    match &state.client_auth {
        ClientAuth::Federated(current) => {
            let current = current();
            current.is_some() && r.field("client_assertion") == current.as_deref()
        }
        _ => true,
    }
}

/// What Entra ID's v2.0 endpoint would refuse in an on-behalf-of token request.
fn check(r: &TokenRequest, state: &mut State) -> Vec<String> {
    let mut problems = Vec::new();
    if r.method != "POST" {
        problems.push(format!("method {} (must be POST)", r.method));
    }
    if state.every_tenant {
        if r.tenant().is_none() {
            let must = format!("/<tenant id>{TENANT_TOKEN_PATH}");
            problems.push(format!("path {} (must be {must})", r.path));
        }
    } else if r.path != TOKEN_PATH {
        problems.push(format!("path {} (must be {TOKEN_PATH})", r.path));
    }
    if !r
        .content_type
        .as_deref()
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"))
    {
        problems.push(format!("content-type {:?}", r.content_type));
    }
    let credentials: &[&str] = match state.client_auth {
        ClientAuth::Secret => &["client_secret"],
        ClientAuth::PrivateKey { .. } | ClientAuth::Federated(_) => {
            &["client_assertion_type", "client_assertion"]
        }
    };
    // Each grant's own fields: on-behalf-of (Entra ID), client credentials, RFC 8693 token
    // exchange (TokenX, which knows the client from its assertion alone).
    let grant = r.field("grant_type").unwrap_or("");
    let grant_fields: &[&str] = match grant {
        GRANT_OBO => &["assertion", "scope", "requested_token_use"],
        GRANT_CLIENT_CREDENTIALS => &["scope"],
        GRANT_TOKEN_EXCHANGE => &["subject_token_type", "subject_token", "audience"],
        other => {
            problems.push(format!("grant_type {other:?}"));
            &[]
        }
    };
    // RFC 8693 delegation: `actor_token` with its `actor_token_type`, or neither.
    let actor: &[&str] = match (r.field("actor_token"), r.field("actor_token_type")) {
        (None, None) => &[],
        _ if grant == GRANT_TOKEN_EXCHANGE => &["actor_token", "actor_token_type"],
        _ => {
            problems.push(format!("actor_token with grant_type {grant:?}"));
            &[]
        }
    };
    let assertion_alone =
        grant == GRANT_TOKEN_EXCHANGE && matches!(state.client_auth, ClientAuth::PrivateKey { .. });
    let client_id: &[&str] = if assertion_alone { &[] } else { &["client_id"] };
    let expected: Vec<&str> = ["grant_type"]
        .iter()
        .chain(client_id)
        .chain(credentials)
        .chain(grant_fields)
        .chain(actor)
        .copied()
        .collect();
    for &name in &expected {
        match r.form.iter().filter(|(n, _)| n == name).count() {
            1 => {}
            n => problems.push(format!("field {name} appears {n} times")),
        }
    }
    // RFC 8707's `resource`, as often as there are resources; Entra ID's on-behalf-of takes none.
    let takes_resource = matches!(grant, GRANT_CLIENT_CREDENTIALS | GRANT_TOKEN_EXCHANGE);
    for (name, _) in &r.form {
        let allowed = expected.contains(&name.as_str()) || (takes_resource && name == "resource");
        if !allowed {
            problems.push(format!("unexpected field {name}"));
        }
    }
    let must = |name: &str, value: &str, problems: &mut Vec<String>| {
        if r.field(name).is_some_and(|v| v != value) {
            problems.push(format!("{name} is {:?}", r.field(name)));
        }
    };
    must("requested_token_use", "on_behalf_of", &mut problems);
    must(
        "subject_token_type",
        "urn:ietf:params:oauth:token-type:jwt",
        &mut problems,
    );
    if r.field("actor_token_type")
        .is_some_and(|t| !t.starts_with("urn:ietf:params:oauth:token-type:"))
    {
        problems.push(format!(
            "actor_token_type is {:?}",
            r.field("actor_token_type")
        ));
    }
    problems.extend(actor_token_problem(r, state));
    let client = state.client_id.clone();
    must("client_id", &client, &mut problems);
    match &state.client_auth {
        ClientAuth::Secret => must("client_secret", CLIENT_SECRET, &mut problems),
        ClientAuth::PrivateKey { public, audience } => {
            must(
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                &mut problems,
            );
            let assertion = r.field("client_assertion").unwrap_or("");
            match check_assertion(assertion, public, audience, &client) {
                Ok(jti) => {
                    let seen = !state.seen_jti.insert(jti.clone());
                    if seen && state.refuse_reused_assertions {
                        problems.push(format!("client_assertion jti {jti} was used before"));
                    }
                }
                Err(problem) => problems.push(format!("client_assertion: {problem}")),
            }
        }
        ClientAuth::Federated(_) => must(
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            &mut problems,
        ),
    }
    for name in [
        "assertion",
        "scope",
        "subject_token",
        "audience",
        "resource",
        "actor_token",
    ] {
        if r.fields(name).iter().any(|v| v.is_empty()) {
            problems.push(format!("empty {name}"));
        }
    }
    problems
}

/// Checks a `private_key_jwt` client assertion as Entra ID does: its signature with the
/// application's public key, and every header field and claim. Returns its `jti`.
fn check_assertion(
    jwt: &str,
    public: &PublicKey,
    audience: &str,
    client_id: &str,
) -> Result<String, String> {
    use rsa::signature::Verifier;
    let parts: Vec<&str> = jwt.split('.').collect();
    let [header, claims, signature] = parts.as_slice() else {
        return Err("not a JWS with three parts".into());
    };
    let decode = |part: &str| -> Result<Value, String> {
        let bytes = URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| "a part is not base64url".to_string())?;
        obo_core::json::parse(&bytes).map_err(|_| "a part is not JSON".to_string())
    };
    let (header, claims) = (decode(header)?, decode(claims)?);
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| "signature is not base64url")?;
    let signed = format!("{}.{}", parts[0], parts[1]);
    let verified = match header["alg"].as_str() {
        Some("RS256") => {
            let sig = rsa::pkcs1v15::Signature::try_from(signature.as_slice())
                .map_err(|_| "bad signature bytes")?;
            rsa::pkcs1v15::VerifyingKey::<Sha256>::new(public.clone())
                .verify(signed.as_bytes(), &sig)
                .is_ok()
        }
        Some("PS256") => {
            let sig = rsa::pss::Signature::try_from(signature.as_slice())
                .map_err(|_| "bad signature bytes")?;
            rsa::pss::VerifyingKey::<Sha256>::new(public.clone())
                .verify(signed.as_bytes(), &sig)
                .is_ok()
        }
        other => return Err(format!("alg {other:?}")),
    };
    if !verified {
        return Err("signature does not verify with the application's key".into());
    }
    if header["typ"] != "JWT" || header["kid"] != crate::client_key::KID {
        return Err(format!("header {header}"));
    }
    let now = crate::now();
    let number = |name: &str| claims[name].as_u64().ok_or(format!("no numeric {name}"));
    let (iat, nbf, exp) = (number("iat")?, number("nbf")?, number("exp")?);
    if claims["iss"] != client_id || claims["sub"] != client_id || claims["aud"] != audience {
        return Err(format!("claims {claims}"));
    }
    if nbf > now + 5 || iat > now + 5 || exp <= now || exp - iat > 600 {
        return Err(format!("times iat {iat} nbf {nbf} exp {exp} at {now}"));
    }
    match claims["jti"].as_str() {
        Some(jti) if !jti.is_empty() => Ok(jti.to_string()),
        _ => Err("no jti".into()),
    }
}
