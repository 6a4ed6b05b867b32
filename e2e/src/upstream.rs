//! The API behind Envoy: records what each request arrived with and answers 200.

use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, Uri};

use crate::server::Server;

pub const CLAIMS_CHALLENGE_PATH: &str = "/claims-challenge";
/// Answered `302 Location: REDIRECT_LOCATION`.
pub const REDIRECT_PATH: &str = "/redirect";
const REDIRECT_LOCATION: &str = "http://evil.example.org/steal";
pub const CLAIMS_CHALLENGE: &str =
    r#"Bearer error="insufficient_claims", claims="eyJhY2Nlc3NfdG9rZW4iOnt9fQ==""#;
/// A gRPC method the upstream answers `UNAUTHENTICATED` with CLAIMS_CHALLENGE, as a gRPC server
/// does: HTTP 200, trailers-only, `grpc-status: 16` among the headers.
pub const GRPC_CLAIMS_CHALLENGE_METHOD: &str = "/team.api.v1.Orders/AfterRevocation";

#[derive(Clone, Debug)]
pub struct Seen {
    pub host: Option<String>,
    pub path: String,
    /// Every Authorization header the request arrived with.
    pub authorization: Vec<String>,
    pub body: Vec<u8>,
}

pub struct Upstream {
    pub port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    _server: Server,
}

impl Upstream {
    pub fn start() -> Self {
        Self::start_on(0)
    }

    /// Listens on 127.0.0.1:`port` (0: any free port).
    pub fn start_on(port: u16) -> Self {
        Self::try_start_on(port).unwrap_or_else(|e| panic!("upstream: {e}"))
    }

    /// The same; Err says why it cannot listen.
    pub fn try_start_on(port: u16) -> Result<Self, String> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let app = axum::Router::new().fallback(
            move |uri: Uri, headers: HeaderMap, body: axum::body::Bytes| {
                let record = record.clone();
                async move {
                    let values = |name: &str| -> Vec<String> {
                        headers
                            .get_all(name)
                            .iter()
                            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                            .collect()
                    };
                    let entry = Seen {
                        host: values("host").into_iter().next(),
                        path: uri.to_string(),
                        authorization: values("authorization"),
                        body: body.to_vec(),
                    };
                    let reply = serde_json::json!({
                        "echo": "the request as the API received it",
                        "host": entry.host,
                        "path": entry.path,
                        "authorization": entry.authorization,
                    })
                    .to_string();
                    let challenge = entry.path.starts_with(CLAIMS_CHALLENGE_PATH);
                    let redirect = entry.path == REDIRECT_PATH;
                    let grpc_challenge = entry.path == GRPC_CLAIMS_CHALLENGE_METHOD;
                    record.lock().unwrap().push(entry);
                    if redirect {
                        let mut response = axum::response::Response::new(axum::body::Body::empty());
                        *response.status_mut() = axum::http::StatusCode::FOUND;
                        response.headers_mut().insert(
                            "location",
                            axum::http::HeaderValue::from_static(REDIRECT_LOCATION),
                        );
                        response
                    } else if grpc_challenge {
                        let mut response = axum::response::Response::new(axum::body::Body::empty());
                        for (name, value) in [
                            ("content-type", "application/grpc"),
                            ("grpc-status", "16"),
                            ("grpc-message", "token revoked"),
                            ("www-authenticate", CLAIMS_CHALLENGE),
                        ] {
                            response
                                .headers_mut()
                                .insert(name, axum::http::HeaderValue::from_static(value));
                        }
                        response
                    } else if challenge {
                        let mut response =
                            axum::response::Response::new(axum::body::Body::from(reply));
                        *response.status_mut() = axum::http::StatusCode::UNAUTHORIZED;
                        response.headers_mut().insert(
                            "www-authenticate",
                            axum::http::HeaderValue::from_static(CLAIMS_CHALLENGE),
                        );
                        response
                    } else {
                        axum::response::Response::new(axum::body::Body::from(reply))
                    }
                }
            },
        );
        let server = Server::try_start_on(port, app)?;
        Ok(Upstream {
            port: server.port,
            seen,
            _server: server,
        })
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Panics if any request reached the upstream carrying `token`.
    pub fn assert_never_saw(&self, token: &str) {
        for s in self.seen() {
            assert!(
                !s.authorization.iter().any(|a| a.contains(token)),
                "upstream received the subject token on {}",
                s.path
            );
        }
    }
}
