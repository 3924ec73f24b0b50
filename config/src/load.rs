use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Toml};

use crate::error::ConfigError;
use crate::sections::Config;
use crate::validate::validate;

/// Every key can be overridden as `SWITCHBOARD_<SECTION>__<KEY>`.
pub const ENV_PREFIX: &str = "SWITCHBOARD_";

/// Reads `path` (when given; it must then exist), overlays the environment and checks the result.
pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
    let mut figment = Figment::new();
    if let Some(path) = path {
        // figment treats a missing file as empty; an operator who names a file means that file.
        std::fs::metadata(path).map_err(|source| ConfigError::Unreadable {
            path: path.to_owned(),
            source,
        })?;
        figment = figment.merge(Toml::file_exact(path));
    }
    extract(figment.merge(env()))
}

/// The same as [`load`], from TOML text instead of a file (the environment still applies).
pub fn load_from_str(toml: &str) -> Result<Config, ConfigError> {
    extract(Figment::from(Toml::string(toml)).merge(env()))
}

fn env() -> Env {
    Env::prefixed(ENV_PREFIX).split("__")
}

fn extract(figment: Figment) -> Result<Config, ConfigError> {
    let config: Config = figment.extract().map_err(into_config_error)?;
    validate(&config)?;
    Ok(config)
}

fn into_config_error(error: figment::Error) -> ConfigError {
    // figment reports one error per problem in a chain; the first is the one to fix first.
    let error = error.into_iter().next().unwrap_or_else(|| {
        figment::Error::from(String::from("the configuration could not be read"))
    });
    let mut path = error.path.clone();
    let message = match &error.kind {
        figment::error::Kind::UnknownField(field, _) => {
            if path.last() != Some(field) {
                path.push(field.clone());
            }
            "unknown key".to_owned()
        }
        // Named by the key that is missing, not by its section.
        figment::error::Kind::MissingField(field) => {
            if path.last().map(String::as_str) != Some(field.as_ref()) {
                path.push(field.to_string());
            }
            "missing key".to_owned()
        }
        other => other.to_string(),
    };
    let key = if path.is_empty() {
        "(top level)".to_owned()
    } else {
        path.iter().map(|segment| toml_key(segment)).collect::<Vec<_>>().join(".")
    };
    let origin = error
        .metadata
        .as_ref()
        .map(|meta| match &meta.source {
            Some(figment::Source::File(file)) => format!(" (in {})", file.display()),
            _ if meta.name.contains("environment") => format!(
                " (from environment variable {ENV_PREFIX}{})",
                path.iter()
                    .map(|p| p.to_uppercase())
                    .collect::<Vec<_>>()
                    .join("__")
            ),
            _ => String::new(),
        })
        .unwrap_or_default();
    ConfigError::Invalid {
        key,
        message,
        origin,
    }
}

/// A key as it is written in TOML: an empty key, or one with dots or spaces, only means something
/// quoted (`""`, `"a.b"`); printed bare it would name nothing, or another key.
fn toml_key(segment: &str) -> String {
    let bare = !segment.is_empty() && segment.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        segment.to_owned()
    } else {
        toml::Value::String(segment.to_owned()).to_string()
    }
}

#[cfg(test)]
// figment's Jail wants its own large error type from every closure.
#[allow(clippy::result_large_err)]
mod tests {
    use figment::Jail;

    use super::*;
    use crate::sections::MqttMode;

    #[test]
    fn empty_input_is_the_embedded_default() {
        Jail::expect_with(|_| {
            let config = load_from_str("").map_err(|e| e.to_string())?;
            assert_eq!(config.gateway.domain, "localhost");
            assert_eq!(config.http.listen.to_string(), "127.0.0.1:8080");
            assert_eq!(
                config.mqtt.mode(),
                MqttMode::Embedded {
                    listen: "127.0.0.1:1883".parse().map_err(|_| "addr")?
                }
            );
            assert_eq!(config.limits.max_frame_bytes, 65_536);
            Ok(())
        });
    }

