//! Workload identity's side of the harness: a token file the test rewrites, the shipped recipe's
//! internal listener that serves it to the filter, and a mock instance metadata service.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode, Uri};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

use crate::envoy::BootstrapPatch;
use crate::server::Server;

/// The shipped recipe whose internal listener serves the token file with Lua (every Envoy).
pub const LUA_RECIPE: &str = "envoy-workload-identity.yaml";
/// The same with Envoy's file server filter (Envoy 1.38.2 and later).
pub const FILE_SERVER_RECIPE: &str = "envoy-workload-identity-file-server.yaml";
/// The name the internal listener and its cluster have in both recipes.
pub const TOKEN_FILE_CLUSTER: &str = "azure_federated_token";

/// An (unsigned) projected service-account token, as AKS writes into the pod, expiring at `exp`.
/// `n` tells one from the next.
pub fn federated_token(n: u64, exp: u64) -> String {
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","kid":"aks-test","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(
        json!({
            "aud": ["api://AzureADTokenExchange"],
            "iss": "https://oidc.aks.example/test-cluster/",
            "sub": "system:serviceaccount:demo:app",
            "iat": crate::now(),
            "exp": exp,
            "jti": format!("rotation-{n}"),
        })
        .to_string(),
    );
    format!("{header}.{payload}.c2lnbmVkLWJ5LWt1YmVybmV0ZXM")
}

/// The token file, in a temporary folder removed when dropped.
pub struct TokenFile {
    pub path: PathBuf,
    dir: tempfile::TempDir,
}

impl TokenFile {
    pub fn with(content: &str) -> TokenFile {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let file = TokenFile {
            path: dir.path().join("azure-identity-token"),
            dir,
        };
        file.write(content);
        file
    }

    pub fn folder(&self) -> &Path {
        self.dir.path()
    }

    /// Replaces the content at once, as the kubelet does: a reader sees the old or the new one.
    pub fn write(&self, content: &str) {
        let next = self.dir.path().join(".next");
        std::fs::write(&next, content).expect("write the token file");
        std::fs::rename(&next, &self.path).expect("replace the token file");
    }

    pub fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
    }

    /// What the file holds now (None when it is gone).
    pub fn content(&self) -> Option<String> {
        std::fs::read_to_string(&self.path).ok()
    }

    /// The assertion a federated credential trusts: the file's content now.
    pub fn current(&self) -> crate::mock_idp::CurrentAssertion {
        let path = self.path.clone();
        Arc::new(move || std::fs::read_to_string(&path).ok())
    }
}

