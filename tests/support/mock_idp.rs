//! A mock Entra ID v2.0 token endpoint. It checks every token request the way Entra ID does for
//! the on-behalf-of flow and answers as told: issue a token, answer with a fixture, or stall.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;

use super::server::Server;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub const TOKEN_PATH: &str = "/test-tenant/oauth2/v2.0/token";
pub const CLIENT_ID: &str = "6f1b1a7e-test-client-id";
pub const CLIENT_SECRET: &str = "test-client-secret-7Qp~Vx.s3cr3t";

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
            body: super::fixture(name),
            headers: vec![],
        }
    }
}

#[derive(Clone, Debug)]
pub struct TokenRequest {
    pub method: String,
    pub path: String,
    pub host: Option<String>,
    pub content_type: Option<String>,
    pub form: Vec<(String, String)>,
}

impl TokenRequest {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

struct State {
    behaviour: Behaviour,
    requests: Vec<TokenRequest>,
    violations: Vec<String>,
}

pub struct MockIdp {
    pub port: u16,
    state: Arc<Mutex<State>>,
    _server: Server,
}

/// The token the mock issues for this assertion and scope: tests know which token each user
/// should arrive with.
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
        let state = Arc::new(Mutex::new(State {
            behaviour: Behaviour::issue(),
            requests: Vec::new(),
            violations: Vec::new(),
        }));
        let st = state.clone();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let st = st.clone();
                async move { handle(&st, method, uri, headers, body).await }
            },
        );
        let server = Server::start_on(port, app);
        MockIdp {
            port: server.port,
            state,
            _server: server,
        }
    }

    pub fn set(&self, behaviour: Behaviour) {
        self.state.lock().unwrap().behaviour = behaviour;
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
    let problems = check(&token_request);
    let behaviour = {
        let mut s = state.lock().unwrap();
        s.requests.push(token_request.clone());
        s.violations.extend(problems.iter().cloned());
        s.behaviour.clone()
    };
    if !problems.is_empty() {
        let body = json!({"error": "invalid_request", "error_description": problems.join("; ")});
        return respond(400, body.to_string().into_bytes(), vec![]);
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
            let token = obo_token_for(
                req.field("assertion").unwrap_or(""),
                req.field("scope").unwrap_or(""),
            );
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
            let mut token = obo_token_for(
                req.field("assertion").unwrap_or(""),
                req.field("scope").unwrap_or(""),
            );
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

/// What Entra ID's v2.0 endpoint would refuse in an on-behalf-of token request.
fn check(r: &TokenRequest) -> Vec<String> {
    let mut problems = Vec::new();
    if r.method != "POST" {
        problems.push(format!("method {} (must be POST)", r.method));
    }
    if r.path != TOKEN_PATH {
        problems.push(format!("path {} (must be {TOKEN_PATH})", r.path));
    }
    if !r
        .content_type
        .as_deref()
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"))
    {
        problems.push(format!("content-type {:?}", r.content_type));
    }
    let expected = [
        "grant_type",
        "client_id",
        "client_secret",
        "assertion",
        "scope",
        "requested_token_use",
    ];
    for name in expected {
        match r.form.iter().filter(|(n, _)| n == name).count() {
            1 => {}
            n => problems.push(format!("field {name} appears {n} times")),
        }
    }
    for (name, _) in &r.form {
        if !expected.contains(&name.as_str()) {
            problems.push(format!("unexpected field {name}"));
        }
    }
    let must = |name: &str, value: &str, problems: &mut Vec<String>| {
        if r.field(name).is_some_and(|v| v != value) {
            problems.push(format!("{name} is {:?}", r.field(name)));
        }
    };
    must(
        "grant_type",
        "urn:ietf:params:oauth:grant-type:jwt-bearer",
        &mut problems,
    );
    must("requested_token_use", "on_behalf_of", &mut problems);
    must("client_id", CLIENT_ID, &mut problems);
    must("client_secret", CLIENT_SECRET, &mut problems);
    if r.field("assertion").is_some_and(str::is_empty)
        || r.field("scope").is_some_and(str::is_empty)
    {
        problems.push("empty assertion or scope".into());
    }
    problems
}
