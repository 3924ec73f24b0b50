//! What a notification says, decided once for every provider by the operator's content policy.

use std::collections::BTreeMap;

use serde::Serialize;
use switchboard_config::PushContent;
use switchboard_gateway::wake::{WakeKind, WakeSummary};
use switchboard_gateway::{Domain, UserId};

/// Long texts are cut: providers cap payloads at 4 KiB, and a lock screen shows a line or two.
const MAX_TEXT_CHARS: usize = 200;

/// A provider-neutral notification: what waits for `user` since she was last online.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    pub user: UserId,
    pub kind: WakeKind,
    /// Wakes since she was last online (unread messages and requests): the badge.
    pub count: u64,
    pub title: String,
    /// Empty when the policy shows nothing but a title.
    pub body: String,
    /// Custom keys for the app (FCM `data`, APNs custom keys, Baidu `custom_content`): all strings.
    pub data: BTreeMap<&'static str, String>,
}

/// `{"title", "body"}`, without an empty body: FCM's `notification` and APNs' `alert`.
/// Borrowed and serialised straight into the request body: no JSON tree per notification.
#[derive(Serialize)]
pub struct Shown<'a> {
    title: &'a str,
    #[serde(skip_serializing_if = "is_empty")]
    body: &'a str,
}

fn is_empty(text: &&str) -> bool {
    text.is_empty()
}

/// The `aps` dictionary of an iOS notification, sent directly or through FCM.
#[derive(Serialize)]
pub struct Aps<'a> {
    alert: Shown<'a>,
    badge: u64,
    sound: &'static str,
}

impl Notification {
    pub fn title_and_body(&self) -> Shown<'_> {
        Shown { title: &self.title, body: &self.body }
    }

    pub fn aps(&self) -> Aps<'_> {
        Aps { alert: self.title_and_body(), badge: self.count, sound: "default" }
    }

    pub fn new(summary: &WakeSummary, content: PushContent, domain: &Domain) -> Self {
        let newest = &summary.newest;
        let count = summary.count.max(1);
        let sender = newest.from.display(domain);
        let tally = tally(count, newest.kind);
        let (title, body) = match content {
            PushContent::Full => {
                let body = match (newest.kind, &newest.text) {
                    (WakeKind::Message, Some(text)) => truncate(text),
                    _ => tally,
                };
                (sender.clone(), body)
            }
            PushContent::Sender => (sender.clone(), tally),
            PushContent::None => (tally, String::new()),
        };
        let mut data = BTreeMap::new();
        data.insert("type", newest.kind.as_str().to_owned());
        data.insert("count", count.to_string());
        data.insert("to", newest.user.to_string());
        data.insert("msg", newest.msg.to_string());
        if content != PushContent::None {
            data.insert("from", sender);
        }
        Self { user: newest.user.clone(), kind: newest.kind, count, title, body, data }
    }
}

fn tally(count: u64, kind: WakeKind) -> String {
    match (count, kind) {
        (1, WakeKind::Subscribe) => "New contact request".to_owned(),
        (1, WakeKind::Message) => "New message".to_owned(),
        (n, _) => format!("{n} new messages"),
    }
}

fn truncate(text: &str) -> String {
    match text.char_indices().nth(MAX_TEXT_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use switchboard_gateway::wake::{Wake, WakeSeq};
    use switchboard_gateway::{Address, MessageId, Timestamp};

    use super::*;

    fn summary(count: u64, text: &str) -> WakeSummary {
        let user = UserId::parse("alice").expect("valid");
        WakeSummary {
            count,
            newest_seq: WakeSeq(count as i64),
            newest: Wake {
                user,
                from: Address::user(UserId::parse("bob").expect("valid")),
                kind: WakeKind::Message,
                text: Some(text.to_owned()),
                msg: MessageId::from_string("01M"),
                at: Timestamp(0),
            },
        }
    }

    #[test]
    fn the_content_policy_decides_what_leaves_the_gateway() {
        let domain = Domain::new("im.example.com");
        let full = Notification::new(&summary(1, "lunch?"), PushContent::Full, &domain);
        assert_eq!((full.title.as_str(), full.body.as_str()), ("bob@im.example.com", "lunch?"));

        let sender = Notification::new(&summary(3, "secret plans"), PushContent::Sender, &domain);
        assert_eq!((sender.title.as_str(), sender.body.as_str()), ("bob@im.example.com", "3 new messages"));
        assert!(!format!("{sender:?}").contains("secret"));

        let none = Notification::new(&summary(2, "secret plans"), PushContent::None, &domain);
        assert_eq!((none.title.as_str(), none.body.as_str()), ("2 new messages", ""));
        assert!(!format!("{none:?}").contains("secret") && !format!("{none:?}").contains("bob"));
        assert_eq!(none.data.get("count").map(String::as_str), Some("2"));
    }

    #[test]
    fn long_texts_are_cut_on_a_character_boundary() {
        let text = "é".repeat(500);
        let full = Notification::new(&summary(1, &text), PushContent::Full, &Domain::new("d"));
        assert_eq!(full.body.chars().count(), MAX_TEXT_CHARS + 1);
        assert!(full.body.ends_with('…'));
    }
}
