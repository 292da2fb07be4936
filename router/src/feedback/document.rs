//! The body of `POST /feedback`: `{"requestId", "label"}`, `{"requestId",
//! "labels": [...]}`, or `{"feedback": [items]}`. Pure.

use hone_crds::router::feedback::MAX_ITEMS;
use serde::Deserialize;

use crate::reject::quote;

/// One feedback item as sent.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ItemDocument {
    request_id: String,
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    labels: Option<Vec<String>>,
}

/// A feedback body: one item inline, or a list of them.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Document {
    #[serde(default)]
    feedback: Option<Vec<ItemDocument>>,
    #[serde(default)]
    request_id: Option<String>,
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    labels: Option<Vec<String>>,
}

/// One claim: the true labels of an answer's samples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The answer's `x-request-id`.
    pub request_id: String,
    /// The true label of each sample, in order.
    pub labels: Vec<String>,
}

impl ItemDocument {
    fn into_item(self, index: usize) -> Result<Item, String> {
        let labels = match (self.label, self.labels) {
            (Some(label), None) => vec![label],
            (None, Some(labels)) => labels,
            _ => return Err(format!("item {index} needs exactly one of \"label\" and \"labels\"")),
        };
        Ok(Item { request_id: self.request_id, labels })
    }
}

/// The items of a feedback body, or why it is malformed (never quoting more
/// than a short piece of it).
pub fn parse(body: &[u8]) -> Result<Vec<Item>, String> {
    let document: Document = serde_json::from_slice(body).map_err(|e| {
        format!(
            "not a feedback document (line {}, column {}): {}",
            e.line(),
            e.column(),
            quote(e.to_string().as_bytes())
        )
    })?;
    let items = match document {
        Document { feedback: Some(items), request_id: None, label: None, labels: None } => items,
        Document { feedback: None, request_id: Some(request_id), label, labels } => {
            vec![ItemDocument { request_id, label, labels }]
        }
        _ => {
            return Err(
                "send either \"requestId\" with \"label\" or \"labels\", or \"feedback\": [...]".into()
            );
        }
    };
    if items.len() > MAX_ITEMS {
        return Err(format!("{} items; at most {MAX_ITEMS} per request", items.len()));
    }
    items.into_iter().enumerate().map(|(i, item)| item.into_item(i)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(request_id: String, labels: &[&str]) -> Item {
        Item { request_id, labels: labels.iter().map(|s| (*s).to_owned()).collect() }
    }

    #[test]
    fn the_three_body_forms_parse() {
        assert_eq!(parse(br#"{"requestId": "r", "label": "3"}"#).unwrap(), [item("r".into(), &["3"])]);
        assert_eq!(
            parse(br#"{"requestId": "r", "labels": ["3", "1"]}"#).unwrap(),
            [item("r".into(), &["3", "1"])]
        );
        let many =
            parse(br#"{"feedback": [{"requestId": "a", "label": "1"}, {"requestId": "b", "labels": []}]}"#);
        assert_eq!(many.unwrap(), [item("a".into(), &["1"]), item("b".into(), &[])]);
    }

    #[test]
    fn malformed_bodies_are_refused_without_echoing_them() {
        let huge = format!(r#"{{"requestId": 1, "label": "{}"}}"#, "x".repeat(100_000));
        let too_many = format!(
            r#"{{"feedback": [{}]}}"#,
            vec![r#"{"requestId": "a", "label": "1"}"#; MAX_ITEMS + 1].join(",")
        );
        let long_value = format!(r#"{{"requestId": "r", "labels": "{}"}}"#, "y".repeat(100_000));
        for bad in [
            "",
            "not json",
            "[]",
            r#"{"requestId": "r"}"#,
            r#"{"requestId": "r", "label": "1", "labels": ["1"]}"#,
            r#"{"requestId": "r", "label": "1", "extra": true}"#,
            r#"{"feedback": [], "requestId": "r"}"#,
            r#"{"feedback": [{"requestId": "r"}]}"#,
            r#"{"label": "1"}"#,
            &huge,
            &too_many,
            &long_value,
        ] {
            let message = parse(bad.as_bytes()).unwrap_err();
            assert!(message.len() < 300, "{message}");
        }
    }
}
