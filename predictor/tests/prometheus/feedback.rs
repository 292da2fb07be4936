//! Labels for the router's answers, sent back through its `POST /feedback`.

use serde_json::{Value, json};

use crate::FEEDBACK;
use crate::harness::value_of;
use crate::stack::{Answer, Stack};

impl Stack {
    /// Sends labels for answers of the stable and the canary ([`FEEDBACK`])
    /// in two POST /feedback: a tenth of each first and, once Prometheus
    /// scraped the series those created, the rest. Both parts have the same
    /// share of correct labels, so the accuracy of what Prometheus saw rise
    /// is the accuracy sent. Refused items come along in both.
    pub async fn send_feedback(&self, answers: &[Answer], classes: &[String]) {
        let (mut first, mut rest) = (Vec::new(), Vec::new());
        for (variant, correct, incorrect) in FEEDBACK {
            let (f, r) = feedback_items(answers, variant, correct, incorrect, classes);
            first.extend(f);
            rest.extend(r);
        }
        let accepted = first.len();
        first.push(json!({"requestId": "not-an-id-the-router-signed", "label": classes[0]}));
        let answer = self.post_feedback(&first).await;
        assert_eq!(answer["accepted"], accepted, "{answer}");
        assert_eq!(rejected_reasons(&answer), ["bad_id"], "{answer}");
        self.prometheus
            .wait_for("the first feedback scraped", "hone_router_feedback_total", |r| {
                r.len() == 4 && r.iter().map(value_of).sum::<f64>() == accepted as f64
            })
            .await;
        let accepted = rest.len();
        rest.push(first[0].clone());
        let answer = self.post_feedback(&rest).await;
        assert_eq!(answer["accepted"], accepted, "{answer}");
        assert_eq!(rejected_reasons(&answer), ["replayed"], "{answer}");
    }

    /// POSTs `items` to the router's /feedback; the 200 answer.
    async fn post_feedback(&self, items: &[Value]) -> Value {
        let url = format!("{}/feedback", self.router);
        let r = self.client.post(url).json(&json!({"feedback": items})).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }
}

/// Feedback for the first `correct + incorrect` labelled answers of
/// `variant`: `correct` of them labelled with the answered class, the others
/// with another class; split into a tenth of each and the rest.
fn feedback_items(
    answers: &[Answer],
    variant: &str,
    correct: usize,
    incorrect: usize,
    classes: &[String],
) -> (Vec<Value>, Vec<Value>) {
    let mut labelled = answers.iter().filter(|a| a.variant == variant).filter_map(|a| a.labelled.as_ref());
    let (mut first, mut rest) = (Vec::new(), Vec::new());
    for (count, right) in [(correct, true), (incorrect, false)] {
        for i in 0..count {
            let (id, answered) = labelled.next().unwrap_or_else(|| panic!("too few answers of {variant}"));
            let label = if right { answered } else { classes.iter().find(|c| *c != answered).unwrap() };
            let item = json!({"requestId": id, "label": label});
            if i < count / 10 { first.push(item) } else { rest.push(item) }
        }
    }
    (first, rest)
}

/// The reasons of the refused items of a /feedback answer.
fn rejected_reasons(answer: &Value) -> Vec<&str> {
    answer["rejected"].as_array().unwrap().iter().map(|r| r["reason"].as_str().unwrap()).collect()
}
