//! gRPC calls to Envoy's listener as an application's gRPC client makes them through its sidecar:
//! HTTP/2 without TLS (prior knowledge), `content-type: application/grpc`, one message.

use std::time::Duration;

use axum::body::Bytes;

pub struct GrpcAnswer {
    /// The HTTP status: 200 for every gRPC answer, refusals included.
    pub http_status: u16,
    /// The response headers, then the trailers.
    pub headers: Vec<(String, String)>,
}

impl GrpcAnswer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `grpc-status`: in the trailers, or in the headers of a trailers-only answer.
    pub fn grpc_status(&self) -> Option<&str> {
        self.header("grpc-status")
    }
}

fn pairs(headers: &http::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(n, v)| {
            let value = String::from_utf8_lossy(v.as_bytes()).into_owned();
            (n.as_str().to_string(), value)
        })
        .collect()
}

/// Calls `method` (`/package.Service/Method`) on `authority` through the listener on `port`.
pub fn call(port: u16, authority: &str, method: &str, authorization: Option<&str>) -> GrpcAnswer {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let answer = runtime.block_on(async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let (client, connection) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut client = client.ready().await.unwrap();
        let mut request = http::Request::builder()
            .method("POST")
            .uri(format!("http://{authority}{method}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        if let Some(authorization) = authorization {
            request = request.header("authorization", authorization);
        }
        let (response, mut body) = client
            .send_request(request.body(()).unwrap(), false)
            .unwrap();
        // One empty message: not compressed, length 0.
        body.send_data(Bytes::from_static(&[0, 0, 0, 0, 0]), true)
            .unwrap();
        let (head, mut body) = response.await.unwrap().into_parts();
        let mut headers = pairs(&head.headers);
        while let Some(chunk) = body.data().await {
            let chunk = chunk.unwrap();
            let _ = body.flow_control().release_capacity(chunk.len());
        }
        if let Some(trailers) = body.trailers().await.unwrap() {
            headers.extend(pairs(&trailers));
        }
        GrpcAnswer {
            http_status: head.status.as_u16(),
            headers,
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    answer
}
