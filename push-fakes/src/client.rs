//! Just enough HTTP client for the fakes' own tests: one request per connection, HTTP/1.1 in the
//! clear or HTTP/2 over TLS. It takes what the gateway is given (the fake's `endpoint()`, the CA
//! file), so the tests also show those work.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{HeaderMap, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;

use super::tls;

pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("a JSON body ({e}): {:?}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

fn request(uri: String, headers: &[(&str, &str)], body: Vec<u8>) -> Request<Full<Bytes>> {
    let mut builder = Request::post(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Full::new(Bytes::from(body))).expect("a well-formed request")
}

async fn collect(response: hyper::Response<hyper::body::Incoming>) -> Reply {
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("the whole response body").to_bytes();
    Reply { status: parts.status.as_u16(), headers: parts.headers, body }
}

fn address(endpoint: &str, scheme: &str) -> SocketAddr {
    let authority = endpoint.strip_prefix(scheme).and_then(|rest| rest.strip_prefix("://"));
    authority.and_then(|a| a.parse().ok()).unwrap_or_else(|| panic!("a {scheme}://IP:PORT endpoint, not {endpoint}"))
}

/// POST over HTTP/1.1 to `endpoint` (`http://IP:PORT`) + `path`; `Host` is the endpoint's, as a
/// client given that URL sends it.
pub async fn post(endpoint: &str, path: &str, headers: &[(&str, &str)], body: impl Into<Vec<u8>>) -> Reply {
    let addr = address(endpoint, "http");
    let stream = TcpStream::connect(addr).await.expect("connect to the fake");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("HTTP/1.1 handshake");
    tokio::spawn(connection);
    let mut request = request(path.to_owned(), headers, body.into());
    request.headers_mut().insert("host", addr.to_string().parse().expect("an address is a header value"));
    collect(sender.send_request(request).await.expect("an HTTP/1.1 answer")).await
}

/// A TLS connection to `endpoint` (`https://IP:PORT`) trusting only `ca`, offering `alpn`, or the
/// handshake's error.
pub async fn tls_connect(
    endpoint: &str,
    ca: &Path,
    alpn: &[&[u8]],
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let stream = TcpStream::connect(address(endpoint, "https")).await?;
    let connector = TlsConnector::from(Arc::new(tls::client_config(ca, alpn)));
    let name = ServerName::try_from("127.0.0.1").expect("an IP address is a server name");
    connector.connect(name, stream).await
}

/// POST over HTTP/2 and TLS to `endpoint` + `path`, trusting only `ca`.
pub async fn post_h2(
    endpoint: &str,
    ca: &Path,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Vec<u8>>,
) -> Reply {
    let stream = tls_connect(endpoint, ca, &[b"h2"]).await.expect("TLS handshake with the test CA");
    let (mut sender, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .expect("HTTP/2 handshake");
    tokio::spawn(connection);
    let request = request(format!("{endpoint}{path}"), headers, body.into());
    collect(sender.send_request(request).await.expect("an HTTP/2 answer")).await
}
