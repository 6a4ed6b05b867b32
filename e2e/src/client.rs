//! Requests to Envoy's listener, with any Host and Authorization.

use std::time::Duration;

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        obo_core::json::parse(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }
}

fn authorization_header(authorization: Option<&str>) -> Vec<(&str, &str)> {
    authorization
        .map(|a| ("authorization", a))
        .into_iter()
        .collect()
}

pub fn get(port: u16, authority: &str, path: &str, authorization: Option<&str>) -> Response {
    get_with(port, authority, path, &authorization_header(authorization))
}

/// A request with these headers, repeated names included.
pub fn get_with(port: u16, authority: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    send(port, authority, path, headers, Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("request to envoy failed: {e}"))
}

/// A request that gives up after `timeout`, closing its connection.
pub fn try_get(
    port: u16,
    authority: &str,
    path: &str,
    authorization: Option<&str>,
    timeout: Duration,
) -> Result<Response, ureq::Error> {
    send(
        port,
        authority,
        path,
        &authorization_header(authorization),
        timeout,
    )
}

/// A GET with `authorization` to `api.example.com`, on a thread of its own, whose caller hangs up
/// after `after` (the request is meant to wait that long); true if it did hang up.
pub fn get_and_hang_up(
    port: u16,
    authorization: &str,
    after: Duration,
) -> std::thread::JoinHandle<bool> {
    let authorization = authorization.to_string();
    std::thread::spawn(move || {
        try_get(port, "api.example.com", "/", Some(&authorization), after).is_err()
    })
}

/// A POST of `body`, with `authorization` if given.
pub fn post(
    port: u16,
    authority: &str,
    path: &str,
    authorization: Option<&str>,
    body: &[u8],
) -> Response {
    let mut req = agent(Duration::from_secs(20))
        .post(format!("http://127.0.0.1:{port}{path}"))
        .header("host", authority);
    for (name, value) in authorization_header(authorization) {
        req = req.header(name, value);
    }
    read(
        req.send(body)
            .unwrap_or_else(|e| panic!("request to envoy failed: {e}")),
    )
}

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .into()
}

fn send(
    port: u16,
    authority: &str,
    path: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Result<Response, ureq::Error> {
    let mut req = agent(timeout)
        .get(format!("http://127.0.0.1:{port}{path}"))
        .header("host", authority);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    Ok(read(req.call()?))
}

fn read(mut resp: ureq::http::Response<ureq::Body>) -> Response {
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let body = resp.body_mut().read_to_string().unwrap_or_default();
    Response {
        status,
        headers,
        body,
    }
}

/// A GET written byte for byte as given: any `Host` value and any path, neither checked nor
/// normalized by an HTTP library on the way.
pub fn raw_get(port: u16, authority: &str, path: &str, authorization: Option<&str>) -> Response {
    use std::io::{Read, Write};
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(a) = authorization {
        request.push_str(&format!("Authorization: {a}\r\n"));
    }
    request.push_str("Connection: close\r\n\r\n");
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to envoy");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("read timeout");
    stream.write_all(request.as_bytes()).expect("send request");
    // Up to the end of the answer, not of the connection: Envoy holds a connection it closes for
    // a while (delayed_close_timeout) before it closes it.
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    while !answer_complete(&raw) {
        match stream.read(&mut chunk).expect("read response") {
            0 => break,
            n => raw.extend_from_slice(&chunk[..n]),
        }
    }
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Response {
        status,
        headers,
        body: body.to_string(),
    }
}

/// Whether `raw` holds a whole HTTP/1.1 answer: its head, and a body of its `content-length` or
/// to its last chunk.
fn answer_complete(raw: &[u8]) -> bool {
    let text = String::from_utf8_lossy(raw);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let header = |name: &str| {
        head.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_ascii_lowercase())
    };
    if let Some(length) = header("content-length").and_then(|l| l.parse::<usize>().ok()) {
        return body.len() >= length;
    }
    if header("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        return body.ends_with("0\r\n\r\n");
    }
    false
}

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}