/// A shipped Envoy configuration under `envoy/`, as JSON.
pub fn shipped(file: &str) -> Value {
    let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../envoy")).join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde::Deserialize::deserialize(serde_norway::Deserializer::from_str(&text))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Adds the recipe's token file server to a bootstrap: the internal listener bootstrap extension,
/// the internal listener and the `azure_federated_token` cluster, as the recipe has them.
/// `adjust` may change the listener first (where the file server finds the file).
pub fn token_file_server(
    recipe: &str,
    adjust: impl FnOnce(&mut Value) + 'static,
) -> BootstrapPatch {
    let recipe = shipped(recipe);
    Box::new(move |bootstrap: &mut Value| {
        let named = |list: &Value, name: &str| -> Value {
            list.as_array()
                .and_then(|l| l.iter().find(|x| x["name"] == name))
                .cloned()
                .unwrap_or_else(|| panic!("the recipe has no {name}"))
        };
        let resources = &recipe["static_resources"];
        let mut listener = named(&resources["listeners"], TOKEN_FILE_CLUSTER);
        adjust(&mut listener);
        let cluster = named(&resources["clusters"], TOKEN_FILE_CLUSTER);
        bootstrap["bootstrap_extensions"] = recipe["bootstrap_extensions"].clone();
        let ours = &mut bootstrap["static_resources"];
        push(&mut ours["listeners"], listener);
        push(&mut ours["clusters"], cluster);
    })
}

fn push(list: &mut Value, item: Value) {
    if let Some(list) = list.as_array_mut() {
        list.push(item);
    }
}

/// The Envoy's version as (major, minor, patch), from `envoy --version`.
pub fn envoy_version() -> (u32, u32, u32) {
    let out = std::process::Command::new(crate::envoy::envoy_bin())
        .arg("--version")
        .output()
        .expect("envoy --version");
    let text = String::from_utf8_lossy(&out.stdout);
    // "<path>  version: <commit>/1.40.0/Clean/RELEASE/BoringSSL"
    let numbers: Option<Vec<u32>> = text
        .split("version: ")
        .nth(1)
        .and_then(|v| v.split('/').nth(1))
        .map(|v| v.split('.').map(|n| n.trim().parse().ok()).collect())
        .and_then(|n: Option<Vec<u32>>| n);
    match numbers.as_deref() {
        Some(&[major, minor, patch]) => (major, minor, patch),
        _ => panic!("no version in `envoy --version`: {text}"),
    }
}

/// What the mock metadata service answers.
#[derive(Clone, Debug)]
pub enum MetadataAnswer {
    /// 200 with this token in `access_token`, as the metadata service's JSON.
    Token(String),
    Status(u16),
    /// 200 with this body.
    Body(String),
    /// No answer for this long.
    Stall(Duration),
}

#[derive(Clone, Debug)]
pub struct MetadataRequest {
    pub path: String,
    /// The `Metadata` header, if any.
    pub metadata: Option<String>,
    pub resource: Option<String>,
    pub client_id: Option<String>,
}

/// A mock Azure instance metadata service (IMDS): a token for the `resource` asked, only for a
/// request with `Metadata: true` (else 400, as IMDS does).
pub struct MockMetadata {
    pub port: u16,
    answer: Arc<Mutex<MetadataAnswer>>,
    requests: Arc<Mutex<Vec<MetadataRequest>>>,
    _server: Server,
}

const IMDS_TOKEN_PATH: &str = "/metadata/identity/oauth2/token";
const EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";

impl MockMetadata {
    pub fn start(answer: MetadataAnswer) -> MockMetadata {
        let answer = Arc::new(Mutex::new(answer));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (a, r) = (answer.clone(), requests.clone());
        let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap| {
            let (answer, requests) = (a.clone(), r.clone());
            async move {
                let query: Vec<(String, String)> =
                    form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
                        .into_owned()
                        .collect();
                let field = |name: &str| {
                    query
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, v)| v.clone())
                };
                let request = MetadataRequest {
                    path: uri.path().to_string(),
                    metadata: headers
                        .get("metadata")
                        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
                    resource: field("resource"),
                    client_id: field("client_id"),
                };
                requests.lock().unwrap().push(request.clone());
                let refused = request.metadata.as_deref() != Some("true")
                    || request.path != IMDS_TOKEN_PATH
                    || request.resource.as_deref() != Some(EXCHANGE_AUDIENCE);
                if refused {
                    let body = json!({"error": "invalid_request",
                                      "error_description": "Required metadata header not specified or wrong resource"});
                    return (StatusCode::BAD_REQUEST, body.to_string());
                }
                let answer = answer.lock().unwrap().clone();
                match answer {
                    MetadataAnswer::Token(token) => {
                        let body = json!({
                            "access_token": token,
                            "expires_in": "86399",
                            "resource": EXCHANGE_AUDIENCE,
                            "token_type": "Bearer",
                        });
                        (StatusCode::OK, body.to_string())
                    }
                    MetadataAnswer::Status(status) => (
                        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                        String::new(),
                    ),
                    MetadataAnswer::Body(body) => (StatusCode::OK, body),
                    MetadataAnswer::Stall(d) => {
                        tokio::time::sleep(d).await;
                        (StatusCode::SERVICE_UNAVAILABLE, String::new())
                    }
                }
            }
        });
        let server = Server::start(app);
        MockMetadata {
            port: server.port,
            answer,
            requests,
            _server: server,
        }
    }

    pub fn set(&self, answer: MetadataAnswer) {
        *self.answer.lock().unwrap() = answer;
    }

    pub fn requests(&self) -> Vec<MetadataRequest> {
        self.requests.lock().unwrap().clone()
    }

    /// The token it hands out now, for the mock token endpoint to trust.
    pub fn current(&self) -> crate::mock_idp::CurrentAssertion {
        let answer = self.answer.clone();
        Arc::new(move || match &*answer.lock().unwrap() {
            MetadataAnswer::Token(t) => Some(t.clone()),
            _ => None,
        })
    }
}
