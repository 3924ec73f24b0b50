//! Checks across fields, which serde cannot express. Each names the key to change.

use std::path::PathBuf;

use crate::error::ConfigError;
use crate::sections::{Config, MqttConfig, PushConfig};

pub(crate) fn validate(config: &Config) -> Result<(), ConfigError> {
    let domain = &config.gateway.domain;
    if !is_domain(domain) {
        return Err(ConfigError::invalid(
            "gateway.domain",
            format!("`{domain}` is not a domain name"),
        ));
    }
    if config.auth.jwt_secret.is_some() && config.auth.jwt_public_key.is_some() {
        return Err(ConfigError::invalid(
            "auth.jwt_public_key",
            "set either auth.jwt_secret (HS256) or auth.jwt_public_key (RS256/ES256), not both",
        ));
    }
    if config.auth.jwt_secret.as_ref().is_some_and(|s| s.expose().len() < 8) {
        return Err(ConfigError::invalid(
            "auth.jwt_secret",
            "must be at least 8 characters long",
        ));
    }
    if let Some(url) = &config.database_url_str()
        && !(url.starts_with("postgres://")
            || url.starts_with("postgresql://")
            || url.starts_with("sqlite:"))
        {
            return Err(ConfigError::invalid(
                "gateway.database_url",
                "must start with postgres:// (or sqlite:)",
            ));
        }
    check_tls_pair(&config.http.tls_cert, &config.http.tls_key, "http.tls_cert", "http.tls_key")?;
    let mqtt = &config.mqtt;
    validate_mqtt_broker(mqtt)?;
    if mqtt.topic_prefix.is_empty()
        || mqtt
            .topic_prefix
            .contains(['+', '#', '\0'])
        || mqtt.topic_prefix.starts_with('/')
        || mqtt.topic_prefix.ends_with('/')
    {
        return Err(ConfigError::invalid(
            "mqtt.topic_prefix",
            "must be a non-empty topic level without wildcards or leading/trailing '/'",
        ));
    }
    if mqtt.client_id.is_empty() {
        return Err(ConfigError::invalid("mqtt.client_id", "must not be empty"));
    }
    if let Some(xmpp) = &config.xmpp {
        if let Some(domain) = &xmpp.domain
            && !is_domain(domain)
        {
            return Err(ConfigError::invalid("xmpp.domain", format!("`{domain}` is not a domain name")));
        }
        if xmpp.server.rsplit_once(':').is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err()) {
            return Err(ConfigError::invalid("xmpp.server", "must be host:port, e.g. 127.0.0.1:5347"));
        }
        if xmpp.secret.expose().is_empty() {
            return Err(ConfigError::invalid("xmpp.secret", "must not be empty"));
        }
    }
    if let Some(push) = &config.push {
        validate_push(push)?;
    }
    let limits = &config.limits;
    if limits.max_frame_bytes < 256 || limits.max_frame_bytes > 16 * 1024 * 1024 {
        return Err(ConfigError::invalid(
            "limits.max_frame_bytes",
            "must be between 256 and 16777216",
        ));
    }
    if limits.messages_per_second == 0 {
        return Err(ConfigError::invalid(
            "limits.messages_per_second",
            "must be at least 1",
        ));
    }
    if limits.sessions_per_user == 0 {
        return Err(ConfigError::invalid("limits.sessions_per_user", "must be at least 1"));
    }
    if limits.offline_max == 0 {
        return Err(ConfigError::invalid("limits.offline_max", "must be at least 1"));
    }
    Ok(())
}

