//! A small HTTP server on a free loopback port for the test doubles, on its own tokio runtime.
//! Dropping it stops the runtime and every connection with it.

use std::net::SocketAddr;

pub struct Server {
    pub port: u16,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Server {
    pub fn start(app: axum::Router) -> Server {
        Server::start_on(0, app)
    }

    /// Serves `app` on 127.0.0.1:`port` (0: any free port).
    pub fn start_on(port: u16, app: axum::Router) -> Server {
        let (runtime, listener, port) = runtime_with_listener(port, 2);
        runtime.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Server {
            port,
            runtime: Some(runtime),
        }
    }
}

/// A tokio runtime with `threads` workers and a listener on 127.0.0.1:`port` (0: any free port),
/// with the port it got.
pub fn runtime_with_listener(
    port: u16,
    threads: usize,
) -> (tokio::runtime::Runtime, tokio::net::TcpListener, u16) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(SocketAddr::from((
            [127, 0, 0, 1],
            port,
        ))))
        .unwrap_or_else(|e| panic!("cannot listen on 127.0.0.1:{port}: {e}"));
    let port = listener.local_addr().expect("local address").port();
    (runtime, listener, port)
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
