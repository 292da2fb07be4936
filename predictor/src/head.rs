//! What a model's raw outputs mean (`signature.task`): how a row of
//! outputs becomes scores (probabilities or numbers) and an answer. Every
//! route, the metrics, `verify` and the evaluation go through one [`Head`],
//! so a binary model is answered by its threshold everywhere.
//!
//! | task             | model output | scores                     | answer                          |
//! |------------------|--------------|----------------------------|---------------------------------|
//! | `classification` | one per class| softmax                    | the top class                   |
//! | `binary`         | one          | `[1 - p, p]`, p = sigmoid  | `classes[1]` when p >= threshold|
//! | `multilabel`     | one per class| sigmoid each               | every class >= threshold        |
//! | `regression`     | one per name | the outputs themselves     | the numbers                     |

use hone_crds::modelversion::{OutputKind, Signature, Task};

/// How one model's outputs are read.
#[derive(Debug, Clone, PartialEq)]
pub struct Head {
    task: Task,
    /// The model answers probabilities already (`signature.output`).
    probabilities: bool,
    threshold: f32,
    outputs: usize,
    scores: usize,
}

/// The answer a head gives for one sample of a classifier (every task but
/// `regression`).
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The answered class (multilabel: the most probable one).
    pub class_index: usize,
    /// Its probability.
    pub confidence: f32,
    /// Multilabel: every class at or above the threshold, in class order.
    pub positives: Vec<usize>,
}

impl Head {
    /// The head of a card's (or a spec's) signature.
    pub fn new(signature: &Signature) -> Self {
        let outputs = signature.output_width();
        let scores = if signature.task == Task::Binary { 2 } else { outputs };
        Self {
            task: signature.task,
            probabilities: signature.output == OutputKind::Probabilities,
            threshold: signature.threshold_or_default() as f32,
            outputs,
            scores,
        }
    }

    /// A `classification` head over `classes` classes.
    pub fn classification(classes: usize) -> Self {
        Self {
            task: Task::Classification,
            probabilities: false,
            threshold: 0.5,
            outputs: classes,
            scores: classes,
        }
    }

    /// The task.
    pub fn task(&self) -> Task {
        self.task
    }

    /// The threshold of `binary` and `multilabel` answers.
    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    /// Values per sample the model returns.
    pub fn outputs(&self) -> usize {
        self.outputs
    }

    /// Values per sample after the head: a probability per class (binary:
    /// both classes), or the numbers.
    pub fn score_width(&self) -> usize {
        self.scores
    }

    /// Whether the answers are classes (every task but `regression`).
    pub fn is_classifier(&self) -> bool {
        self.task != Task::Regression
    }

    /// The scores of `raw` (whole rows of [`Self::outputs`] values).
    pub fn scores(&self, raw: &[f32]) -> Vec<f32> {
        let probability = |x: f32| if self.probabilities { x } else { sigmoid(x) };
        match self.task {
            Task::Classification if self.probabilities => raw.to_vec(),
            Task::Classification => softmax_rows(raw, self.outputs),
            Task::Binary => raw
                .iter()
                .flat_map(|&x| {
                    let p = probability(x);
                    [1.0 - p, p]
                })
                .collect(),
            Task::Multilabel => raw.iter().map(|&x| probability(x)).collect(),
            Task::Regression => raw.to_vec(),
        }
    }

    /// The answer for one row of scores; `None` for `regression`.
    pub fn decide(&self, scores: &[f32]) -> Option<Decision> {
        match self.task {
            Task::Classification => {
                let (class_index, confidence) = top_class(scores);
                Some(Decision { class_index, confidence, positives: vec![class_index] })
            }
            Task::Binary => {
                let p = scores.get(1).copied().unwrap_or(0.0);
                let class_index = usize::from(p >= self.threshold);
                let confidence = scores.get(class_index).copied().unwrap_or(0.0);
                Some(Decision { class_index, confidence, positives: vec![class_index] })
            }
            Task::Multilabel => {
                let (class_index, confidence) = top_class(scores);
                let positives = (0..scores.len()).filter(|&i| scores[i] >= self.threshold).collect();
                Some(Decision { class_index, confidence, positives })
            }
            Task::Regression => None,
        }
    }
}

/// The logistic function; 0 and 1 at the extremes, never NaN for a finite input.
pub fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// Softmax of each `width`-wide row.
pub fn softmax_rows(logits: &[f32], width: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(logits.len());
    for row in logits.chunks(width.max(1)) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let start = out.len();
        out.extend(row.iter().map(|&x| (x - max).exp()));
        let sum: f32 = out[start..].iter().sum();
        for p in &mut out[start..] {
            *p = if sum > 0.0 { *p / sum } else { 0.0 };
        }
    }
    out
}