fn validate_mqtt_broker(mqtt: &MqttConfig) -> Result<(), ConfigError> {
    let mut tls_url = false;
    if let Some(url) = &mqtt.url {
        if mqtt.embedded == Some(true) {
            return Err(ConfigError::invalid(
                "mqtt.url",
                "an external broker is given while mqtt.embedded = true; set mqtt.embedded = false",
            ));
        }
        let text = url.expose();
        tls_url = text.starts_with("mqtts://") || text.starts_with("ssl://");
        if !(tls_url || text.starts_with("mqtt://") || text.starts_with("tcp://")) {
            return Err(ConfigError::invalid(
                "mqtt.url",
                "must look like mqtt://user:password@host:1883 (mqtts://user:password@host:8883 for TLS)",
            ));
        }
        if mqtt.tls_cert.is_some() || mqtt.tls_key.is_some() {
            return Err(ConfigError::invalid(
                "mqtt.tls_cert",
                "the TLS listener belongs to the embedded endpoint, which mqtt.url switches off; \
                 for TLS to the external broker use an mqtts:// URL",
            ));
        }
    } else if mqtt.embedded == Some(false) {
        return Err(ConfigError::invalid(
            "mqtt.url",
            "mqtt.embedded = false needs an external broker in mqtt.url",
        ));
    }
    if mqtt.ca_file.is_some() && !tls_url {
        return Err(ConfigError::invalid(
            "mqtt.ca_file",
            "is trusted for an external broker reached over TLS: it needs mqtt.url = \"mqtts://…\"",
        ));
    }
    check_tls_pair(&mqtt.tls_cert, &mqtt.tls_key, "mqtt.tls_cert", "mqtt.tls_key")?;
    // Port 0 (any free port) twice is two different ports.
    if mqtt.tls().is_some() && mqtt.tls_listen == mqtt.listen && mqtt.listen.port() != 0 {
        return Err(ConfigError::invalid("mqtt.tls_listen", "must differ from mqtt.listen"));
    }
    Ok(())
}

/// A certificate is useless without its key and the reverse: the one missing is named.
fn check_tls_pair(
    cert: &Option<PathBuf>,
    key: &Option<PathBuf>,
    cert_key: &str,
    key_key: &str,
) -> Result<(), ConfigError> {
    match (cert, key) {
        (Some(_), None) => Err(ConfigError::invalid(key_key, format!("{cert_key} is set: give its private key too"))),
        (None, Some(_)) => Err(ConfigError::invalid(cert_key, format!("{key_key} is set: give its certificate chain too"))),
        _ => Ok(()),
    }
}

fn validate_push(push: &PushConfig) -> Result<(), ConfigError> {
    if push.fcm.is_none() && push.apns.is_none() && push.baidu.is_none() {
        return Err(ConfigError::invalid("push", "configure at least one of [push.fcm], [push.apns], [push.baidu]"));
    }
    if push.coalesce_window.get().is_zero() {
        return Err(ConfigError::invalid("push.coalesce_window", "must be longer than 0s"));
    }
    if let Some(fcm) = &push.fcm {
        if fcm.project_id.is_empty() || !fcm.project_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(ConfigError::invalid("push.fcm.project_id", "must be a Firebase project id"));
        }
        check_base_url("push.fcm.endpoint", &fcm.endpoint)?;
    }
    if let Some(apns) = &push.apns {
        for (key, value) in [("push.apns.team_id", &apns.team_id), ("push.apns.key_id", &apns.key_id)] {
            if value.len() != 10 || !value.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(ConfigError::invalid(key, "must be Apple's 10-character identifier"));
            }
        }
        if apns.topic.is_empty() {
            return Err(ConfigError::invalid("push.apns.topic", "must be the app's bundle id"));
        }
        if let Some(endpoint) = &apns.endpoint {
            check_base_url("push.apns.endpoint", endpoint)?;
        }
    }
    if let Some(baidu) = &push.baidu {
        if baidu.api_key.is_empty() {
            return Err(ConfigError::invalid("push.baidu.api_key", "must not be empty"));
        }
        if baidu.secret_key.expose().is_empty() {
            return Err(ConfigError::invalid("push.baidu.secret_key", "must not be empty"));
        }
        check_base_url("push.baidu.endpoint", &baidu.endpoint)?;
    }
    Ok(())
}

/// A base URL is scheme, host and port: the provider's standard path is appended to it.
fn check_base_url(key: &str, url: &str) -> Result<(), ConfigError> {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains(['/', '?', '#', ' ']) => Ok(()),
        _ => Err(ConfigError::invalid(key, "must be a base URL such as https://host:port (no path)")),
    }
}

impl Config {
    fn database_url_str(&self) -> Option<String> {
        self.gateway
            .database_url
            .as_ref()
            .map(|s| s.expose().to_owned())
    }
}

fn is_domain(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 253
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}
