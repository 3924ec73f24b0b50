//! TLS with the test CA of `fixtures/`. The provider is named rather than taken from the
//! process default, which panics when some dependency also turns on rustls' `ring`.

use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::crypto::{CryptoProvider, aws_lc_rs};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;

const SERVER_CERT: &[u8] = include_bytes!("../fixtures/server.pem");
const SERVER_KEY: &[u8] = include_bytes!("../fixtures/server.key.pem");

fn provider() -> Arc<CryptoProvider> {
    Arc::new(aws_lc_rs::default_provider())
}

/// The server side of 127.0.0.1 / localhost, offering only `h2` by ALPN (a client offering only
/// other protocols fails the handshake).
pub fn acceptor() -> TlsAcceptor {
    let chain = vec![CertificateDer::from_pem_slice(SERVER_CERT).expect("fixtures/server.pem is a certificate")];
    let key = PrivateKeyDer::from_pem_slice(SERVER_KEY).expect("fixtures/server.key.pem is a key");
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("aws-lc-rs supports the default TLS versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server certificate and key match");
    config.alpn_protocols = vec![b"h2".to_vec()];
    TlsAcceptor::from(Arc::new(config))
}

/// A client trusting only the CA in `ca` (a PEM file), offering `alpn`.
#[cfg(test)]
pub fn client_config(ca: &std::path::Path, alpn: &[&[u8]]) -> tokio_rustls::rustls::ClientConfig {
    use tokio_rustls::rustls::{ClientConfig, RootCertStore};

    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(ca).expect("the CA file holds a certificate")).expect("a usable CA");
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("aws-lc-rs supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}
