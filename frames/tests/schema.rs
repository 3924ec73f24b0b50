//! Keeps docs/schema/frames.schema.json and the frame code in step: the same `type`s in both
//! directions, client examples that the parser accepts, and gateway frames that use exactly the
//! fields the schema lists.

use std::collections::BTreeSet;

use serde_json::Value;
use switchboard_frames::{ErrorCode, ServerFrame, parse_client_frame};
use switchboard_gateway::{ChatState, MessageKind, ReceiptStatus, Show};

const SCHEMA: &str = include_str!("../../docs/schema/frames.schema.json");
const MAX_FRAME_BYTES: usize = 65_536;

fn schema() -> Value {
    serde_json::from_str(SCHEMA).expect("frames.schema.json is valid JSON")
}

/// Follows a local `$ref` (`#/$defs/…`) once; anything else is returned as is.
fn resolve<'a>(schema: &'a Value, node: &'a Value) -> &'a Value {
    match node.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let pointer = reference.strip_prefix('#').expect("only local references");
            schema.pointer(pointer).unwrap_or_else(|| panic!("dangling $ref {reference}"))
        }
        None => node,
    }
}

/// The alternatives of `$defs/<name>`'s `oneOf`, each resolved.
fn alternatives<'a>(schema: &'a Value, name: &str) -> Vec<&'a Value> {
    schema["$defs"][name]["oneOf"]
        .as_array()
        .unwrap_or_else(|| panic!("$defs/{name} has no oneOf"))
        .iter()
        .map(|node| resolve(schema, node))
        .collect()
}

fn type_const(frame_schema: &Value) -> &str {
    frame_schema["properties"]["type"]["const"]
        .as_str()
        .unwrap_or_else(|| panic!("no `type` const in {frame_schema}"))
}

fn type_consts(schema: &Value, name: &str) -> BTreeSet<String> {
    let alternatives = alternatives(schema, name);
    let set: BTreeSet<String> = alternatives.iter().map(|a| type_const(a).to_owned()).collect();
    assert_eq!(set.len(), alternatives.len(), "a `type` appears twice under {name}");
    set
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

#[test]
fn the_schema_lists_every_client_type() {
    assert_eq!(
        type_consts(&schema(), "clientFrame"),
        set(&[
            "message",
            "presence",
            "subscribe",
            "subscribed",
            "unsubscribe",
            "unsubscribed",
            "receipt",
            "chatstate",
            "device.register",
            "device.unregister",
            "auth",
        ])
    );
}

#[test]
fn the_schema_lists_every_gateway_type() {
    assert_eq!(
        type_consts(&schema(), "serverFrame"),
        set(&[
            "ready",
            "ack",
            "error",
            "message",
            "presence",
            "subscribe",
            "subscribed",
            "unsubscribe",
            "unsubscribed",
            "receipt",
            "chatstate",
        ])
    );
}

#[test]
fn every_client_example_parses_to_its_type() {
    let schema = schema();
    let mut seen = BTreeSet::new();
    for frame_schema in alternatives(&schema, "clientFrame") {
        let expected = type_const(frame_schema);
        let Some(examples) = frame_schema.get("examples").and_then(Value::as_array) else {
            assert_eq!(expected, "auth", "client type `{expected}` has no examples");
            continue;
        };
        assert!(!examples.is_empty(), "client type `{expected}` has an empty examples array");
        for example in examples {
            assert_eq!(example["type"], expected, "example {example} is filed under `{expected}`");
            let payload = serde_json::to_vec(example).expect("re-encode");
            let frame = parse_client_frame(&payload, MAX_FRAME_BYTES)
                .unwrap_or_else(|e| panic!("example {example} refused: {e:?}"));
            assert_eq!(frame.type_name(), expected, "example {example}");
            seen.insert(expected.to_owned());
        }
    }
    let mut every_client_type = type_consts(&schema, "clientFrame");
    every_client_type.remove("auth");
    assert_eq!(seen, every_client_type, "every client type except auth has an example");
}

#[test]
fn gateway_frames_write_exactly_the_fields_the_schema_lists() {
    let schema = schema();
    let definitions: Vec<&Value> = alternatives(&schema, "serverFrame");
    let id = "01JQ3Z8Y6N5X0M2K7T4V9W1R8C".to_owned();
    let from = "bob@im.example.com".to_owned();
    let to = "alice@im.example.com".to_owned();
    let frames = [
        ServerFrame::Ready { jid: to.clone() },
        ServerFrame::Ack { id: "c1".into(), msg: Some(id.clone()) },
        ServerFrame::Ack { id: "c1".into(), msg: None },
        ServerFrame::error(Some("c1".into()), ErrorCode::NotFound, "no such user"),
        ServerFrame::error(None, ErrorCode::TooLarge, "too large"),
        ServerFrame::Message {
            id: id.clone(),
            from: from.clone(),
            to: to.clone(),
            body: "hi".into(),
            ts: "2026-03-02T09:15:04.512Z".into(),
            thread: Some("t".into()),
            subject: Some("s".into()),
            kind: MessageKind::Normal,
        },
        ServerFrame::Message {
            id: id.clone(),
            from: from.clone(),
            to: to.clone(),
            body: "hi".into(),
            ts: "2026-03-02T09:15:04.512Z".into(),
            thread: None,
            subject: None,
            kind: MessageKind::Chat,
        },
        ServerFrame::Presence { from: from.clone(), show: Show::Away, status: Some("lunch".into()) },
        ServerFrame::Subscribe { id: id.clone(), from: from.clone(), to: to.clone() },
        ServerFrame::Subscribed { id: id.clone(), from: from.clone(), to: to.clone() },
        ServerFrame::Unsubscribe { id: id.clone(), from: from.clone(), to: to.clone() },
        ServerFrame::Unsubscribed { id: id.clone(), from: from.clone(), to: to.clone() },
        ServerFrame::Receipt {
            id: id.clone(),
            from: from.clone(),
            to: to.clone(),
            of: id.clone(),
            status: ReceiptStatus::Displayed,
        },
        ServerFrame::ChatState { from, to, state: ChatState::Composing },
    ];
    for frame in &frames {
        let json: Value = serde_json::from_str(&frame.to_json()).expect("gateway frames are JSON");
        let object = json.as_object().expect("gateway frames are objects");
        let definition = definitions
            .iter()
            .find(|d| type_const(d) == frame.type_name())
            .unwrap_or_else(|| panic!("no schema for gateway frame `{}`", frame.type_name()));
        let properties = definition["properties"].as_object().expect("properties");
        for key in object.keys() {
            assert!(properties.contains_key(key), "`{key}` of {json} is not in the schema");
        }
        for key in definition["required"].as_array().expect("required") {
            let key = key.as_str().expect("required names are strings");
            assert!(object.contains_key(key), "{json} lacks required `{key}`");
        }
        for (key, value) in object {
            let property = resolve(&schema, &properties[key]);
            if let Some(constant) = property.get("const") {
                assert_eq!(value, constant, "`{key}` of {json}");
            }
            if let Some(allowed) = property.get("enum").and_then(Value::as_array) {
                assert!(allowed.contains(value), "`{key}` of {json} is not one of {allowed:?}");
            }
        }
    }
}
