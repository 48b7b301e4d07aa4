//! The ingest API's event type, and parsing and validation of `POST /events` bodies.

use serde::{Deserialize, Serialize};

/// Largest accepted `user_id` and `stat`, in characters.
pub const MAX_ID_CHARS: usize = 64;
/// Most events accepted in one request.
pub const MAX_EVENTS_PER_REQUEST: usize = 1000;

/// One stat increment: add `value` to `user_id`'s `stat`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The user the stat belongs to (1 to 64 characters).
    pub user_id: String,
    /// The stat's name, e.g. `kills` (1 to 64 characters).
    pub stat: String,
    /// The amount to add (may be negative).
    pub value: i64,
}

/// Why a `POST /events` body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// The body is not JSON of the expected shape.
    #[error("invalid JSON: {0}")]
    Json(String),
    /// The array holds more than [`MAX_EVENTS_PER_REQUEST`] events.
    #[error("too many events in one request: {count} (at most {MAX_EVENTS_PER_REQUEST})")]
    TooMany {
        /// How many events the array held.
        count: usize,
    },
    /// A field failed validation.
    #[error("{}{field} must be 1 to {MAX_ID_CHARS} characters, got {len}", at(*.index))]
    InvalidField {
        /// Position of the event in the array, `None` for a single-object body.
        index: Option<usize>,
        /// The offending field.
        field: &'static str,
        /// Its length in characters.
        len: usize,
    },
}

impl EventError {
    /// A short, fixed label for metrics (`invalid_json`, `too_many`, `invalid_field`).
    pub fn label(&self) -> &'static str {
        match self {
            Self::Json(_) => "invalid_json",
            Self::TooMany { .. } => "too_many",
            Self::InvalidField { .. } => "invalid_field",
        }
    }
}

fn at(index: Option<usize>) -> String {
    match index {
        Some(i) => format!("event {i}: "),
        None => String::new(),
    }
}

/// Parses a body holding one JSON event or a JSON array of events, and validates it.
pub fn parse_events(body: &[u8]) -> Result<Vec<Event>, EventError> {
    let first = body
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    let json_err = |e: serde_json::Error| EventError::Json(e.to_string());
    if first == Some(&b'[') {
        let events: Vec<Event> = serde_json::from_slice(body).map_err(json_err)?;
        if events.len() > MAX_EVENTS_PER_REQUEST {
            return Err(EventError::TooMany {
                count: events.len(),
            });
        }
        for (i, event) in events.iter().enumerate() {
            validate(event, Some(i))?;
        }
        Ok(events)
    } else {
        let event: Event = serde_json::from_slice(body).map_err(json_err)?;
        validate(&event, None)?;
        Ok(vec![event])
    }
}

/// Checks that `id` is an acceptable `user_id` or `stat`; returns its length in
/// characters as the error otherwise.
pub fn check_id(id: &str) -> Result<(), usize> {
    let len = id.chars().count();
    if (1..=MAX_ID_CHARS).contains(&len) {
        Ok(())
    } else {
        Err(len)
    }
}

fn validate(event: &Event, index: Option<usize>) -> Result<(), EventError> {
    for (field, value) in [("user_id", &event.user_id), ("stat", &event.stat)] {
        check_id(value).map_err(|len| EventError::InvalidField { index, field, len })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_and_array() {
        let one = parse_events(br#" {"user_id":"u1","stat":"kills","value":3}"#).unwrap();
        assert_eq!(
            one,
            vec![Event {
                user_id: "u1".into(),
                stat: "kills".into(),
                value: 3
            }]
        );
        let many = parse_events(
            br#"[{"user_id":"u1","stat":"kills","value":3},{"user_id":"u2","stat":"d","value":-1}]"#,
        )
        .unwrap();
        assert_eq!(many.len(), 2);
        assert!(parse_events(b"[]").unwrap().is_empty());
    }

    #[test]
    fn rejects_bad_input() {
        assert!(matches!(parse_events(b""), Err(EventError::Json(_))));
        assert!(matches!(parse_events(b"{"), Err(EventError::Json(_))));
        assert!(matches!(
            parse_events(br#"{"user_id":"u","stat":"s","value":1.5}"#),
            Err(EventError::Json(_))
        ));
        assert!(matches!(
            parse_events(br#"{"user_id":"u","stat":"s"}"#),
            Err(EventError::Json(_))
        ));
        let err = parse_events(br#"[{"user_id":"u","stat":"","value":1}]"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "event 0: stat must be 1 to 64 characters, got 0"
        );
        let long = "é".repeat(65);
        let body = format!(r#"{{"user_id":"{long}","stat":"s","value":1}}"#);
        let err = parse_events(body.as_bytes()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "user_id must be 1 to 64 characters, got 65"
        );
        let ok = format!(r#"{{"user_id":"{}","stat":"s","value":1}}"#, "é".repeat(64));
        assert!(parse_events(ok.as_bytes()).is_ok());
    }

    #[test]
    fn too_many() {
        let event = r#"{"user_id":"u","stat":"s","value":1}"#;
        let body = |n: usize| format!("[{}]", vec![event; n].join(","));
        assert_eq!(parse_events(body(1000).as_bytes()).unwrap().len(), 1000);
        assert_eq!(
            parse_events(body(1001).as_bytes()),
            Err(EventError::TooMany { count: 1001 })
        );
    }
}