    #[test]
    fn unknown_key_is_named() {
        Jail::expect_with(|_| {
            let error = load_from_str("[mqtt]\nlistne = \"127.0.0.1:1\"\n")
                .err()
                .ok_or("accepted an unknown key")?;
            assert_eq!(error.key(), Some("mqtt.listne"));
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_that_need_quotes_are_named_quoted() {
        Jail::expect_with(|_| {
            let error = load_from_str("'' = 4096\n").err().ok_or("accepted an empty key")?;
            assert_eq!(error.key(), Some("\"\""));
            let error = load_from_str("[mqtt]\n\"listen.port\" = 1\n").err().ok_or("accepted a dotted key")?;
            assert_eq!(error.key(), Some("mqtt.\"listen.port\""));
            Ok(())
        });
    }

    #[test]
    fn unknown_section_is_named() {
        Jail::expect_with(|_| {
            let error = load_from_str("[mqqt]\nurl = \"x\"\n")
                .err()
                .ok_or("accepted an unknown section")?;
            assert_eq!(error.key(), Some("mqqt"));
            Ok(())
        });
    }

    #[test]
    fn environment_overrides_the_file_and_names_itself_when_wrong() {
        Jail::expect_with(|jail| {
            jail.set_env("SWITCHBOARD_HTTP__LISTEN", "127.0.0.1:9999");
            jail.set_env("SWITCHBOARD_AUTH__JWT_SECRET", "12345678901");
            let config = load_from_str("[http]\nlisten = \"127.0.0.1:1\"\n")
                .map_err(|e| e.to_string())?;
            assert_eq!(config.http.listen.port(), 9999);
            assert_eq!(
                config.auth.jwt_secret.as_ref().map(|s| s.expose()),
                Some("12345678901"),
                "an all-digit secret from the environment is still a secret"
            );

            jail.set_env("SWITCHBOARD_MQTT__LISTEN", "not an address");
            let error = load_from_str("").err().ok_or("accepted a bad address")?;
            assert_eq!(error.key(), Some("mqtt.listen"));
            assert!(
                error.to_string().contains("SWITCHBOARD_MQTT__LISTEN"),
                "{error}"
            );
            Ok(())
        });
    }

    #[test]
    fn cross_field_errors_name_the_key() {
        Jail::expect_with(|_| {
            let error = load_from_str(
                "[mqtt]\nembedded = true\nurl = \"mqtt://gw:pw@127.0.0.1:1883\"\n",
            )
            .err()
            .ok_or("accepted embedded + url")?;
            assert_eq!(error.key(), Some("mqtt.url"));

            let error = load_from_str("[gateway]\ndomain = \"not a domain\"\n")
                .err()
                .ok_or("accepted a bad domain")?;
            assert_eq!(error.key(), Some("gateway.domain"));

            let error = load_from_str("[limits]\noffline_ttl = \"3 weeks\"\n")
                .err()
                .ok_or("accepted a bad duration")?;
            assert_eq!(error.key(), Some("limits.offline_ttl"));
            Ok(())
        });
    }

    #[test]
    fn an_external_broker_url_switches_off_the_embedded_endpoint() {
        Jail::expect_with(|_| {
            let config = load_from_str("[mqtt]\nurl = \"mqtt://gw:pw@127.0.0.1:1884\"\n")
                .map_err(|e| e.to_string())?;
            assert_eq!(
                config.mqtt.mode(),
                MqttMode::External {
                    url: "mqtt://gw:pw@127.0.0.1:1884".into()
                }
            );
            Ok(())
        });
    }

    #[test]
    fn push_sections_are_optional_and_checked() {
        Jail::expect_with(|_| {
            let config = load_from_str("").map_err(|e| e.to_string())?;
            assert!(config.push.is_none(), "no push unless configured");

            let config = load_from_str(
                "[push]\ncontent = \"none\"\n[push.baidu]\napi_key = \"k\"\nsecret_key = \"s3cret\"\n",
            )
            .map_err(|e| e.to_string())?;
            let push = config.push.as_ref().ok_or("push missing")?;
            assert_eq!(push.coalesce_window.to_string(), "30s");
            assert_eq!(push.content, crate::PushContent::None);
            assert!(push.fcm.is_none() && push.apns.is_none());
            let printed = toml::to_string(&config).map_err(|e| e.to_string())?;
            assert!(!printed.contains("s3cret"), "{printed}");

            let error = load_from_str("[push.apns]\nteam_id = \"short\"\nkey_id = \"KEY1234567\"\nkey = \"k.p8\"\ntopic = \"t\"\n")
                .err()
                .ok_or("accepted a bad team id")?;
            assert_eq!(error.key(), Some("push.apns.team_id"));

            let error = load_from_str("[push.fcm]\nproject_id = \"p\"\nservice_account = \"sa.json\"\nendpoint = \"https://h/v1\"\n")
                .err()
                .ok_or("accepted an endpoint with a path")?;
            assert_eq!(error.key(), Some("push.fcm.endpoint"));

            let apns = "[push.apns]\nteam_id = \"ABCDE12345\"\nkey_id = \"KEY1234567\"\nkey = \"k.p8\"\ntopic = \"com.example.chat\"\n";
            let host = |extra: &str| -> Result<String, String> {
                let config = load_from_str(&format!("{apns}{extra}")).map_err(|e| e.to_string())?;
                Ok(config.push.and_then(|p| p.apns).map(|a| a.base_url()).unwrap_or_default())
            };
            assert_eq!(host("")?, "https://api.push.apple.com");
            assert_eq!(host("sandbox = true\n")?, "https://api.sandbox.push.apple.com");
            assert_eq!(host("sandbox = true\nendpoint = \"http://127.0.0.1:9\"\n")?, "http://127.0.0.1:9");

            let error = load_from_str("[push]\ncoalesce_window = \"10s\"\n").err().ok_or("accepted push without a provider")?;
            assert_eq!(error.key(), Some("push"));

            let error = load_from_str("[push.fcm]\nprojectid = \"p\"\n").err().ok_or("accepted an unknown key")?;
            assert_eq!(error.key(), Some("push.fcm.projectid"));
            Ok(())
        });
    }

    #[test]
    fn tls_keys_come_in_pairs_and_name_the_missing_one() {
        Jail::expect_with(|jail| {
            let config = load_from_str("").map_err(|e| e.to_string())?;
            assert_eq!(config.http.tls(), None, "plain HTTP by default");
            assert_eq!(config.mqtt.tls(), None, "no MQTT TLS listener by default");
            assert_eq!(config.mqtt.tls_listen.to_string(), "127.0.0.1:8883");

            let config = load_from_str(
                "[http]\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n[mqtt]\ntls_cert = \"mc.pem\"\ntls_key = \"mk.pem\"\ntls_listen = \"0.0.0.0:8884\"\n",
            )
            .map_err(|e| e.to_string())?;
            let http = config.http.tls().ok_or("http tls")?;
            assert_eq!((http.cert.to_str(), http.key.to_str()), (Some("c.pem"), Some("k.pem")));
            assert_eq!((http.cert_key, http.key_key), ("http.tls_cert", "http.tls_key"));
            let mqtt = config.mqtt.tls().ok_or("mqtt tls")?;
            assert_eq!((mqtt.cert_key, mqtt.key_key), ("mqtt.tls_cert", "mqtt.tls_key"));
            assert_eq!(config.mqtt.tls_listen.port(), 8884);

            for (toml, key) in [
                ("[http]\ntls_cert = \"c.pem\"\n", "http.tls_key"),
                ("[http]\ntls_key = \"k.pem\"\n", "http.tls_cert"),
                ("[mqtt]\ntls_cert = \"c.pem\"\n", "mqtt.tls_key"),
                ("[mqtt]\ntls_key = \"k.pem\"\n", "mqtt.tls_cert"),
            ] {
                let error = load_from_str(toml).err().ok_or(format!("accepted {toml}"))?;
                assert_eq!(error.key(), Some(key), "{toml}: {error}");
            }

            jail.set_env("SWITCHBOARD_HTTP__TLS_CERT", "from-env.pem");
            let error = load_from_str("").err().ok_or("accepted a certificate without a key")?;
            assert_eq!(error.key(), Some("http.tls_key"));
            Ok(())
        });
    }

    #[test]
    fn tls_to_an_external_broker() {
        Jail::expect_with(|_| {
            for url in ["mqtts://gw:pw@broker.example:8883", "ssl://gw:pw@broker.example"] {
                let config = load_from_str(&format!("[mqtt]\nurl = \"{url}\"\nca_file = \"ca.pem\"\n")).map_err(|e| e.to_string())?;
                assert_eq!(config.mqtt.mode(), MqttMode::External { url: url.into() });
                assert_eq!(config.mqtt.ca_file.as_deref().and_then(|p| p.to_str()), Some("ca.pem"));
            }

            let error = load_from_str("[mqtt]\nurl = \"mqtt://gw:pw@h:1883\"\nca_file = \"ca.pem\"\n")
                .err()
                .ok_or("accepted a CA for a plain connection")?;
            assert_eq!(error.key(), Some("mqtt.ca_file"));
            let error = load_from_str("[mqtt]\nca_file = \"ca.pem\"\n").err().ok_or("accepted a CA without a broker")?;
            assert_eq!(error.key(), Some("mqtt.ca_file"));

            let error = load_from_str("[mqtt]\nurl = \"mqtts://gw:pw@h\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n")
                .err()
                .ok_or("accepted a TLS listener with an external broker")?;
            assert_eq!(error.key(), Some("mqtt.tls_cert"));
            Ok(())
        });
    }

    #[test]
    fn the_tls_listener_needs_its_own_address() {
        Jail::expect_with(|_| {
            let same = "[mqtt]\nlisten = \"127.0.0.1:1883\"\ntls_listen = \"127.0.0.1:1883\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n";
            let error = load_from_str(same).err().ok_or("accepted one address for both listeners")?;
            assert_eq!(error.key(), Some("mqtt.tls_listen"));
            // Port 0 is "any free port", twice two different ones.
            let any = "[mqtt]\nlisten = \"127.0.0.1:0\"\ntls_listen = \"127.0.0.1:0\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n";
            load_from_str(any).map_err(|e| e.to_string())?;
            // Without a certificate there is no TLS listener for the address to clash with.
            load_from_str("[mqtt]\nlisten = \"127.0.0.1:8883\"\n").map_err(|e| e.to_string())?;
            Ok(())
        });
    }

    #[test]
    fn secrets_are_masked_when_printed() {
        Jail::expect_with(|_| {
            let config = load_from_str(
                "[auth]\njwt_secret = \"hunter2hunter2\"\n[mqtt]\nurl = \"mqtt://gw:pw@h:1\"\n",
            )
            .map_err(|e| e.to_string())?;
            let printed = toml::to_string(&config).map_err(|e| e.to_string())?;
            assert!(!printed.contains("hunter2"), "{printed}");
            assert!(!printed.contains("gw:pw"), "{printed}");
            assert!(printed.contains("jwt_secret = \"********\""), "{printed}");
            Ok(())
        });
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)]
mod example {
    use figment::Jail;

    use super::load_from_str;

    #[test]
    fn the_shipped_example_configuration_is_valid() {
        Jail::expect_with(|_| {
            let config = load_from_str(include_str!("../switchboard.example.toml")).map_err(|e| e.to_string())?;
            assert_eq!(config.gateway.domain, "im.example.com");
            assert_eq!(config.limits.offline_ttl.to_string(), "30d");
            Ok(())
        });
    }
}
