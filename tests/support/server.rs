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
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
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
        runtime.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Server {
            port,
            runtime: Some(runtime),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
