//! The API behind Envoy: records what each request arrived with and answers 200.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

#[derive(Clone, Debug)]
pub struct Seen {
    pub host: Option<String>,
    pub path: String,
    /// Every Authorization header the request arrived with.
    pub authorization: Vec<String>,
}

pub struct Upstream {
    pub port: u16,
    server: Arc<tiny_http::Server>,
    seen: Arc<Mutex<Vec<Seen>>>,
    thread: Option<JoinHandle<()>>,
}

impl Upstream {
    pub fn start() -> Self {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("bind upstream"));
        let port = server.server_addr().to_ip().expect("ip address").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (srv, rec) = (server.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            for request in srv.incoming_requests() {
                let values = |name: &str| -> Vec<String> {
                    request
                        .headers()
                        .iter()
                        .filter(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
                        .map(|h| h.value.as_str().to_string())
                        .collect()
                };
                let entry = Seen {
                    host: values("host").into_iter().next(),
                    path: request.url().to_string(),
                    authorization: values("authorization"),
                };
                let reply = format!("upstream saw {} {:?}", entry.path, entry.authorization);
                rec.lock().unwrap().push(entry);
                let _ = request.respond(tiny_http::Response::from_string(reply));
            }
        });
        Upstream {
            port,
            server,
            seen,
            thread: Some(thread),
        }
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

impl Drop for Upstream {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
