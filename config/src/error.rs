use std::path::PathBuf;

/// Why a configuration was refused. Every variant names the key an operator has to change.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {path} cannot be read: {source}")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("configuration key `{key}`: {message}{origin}")]
    Invalid {
        key: String,
        message: String,
        /// Where the value came from, e.g. " (from environment variable SWITCHBOARD_MQTT__LISTEN)".
        origin: String,
    },
}

impl ConfigError {
    pub fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            message: message.into(),
            origin: String::new(),
        }
    }

    /// The dotted key at fault (`mqtt.listen`), when the error is about one.
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Invalid { key, .. } => Some(key),
            Self::Unreadable { .. } => None,
        }
    }
}
