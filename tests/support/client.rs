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
        entra_obo_filter::json::parse(&self.body)
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

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}
