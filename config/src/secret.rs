use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A value that must never reach a log line or `check-config`'s output.
///
/// It deserializes from a string or a number because figment reads an all-digit environment value
/// (`SWITCHBOARD_AUTH__JWT_SECRET=123456`) as an integer.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

pub(crate) const MASK: &str = "********";

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(MASK)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SecretVisitor;

        impl Visitor<'_> for SecretVisitor {
            type Value = Secret;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Secret, E> {
                Ok(Secret::new(text))
            }

            fn visit_u64<E: de::Error>(self, number: u64) -> Result<Secret, E> {
                Ok(Secret::new(number.to_string()))
            }

            fn visit_i64<E: de::Error>(self, number: i64) -> Result<Secret, E> {
                Ok(Secret::new(number.to_string()))
            }
        }

        deserializer.deserialize_any(SecretVisitor)
    }
}
