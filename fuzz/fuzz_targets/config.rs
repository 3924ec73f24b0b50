//! The configuration loader on arbitrary text: it refuses naming a key or a position in the file,
//! and what it accepts, `switchboard check-config` prints without a secret in it.

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_config::{Config, ConfigError, Secret};

/// What `check-config` prints in place of a secret.
const MASK: &str = "********";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match switchboard_config::load_from_str(text) {
        Ok(config) => check_printed(&config),
        Err(error) => check_error(&error),
    }
});

/// The operator has to know what to change: a key, or where the text stops being TOML.
fn check_error(error: &ConfigError) {
    let ConfigError::Invalid { key, message, .. } = error else {
        panic!("no file was read, yet: {error}");
    };
    assert!(!key.is_empty() && !message.is_empty(), "{error}");
    if key == "(top level)" {
        assert!(message.contains("line "), "an error about the whole file names the position: {error}");
    }
    let _ = error.to_string();
}

/// `check-config`'s rendering is TOML, and the same whatever the secrets are: none of them can
/// leak into it, however it is spelt.
fn check_printed(config: &Config) {
    let printed = toml::to_string(config).unwrap_or_else(|e| panic!("check-config cannot print {config:?}: {e}"));
    printed.parse::<toml::Table>().unwrap_or_else(|e| panic!("check-config printed something that is not TOML ({e}): {printed}"));
    let mut masked = config.clone();
    let mask = |secret: &mut Option<Secret>| {
        if secret.is_some() {
            *secret = Some(Secret::new(MASK));
        }
    };
    mask(&mut masked.auth.jwt_secret);
    mask(&mut masked.gateway.database_url);
    mask(&mut masked.mqtt.url);
    if let Some(xmpp) = &mut masked.xmpp {
        xmpp.secret = Secret::new(MASK);
    }
    if let Some(baidu) = masked.push.as_mut().and_then(|p| p.baidu.as_mut()) {
        baidu.secret_key = Secret::new(MASK);
    }
    let without_secrets = toml::to_string(&masked).expect("printable once, printable with masks");
    assert_eq!(printed, without_secrets, "a secret changed what check-config prints");
}
