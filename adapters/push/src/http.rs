//! The HTTP client every provider shares, and the parts of HTTP answers they all read.

use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::PushError;

/// A slow provider must not hold a notification (and a concurrency permit) for long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// One client per provider: connections are reused, which APNs in particular expects.
/// `ca_file` adds a trusted CA beside the system's (tests, corporate proxies).
pub fn client(ca_file: Option<&Path>, http2_only: bool) -> Result<reqwest::Client, PushError> {
    let mut builder = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        .user_agent(concat!("switchboard/", env!("CARGO_PKG_VERSION")));
    if http2_only {
        builder = builder.http2_prior_knowledge();
    }
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|source| PushError::File { key: "push.ca_file", path: path.to_owned(), source })?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| PushError::Invalid { key: "push.ca_file", message: e.to_string() })?;
        if certificates.is_empty() {
            return Err(PushError::Invalid { key: "push.ca_file", message: "no certificate in the file".into() });
        }
        for certificate in certificates {
            builder = builder.add_root_certificate(certificate);
        }
    }
    builder.build().map_err(|e| PushError::Invalid { key: "push", message: format!("cannot build the HTTP client: {e}") })
}

/// `Retry-After` as seconds or an HTTP date (RFC 9110 §10.2.3).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO))
}

/// Whether a status means "later": throttled or the provider in trouble.
pub fn is_transient(status: reqwest::StatusCode) -> bool {
    status == reqwest::StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

#[cfg(test)]
mod tests {
    use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};

    use super::*;

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(RETRY_AFTER, HeaderValue::from_static("120"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(120)));
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(90));
        headers.insert(RETRY_AFTER, HeaderValue::from_str(&later).expect("header"));
        let parsed = retry_after(&headers).expect("a date");
        assert!(parsed > Duration::from_secs(80) && parsed <= Duration::from_secs(90), "{parsed:?}");
        headers.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers), None);
    }
}
