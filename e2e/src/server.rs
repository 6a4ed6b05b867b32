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
        Server::try_start_on(port, app).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The same; Err says why it cannot listen (the port is taken, say).
    pub fn try_start_on(port: u16, app: axum::Router) -> Result<Server, String> {
        let (runtime, listener, port) = try_runtime_with_listener(port, 2)?;
        runtime.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Server {
            port,
            runtime: Some(runtime),
        })
    }
}

/// A tokio runtime with `threads` workers and a listener on 127.0.0.1:`port` (0: any free port),
/// with the port it got.
pub fn runtime_with_listener(
    port: u16,
    threads: usize,
) -> (tokio::runtime::Runtime, tokio::net::TcpListener, u16) {
    try_runtime_with_listener(port, threads).unwrap_or_else(|e| panic!("{e}"))
}

fn try_runtime_with_listener(
    port: u16,
    threads: usize,
) -> Result<(tokio::runtime::Runtime, tokio::net::TcpListener, u16), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a tokio runtime: {e}"))?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(SocketAddr::from((
            [127, 0, 0, 1],
            port,
        ))))
        .map_err(|e| format!("cannot listen on 127.0.0.1:{port}: {e}"))?;
    let port = listener
        .local_addr()
        .map_err(|e| format!("no local address: {e}"))?
        .port();
    Ok((runtime, listener, port))
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