/// The top class of one row of probabilities and its probability (the last
/// of equal tops, as `max_by` picks); `(0, 0.0)` for an empty row.
pub fn top_class(row: &[f32]) -> (usize, f32) {
    row.iter().copied().enumerate().max_by(|a, b| a.1.total_cmp(&b.1)).unwrap_or((0, 0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(task: Task, classes: &[&str], threshold: Option<f64>) -> Head {
        Head::new(&Signature {
            input_shape: vec![4],
            classes: classes.iter().map(|c| (*c).to_owned()).collect(),
            task,
            threshold,
            ..Signature::default()
        })
    }

    #[test]
    fn classification_is_softmax_and_the_top_class() {
        let h = head(Task::Classification, &["a", "b", "c"], None);
        assert_eq!((h.outputs(), h.score_width()), (3, 3));
        let s = h.scores(&[0.0, 0.0, 1000.0, 1.0, 1.0, 1.0]);
        assert_eq!(&s[..3], &[0.0, 0.0, 1.0]);
        let d = h.decide(&s[..3]).unwrap();
        assert_eq!((d.class_index, d.confidence, d.positives), (2, 1.0, vec![2]));
        assert!((s[3..].iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn binary_is_one_logit_read_against_the_threshold() {
        let h = head(Task::Binary, &["cat", "dog"], None);
        assert_eq!((h.outputs(), h.score_width()), (1, 2));
        let s = h.scores(&[0.0, 2.0, -2.0]);
        assert_eq!(s.len(), 6);
        assert_eq!(&s[..2], &[0.5, 0.5]);
        // p == threshold answers the positive class.
        assert_eq!(h.decide(&s[..2]).unwrap().class_index, 1);
        let dog = h.decide(&s[2..4]).unwrap();
        assert_eq!(dog.class_index, 1);
        assert!((dog.confidence - 0.880_797).abs() < 1e-5, "{dog:?}");
        let cat = h.decide(&s[4..]).unwrap();
        assert_eq!(cat.class_index, 0);
        assert!((cat.confidence - 0.880_797).abs() < 1e-5, "{cat:?}");
        // A stricter threshold turns a p = 0.88 into the negative class.
        let strict = head(Task::Binary, &["cat", "dog"], Some(0.9));
        let d = strict.decide(&strict.scores(&[2.0])).unwrap();
        assert_eq!(d.class_index, 0);
        assert!((d.confidence - 0.119_203).abs() < 1e-5, "{d:?}");
    }

    #[test]
    fn multilabel_answers_every_class_over_the_threshold() {
        let h = head(Task::Multilabel, &["a", "b", "c"], Some(0.6));
        let s = h.scores(&[3.0, 0.0, 1.0]);
        assert!((s[1] - 0.5).abs() < 1e-7);
        let d = h.decide(&s).unwrap();
        assert_eq!((d.class_index, d.positives), (0, vec![0, 2]));
        let none = h.decide(&h.scores(&[-3.0, -3.0, -3.0])).unwrap();
        assert!(none.positives.is_empty());
    }

    #[test]
    fn regression_passes_the_numbers_through() {
        let unnamed = head(Task::Regression, &[], None);
        assert_eq!((unnamed.outputs(), unnamed.score_width()), (1, 1));
        assert!(!unnamed.is_classifier());
        assert_eq!(unnamed.scores(&[-3.5, 1e9]), vec![-3.5, 1e9]);
        assert_eq!(unnamed.decide(&[1.0]), None);
        let named = head(Task::Regression, &["price", "rent"], None);
        assert_eq!(named.outputs(), 2);
    }

    #[test]
    fn probabilities_are_used_as_they_are() {
        let probabilities = |task, classes: &[&str]| {
            Head::new(&Signature {
                input_shape: vec![4],
                classes: classes.iter().map(|c| (*c).to_owned()).collect(),
                task,
                output: OutputKind::Probabilities,
                ..Signature::default()
            })
        };
        let softmax = probabilities(Task::Classification, &["a", "b", "c"]);
        assert_eq!(softmax.scores(&[0.2, 0.7, 0.1]), vec![0.2, 0.7, 0.1]);
        assert_eq!(softmax.decide(&[0.2, 0.7, 0.1]).unwrap().class_index, 1);
        let binary = probabilities(Task::Binary, &["no", "yes"]);
        assert_eq!(binary.scores(&[0.75]), vec![0.25, 0.75]);
        let multilabel = probabilities(Task::Multilabel, &["a", "b"]);
        assert_eq!(multilabel.decide(&multilabel.scores(&[0.6, 0.4])).unwrap().positives, vec![0]);
    }

    #[test]
    fn top_class_is_the_largest_probability() {
        assert_eq!(top_class(&[0.2, 0.7, 0.1]), (1, 0.7));
        assert_eq!(top_class(&[]), (0, 0.0));
    }

    #[test]
    fn softmax_rows_sum_to_one() {
        let p = softmax_rows(&[0.0, 0.0, 1000.0, 0.0], 2);
        assert_eq!(p, vec![0.5, 0.5, 1.0, 0.0]);
    }

    #[test]
    fn sigmoid_is_stable_at_the_extremes() {
        assert_eq!(sigmoid(0.0), 0.5);
        assert_eq!(sigmoid(1000.0), 1.0);
        assert_eq!(sigmoid(-1000.0), 0.0);
        assert!((sigmoid(-2.0) + sigmoid(2.0) - 1.0).abs() < 1e-7);
    }
}
