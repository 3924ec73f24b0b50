use switchboard_gateway::UserId;

/// The three topics of a user, under `mqtt.topic_prefix`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TopicKind {
    /// `<prefix>/<user>/out`: frames from the user.
    Out,
    /// `<prefix>/<user>/in`: frames for the user.
    In,
    /// `<prefix>/<user>/presence`: her retained presence and Last Will.
    Presence,
}

#[derive(Clone, Debug)]
pub struct Topics {
    prefix: String,
}

impl Topics {
    pub fn new(prefix: &str) -> Self {
        Self { prefix: prefix.to_owned() }
    }

    pub fn topic(&self, user: &UserId, kind: TopicKind) -> String {
        let suffix = match kind {
            TopicKind::Out => "out",
            TopicKind::In => "in",
            TopicKind::Presence => "presence",
        };
        format!("{}/{}/{suffix}", self.prefix, user)
    }

    /// Whose topic this is and which one; `None` for anything outside the scheme. The user part
    /// must already be in canonical (lower-case) form: `im/Alice/out` is nobody's topic.
    pub fn parse(&self, topic: &str) -> Option<(UserId, TopicKind)> {
        let rest = topic.strip_prefix(&self.prefix)?.strip_prefix('/')?;
        let (user, suffix) = rest.split_once('/')?;
        let kind = match suffix {
            "out" => TopicKind::Out,
            "in" => TopicKind::In,
            "presence" => TopicKind::Presence,
            _ => return None,
        };
        let parsed = UserId::parse(user).ok()?;
        (parsed.as_str() == user).then_some((parsed, kind))
    }

    /// Which of `user`'s own topics this is, if it is one of hers; the same answer as
    /// [`Topics::parse`] followed by a comparison of the owner, without building a [`UserId`].
    pub fn own(&self, topic: &str, user: &UserId) -> Option<TopicKind> {
        let rest = topic.strip_prefix(&self.prefix)?.strip_prefix('/')?.strip_prefix(user.as_str())?;
        match rest {
            "/out" => Some(TopicKind::Out),
            "/in" => Some(TopicKind::In),
            "/presence" => Some(TopicKind::Presence),
            _ => None,
        }
    }

    /// Filters the gateway subscribes to on an external broker.
    pub fn all(&self, kind: TopicKind) -> String {
        let suffix = match kind {
            TopicKind::Out => "out",
            TopicKind::In => "in",
            TopicKind::Presence => "presence",
        };
        format!("{}/+/{suffix}", self.prefix)
    }
}

/// A PUBLISH topic name as MQTT 3.1.1 allows it: at least one character (§4.7.3), no wildcard
/// (§3.3.2.1) and no U+0000 (§1.5.3). Anything else is a protocol violation.
pub fn valid_name(topic: &str) -> bool {
    !topic.is_empty() && !topic.contains(['+', '#', '\0'])
}

/// A SUBSCRIBE topic filter as MQTT 3.1.1 allows it: at least one character, `#` alone and last,
/// `+` a whole level (§4.7.1), no U+0000 (§1.5.3). Anything else is a protocol violation.
pub fn valid_filter(filter: &str) -> bool {
    !filter.contains('\0') && rumqttc::mqttbytes::valid_filter(filter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_topics_are_recognised_like_parse_does() {
        let topics = Topics::new("im");
        let alice = UserId::parse("alice").expect("valid");
        for topic in ["im/alice/out", "im/alice/in", "im/alice/presence", "im/alice/outx", "im/alicex/out", "im/Alice/out", "im/alice", "imx/alice/out", "im/bob/out"] {
            let expected = topics.parse(topic).filter(|(owner, _)| *owner == alice).map(|(_, kind)| kind);
            assert_eq!(topics.own(topic, &alice), expected, "{topic}");
        }
    }

    #[test]
    fn topics_round_trip_and_strangers_are_nobody() {
        let topics = Topics::new("im");
        let alice = UserId::parse("alice").expect("valid");
        for kind in [TopicKind::Out, TopicKind::In, TopicKind::Presence] {
            let topic = topics.topic(&alice, kind.clone());
            assert_eq!(topics.parse(&topic), Some((alice.clone(), kind)));
        }
        for stranger in ["im/alice", "im/alice/out/x", "other/alice/out", "im/Alice/out", "im/+/out", "im//out", "im/alice/secret"] {
            assert_eq!(topics.parse(stranger), None, "{stranger}");
        }
        assert_eq!(topics.all(TopicKind::Out), "im/+/out");
    }

    #[test]
    fn wildcards_empty_topics_and_nul_break_the_protocol() {
        for name in ["im/alice/out", "$SYS/x", "im//out", "/"] {
            assert!(valid_name(name), "{name}");
        }
        for name in ["", "im/alice/+", "im/alice/#", "#", "+", "im/al+ice/out", "im/alice/out\0"] {
            assert!(!valid_name(name), "{name:?}");
        }
        for filter in ["im/alice/in", "#", "+/+/+", "im/#", "im/+/in", "$SYS/#", "im/alice/in/#"] {
            assert!(valid_filter(filter), "{filter}");
        }
        for filter in ["", "im/#/in", "im/al+/in", "im/alice#", "im/alice/in\0"] {
            assert!(!valid_filter(filter), "{filter:?}");
        }
    }
}
