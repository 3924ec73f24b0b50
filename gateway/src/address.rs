//! Addresses name people: a gateway user, or someone elsewhere reached through a federating
//! adapter. Sessions, topics and devices are endpoints, never addresses.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("`{0}` is not a valid user name: use 1 to 64 of a-z 0-9 . _ -")]
    InvalidUser(String),
    #[error("`{0}` is not a valid address")]
    Invalid(String),
}

/// A gateway user's local part, `[a-z0-9._-]{1,64}`, case-folded to lower case.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UserId(Arc<str>);

impl UserId {
    pub fn parse(text: &str) -> Result<Self, AddressError> {
        let valid = (1..=64).contains(&text.len())
            && text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !valid {
            return Err(AddressError::InvalidUser(text.to_owned()));
        }
        // Names nearly always arrive folded already; then the shared string is the only copy.
        if text.bytes().any(|b| b.is_ascii_uppercase()) {
            Ok(Self(text.to_ascii_lowercase().into()))
        } else {
            Ok(Self(text.into()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for UserId {
    type Error = AddressError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<UserId> for String {
    fn from(value: UserId) -> Self {
        value.0.to_string()
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserId({})", self.0)
    }
}

/// The gateway's own domain: `alice` is `alice@<domain>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Domain(Arc<str>);

impl Domain {
    pub fn new(domain: &str) -> Self {
        Self(domain.to_ascii_lowercase().into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Someone outside the gateway: `local@domain/resource` with the local part and resource optional
/// (a bare or full JID, in XMPP terms).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RemoteAddress {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub local: Option<String>,
    pub domain: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub resource: Option<String>,
}

impl RemoteAddress {
    /// The address without its resource.
    pub fn bare(&self) -> RemoteAddress {
        RemoteAddress {
            resource: None,
            ..self.clone()
        }
    }
}

impl fmt::Display for RemoteAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(local) = &self.local {
            write!(f, "{local}@")?;
        }
        f.write_str(&self.domain)?;
        if let Some(resource) = &self.resource {
            write!(f, "/{resource}")?;
        }
        Ok(())
    }
}

/// A person: a gateway user or someone reached through a federating adapter.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Address {
    User { user: UserId },
    Remote(RemoteAddress),
}

impl Address {
    pub fn user(user: UserId) -> Self {
        Self::User { user }
    }

    pub fn as_user(&self) -> Option<&UserId> {
        match self {
            Self::User { user } => Some(user),
            Self::Remote(_) => None,
        }
    }

    /// Reads an address as a client writes it: `bob`, `bob@<gateway domain>`, or any other
    /// `local@domain[/resource]`.
    pub fn parse(text: &str, gateway: &Domain) -> Result<Self, AddressError> {
        let invalid = || AddressError::Invalid(text.to_owned());
        // U+FFFE and U+FFFF are no control characters, but XML cannot carry them either: in the
        // `to` of a stanza, one would stop the XMPP link at every retry.
        let unusable = |c: char| c.is_whitespace() || c.is_control() || matches!(c, '\u{FFFE}' | '\u{FFFF}');
        if text.is_empty() || text.len() > 3071 || text.chars().any(unusable) {
            return Err(invalid());
        }
        let (bare, resource) = match text.split_once('/') {
            Some((bare, resource)) if !resource.is_empty() && resource.len() <= 1023 => {
                (bare, Some(resource.to_owned()))
            }
            Some(_) => return Err(invalid()),
            None => (text, None),
        };
        let (local, domain) = match bare.split_once('@') {
            Some((local, domain)) => (Some(local), domain),
            None if resource.is_none() => match UserId::parse(bare) {
                // A bare local part means a gateway user (CONTRACT §2), even one with a dot.
                Ok(user) => return Ok(Self::user(user)),
                Err(_) => (None, bare),
            },
            None => (None, bare),
        };
        let domain = domain.to_ascii_lowercase();
        if !is_domain(&domain) {
            return Err(invalid());
        }
        if domain == gateway.as_str() {
            let local = local.ok_or_else(invalid)?;
            // A gateway user is addressed without a resource: sessions are not addresses.
            return UserId::parse(local).map(Self::user);
        }
        if let Some(local) = local
            && (local.is_empty() || local.len() > 1023 || local.contains(['"', '&', '\'', ':', '<', '>', '@'])) {
                return Err(invalid());
            }
        Ok(Self::Remote(RemoteAddress {
            local: local.map(str::to_owned),
            domain,
            resource,
        }))
    }

    /// The address as clients see it in `from` and `to`.
    pub fn display(&self, gateway: &Domain) -> String {
        match self {
            Self::User { user } => format!("{user}@{}", gateway.as_str()),
            Self::Remote(remote) => remote.to_string(),
        }
    }
}

fn is_domain(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 253
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gw() -> Domain {
        Domain::new("im.example.com")
    }

    #[test]
    fn user_ids_are_case_folded_and_checked() {
        assert_eq!(UserId::parse("Alice").map(|u| u.to_string()), Ok("alice".into()));
        assert!(UserId::parse("").is_err());
        assert!(UserId::parse("al ice").is_err());
        assert!(UserId::parse("alice@x").is_err());
        assert!(UserId::parse(&"a".repeat(65)).is_err());
        assert!(UserId::parse(&"a".repeat(64)).is_ok());
    }

    #[test]
    fn bare_local_part_and_gateway_domain_mean_a_gateway_user() {
        let bob = Address::user(UserId::parse("bob").expect("valid"));
        assert_eq!(Address::parse("bob", &gw()), Ok(bob.clone()));
        assert_eq!(Address::parse("Bob@IM.example.com", &gw()), Ok(bob.clone()));
        assert_eq!(bob.display(&gw()), "bob@im.example.com");
        let dotted = Address::parse("bob.smith", &gw()).expect("valid");
        assert_eq!(dotted.as_user().map(UserId::as_str), Some("bob.smith"));
    }

    #[test]
    fn other_domains_are_remote_with_their_resource() {
        let parsed = Address::parse("carol@xmpp.org/phone", &gw()).expect("valid jid");
        assert_eq!(parsed.display(&gw()), "carol@xmpp.org/phone");
        assert!(parsed.as_user().is_none());
    }

    #[test]
    fn garbage_is_refused() {
        for bad in ["", "a b", "@x.org", "bob@", "x@y/", "BAD USER", "x@-/r", "a<b@x.org"] {
            assert!(Address::parse(bad, &gw()).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn characters_xml_cannot_carry_are_refused_anywhere_in_an_address() {
        for bad in ["aa\u{FFFE}@xmpp.example.org", "carol@xmpp.example.org/ph\u{FFFF}one", "carol@xmpp.example.org/\u{1}"] {
            assert!(Address::parse(bad, &gw()).is_err(), "{bad:?} was accepted");
        }
    }
}
