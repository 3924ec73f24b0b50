//! TLS for the gateway's listeners and for its connection to an external broker: rustls with the
//! aws-lc-rs provider, certificates and keys from PEM files named in the configuration.
//!
//! The provider is named rather than taken from the process default: the default panics as soon
//! as some dependency also turns on rustls' `ring` feature.
//!
//! Files are read once, when an adapter binds, so that a missing or malformed file stops the start
//! with an error naming its configuration key.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use switchboard_config::TlsFiles;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::rustls::crypto::{CryptoProvider, aws_lc_rs};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};

pub use tokio_rustls::TlsAcceptor;
pub use tokio_rustls::rustls;
pub use tokio_rustls::server::TlsStream;

/// How long a client has, after opening TCP, to finish the TLS handshake. A client that never
/// speaks must not hold a task and a socket for long.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A certificate, key or CA file that cannot be used; `key` is the configuration key naming it.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{key}: cannot read {path}: {source}")]
    File {
        key: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{key}: {path}: {message}")]
    Invalid { key: &'static str, path: PathBuf, message: String },
    /// Not a configuration problem: the build's TLS provider refuses its own defaults.
    #[error("the TLS provider cannot be used: {0}")]
    Provider(#[source] rustls::Error),
}

impl TlsError {
    /// The configuration key of the file at fault.
    pub fn key(&self) -> Option<&'static str> {
        match self {
            Self::File { key, .. } | Self::Invalid { key, .. } => Some(key),
            Self::Provider(_) => None,
        }
    }
}

/// Why a TLS client was not served.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("no TLS handshake within {0:?}")]
    TimedOut(Duration),
    #[error("TLS handshake failed: {0}")]
    Failed(#[source] std::io::Error),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(aws_lc_rs::default_provider())
}

/// The server side of a listener: the certificate chain and key of `files`, offering `alpn`
/// (none: no ALPN negotiation).
pub fn server_config(files: &TlsFiles, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = read_certificates(files.cert_key, &files.cert)?;
    let pem = read(files.key_key, &files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|error| TlsError::Invalid {
        key: files.key_key,
        path: files.key.clone(),
        message: format!("no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {error}"),
    })?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Provider)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        // A key of another certificate is the key's fault more often than the chain's.
        .map_err(|error| invalid(files.key_key, &files.key, format!("does not fit {}: {error}", files.cert_key)))?;
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The client side of a connection to a server: the system's trusted roots, plus the CAs of
/// `extra_ca` (`(key, path)`) when given.
pub fn client_config(extra_ca: Option<(&'static str, &Path)>) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    let system = rustls_native_certs::load_native_certs();
    for error in &system.errors {
        tracing::warn!(%error, "some system CA certificates cannot be read");
    }
    let (added, ignored) = roots.add_parsable_certificates(system.certs);
    tracing::debug!(added, ignored, "system CA certificates loaded");
    if let Some((key, path)) = extra_ca {
        for certificate in read_certificates(key, path)? {
            roots.add(certificate).map_err(|error| invalid(key, path, format!("not a usable CA certificate: {error}")))?;
        }
    }
    if roots.is_empty() {
        tracing::warn!("no trusted CA certificates: every TLS server will be refused");
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Provider)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The server side of one handshake, bounded by `timeout`.
pub async fn accept<S>(acceptor: &TlsAcceptor, stream: S, timeout: Duration) -> Result<TlsStream<S>, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(error)) => Err(HandshakeError::Failed(error)),
        Err(_) => Err(HandshakeError::TimedOut(timeout)),
    }
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::File { key, path: path.to_owned(), source })
}

/// Every certificate of a PEM file; a file with none is refused.
fn read_certificates(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(key, path)?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| invalid(key, path, format!("unreadable PEM: {error}")))?;
    if certificates.is_empty() {
        return Err(invalid(key, path, "no certificate (-----BEGIN CERTIFICATE-----) in the file"));
    }
    Ok(certificates)
}

fn invalid(key: &'static str, path: &Path, message: impl ToString) -> TlsError {
    TlsError::Invalid { key, path: path.to_owned(), message: message.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../push-fakes/fixtures");

    fn files(cert: &str, key: &str) -> TlsFiles {
        TlsFiles {
            cert: Path::new(FIXTURES).join(cert),
            key: Path::new(FIXTURES).join(key),
            cert_key: "http.tls_cert",
            key_key: "http.tls_key",
        }
    }

    #[test]
    fn a_certificate_and_its_key_make_a_server() {
        let config = server_config(&files("server.pem", "server.key.pem"), &[b"http/1.1"]).expect("usable");
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }

    #[test]
    fn unusable_files_are_named_by_their_key() {
        let missing = server_config(&files("server.pem", "no-such.pem"), &[]).expect_err("missing key file");
        assert!(matches!(missing, TlsError::File { .. }), "{missing}");
        assert_eq!(missing.key(), Some("http.tls_key"));

        // A key where the certificate should be, and the reverse.
        let swapped = server_config(&files("server.key.pem", "server.pem"), &[]).expect_err("swapped files");
        assert_eq!(swapped.key(), Some("http.tls_cert"), "{swapped}");
        let no_key = server_config(&files("server.pem", "ca.pem"), &[]).expect_err("no key");
        assert_eq!(no_key.key(), Some("http.tls_key"), "{no_key}");

        // The CA's key is a key, but not the certificate's.
        let mismatch = server_config(&files("server.pem", "ca.key.pem"), &[]).expect_err("another key");
        assert_eq!(mismatch.key(), Some("http.tls_key"), "{mismatch}");

        let not_a_ca = client_config(Some(("mqtt.ca_file", &Path::new(FIXTURES).join("server.key.pem"))))
            .expect_err("a key is not a CA");
        assert_eq!(not_a_ca.key(), Some("mqtt.ca_file"), "{not_a_ca}");
        client_config(Some(("mqtt.ca_file", &Path::new(FIXTURES).join("ca.pem")))).expect("a CA");
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_never_speaks_is_dropped_after_the_timeout() {
        let acceptor = TlsAcceptor::from(server_config(&files("server.pem", "server.key.pem"), &[]).expect("usable"));
        // The client end stays open and silent.
        let (_client, server) = tokio::io::duplex(1024);
        let error = accept(&acceptor, server, HANDSHAKE_TIMEOUT).await.expect_err("no handshake");
        assert!(matches!(error, HandshakeError::TimedOut(_)), "{error}");
    }
}
