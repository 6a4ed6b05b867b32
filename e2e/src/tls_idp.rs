//! The mock token endpoint over TLS: a throw-away certificate for a host name, and a TLS front
//! that hands each decrypted connection to the mock IdP's plain HTTP port.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

pub struct TlsIdp {
    pub port: u16,
    /// The certificate (self-signed, so also the CA to trust), as PEM.
    pub ca_file: PathBuf,
    _dir: tempfile::TempDir,
    runtime: Option<tokio::runtime::Runtime>,
}

impl TlsIdp {
    /// TLS for `host_name` on a free loopback port, in front of 127.0.0.1:`plain_port`.
    pub fn start(host_name: &str, plain_port: u16) -> TlsIdp {
        let cert =
            rcgen::generate_simple_self_signed(vec![host_name.to_string()]).expect("certificate");
        let dir = tempfile::tempdir().expect("temp dir");
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, cert.cert.pem()).expect("write certificate");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_pair.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(vec![CertificateDer::from(cert.cert.der().to_vec())], key)
            .expect("TLS configuration");
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let (runtime, listener, port) = crate::server::runtime_with_listener(0, 1);
        runtime.spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(client).await else {
                        return;
                    };
                    if let Ok(mut plain) = TcpStream::connect(("127.0.0.1", plain_port)).await {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                    }
                });
            }
        });
        TlsIdp {
            port,
            ca_file,
            _dir: dir,
            runtime: Some(runtime),
        }
    }
}

impl Drop for TlsIdp {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
