//! A site's outbound HTTP proxy, as far as HTTPS needs one: it answers `CONNECT host:port` with
//! 200 and then relays bytes both ways. It resolves names through its own table (the test's DNS),
//! records every CONNECT target, and can be told to refuse.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Default)]
struct State {
    targets: Vec<String>,
    refuse: bool,
}

pub struct ConnectProxy {
    pub port: u16,
    state: Arc<Mutex<State>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl ConnectProxy {
    /// A proxy on a free loopback port that reaches each `host:port` of `names` at its address.
    pub fn start(names: HashMap<String, SocketAddr>) -> ConnectProxy {
        let (runtime, listener, port) = crate::server::runtime_with_listener(0, 1);
        let state = Arc::new(Mutex::new(State::default()));
        let (names, shared) = (Arc::new(names), state.clone());
        runtime.spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (names, state) = (names.clone(), shared.clone());
                tokio::spawn(async move {
                    let _ = relay(client, &names, &state).await;
                });
            }
        });
        ConnectProxy {
            port,
            state,
            runtime: Some(runtime),
        }
    }

    /// The `host:port` of every CONNECT so far.
    pub fn targets(&self) -> Vec<String> {
        self.state.lock().unwrap().targets.clone()
    }

    /// From now on, answer every CONNECT with 403.
    pub fn refuse(&self) {
        self.state.lock().unwrap().refuse = true;
    }
}

async fn relay(
    mut client: TcpStream,
    names: &HashMap<String, SocketAddr>,
    state: &Mutex<State>,
) -> std::io::Result<()> {
    // The request head, byte by byte up to the blank line (what follows belongs to the tunnel).
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
        let mut byte = [0u8; 1];
        if client.read(&mut byte).await? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut words = head.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    if method != "CONNECT" {
        client
            .write_all(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n")
            .await?;
        return Ok(());
    }
    let refuse = {
        let mut state = state.lock().unwrap();
        state.targets.push(target.to_string());
        state.refuse
    };
    let upstream = match names.get(target) {
        Some(addr) if !refuse => TcpStream::connect(addr).await.ok(),
        _ => None,
    };
    let Some(mut upstream) = upstream else {
        client
            .write_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n")
            .await?;
        return Ok(());
    };
    client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await?;
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
