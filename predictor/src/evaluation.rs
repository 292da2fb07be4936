//! What a classifier scored on held-out samples, from each sample's true
//! class and the probabilities the model gave it: accuracy, macro
//! precision, recall and F1, mean confidence, ROC AUC for two classes, per
//! class metrics and the confusion matrix. Pure: `verify` feeds it.
//!
//! Conventions:
//! - A sample's answer is the class `/predict` answers, picked by the
//!   model's [`Head`] (the top class; for a `binary` model, the positive
//!   class when its probability reaches the threshold); its confidence is
//!   that class's probability.
//! - A sample whose label is not one of the model's classes is an unknown
//!   label: it counts in `samples` (as a wrong answer, lowering accuracy),
//!   in `unknown_labels`, and as a prediction of the class it was given
//!   (lowering that class's precision), but in no class's support and in no
//!   row of the confusion matrix.
//! - A class that was never predicted has precision 0; one with no samples
//!   has recall 0; F1 is 0 when precision and recall are both 0.
//! - Macro means are over the classes that have samples or predictions: a
//!   class with neither says nothing about the model and is left out.
//! - ROC AUC scores the second class's probability, positives being the
//!   samples of the second class (unknown labels left out); ties count half
//!   (ranks averaged). Only for two classes, and absent when either class
//!   has no samples.
//! - Every float is rounded to 6 decimals, so the summary is stable.

use std::collections::BTreeMap;

use hone_crds::contract::metric;
use hone_crds::modelversion::{ClassMetrics, Evaluation};

use crate::head::Head;

/// Most classes a confusion matrix is kept for: past 64 its 64 x 64 counts
/// cannot fit the verify Job's 4 KiB termination message anyway, and a
/// model with 100 000 classes must not cost 10^10 counters.
pub const CONFUSION_MATRIX_MAX_CLASSES: usize = 64;

/// Running counts of an evaluation: [`Tally::add`] each answered sample,
/// then [`Tally::finish`]. Memory is per class, not per sample (except the
/// scores ROC AUC needs for two classes).
#[derive(Debug, Clone)]
pub struct Tally {
    head: Head,
    classes: usize,
    support: Vec<u64>,
    predicted: Vec<u64>,
    correct: Vec<u64>,
    /// Row-major `classes x classes` counts, when small enough to keep.
    confusion: Option<Vec<u64>>,
    samples: u64,
    unknown_labels: u64,
    confidence_sum: f64,
    /// (of the second class, probability of the second class) of each known
    /// sample, two classes only.
    binary_scores: Vec<(bool, f64)>,
}

impl Tally {
    /// An empty tally for a classifier with `classes` classes, answered by its top class.
    pub fn new(classes: usize) -> Self {
        Self::with_head(Head::classification(classes))
    }

    /// An empty tally for a single-label model answered by `head`
    /// (classification or binary: one class per sample).
    pub fn with_head(head: Head) -> Self {
        let classes = head.score_width();
        Self {
            head,
            classes,
            support: vec![0; classes],
            predicted: vec![0; classes],
            correct: vec![0; classes],
            confusion: (classes <= CONFUSION_MATRIX_MAX_CLASSES).then(|| vec![0; classes * classes]),
            samples: 0,
            unknown_labels: 0,
            confidence_sum: 0.0,
            binary_scores: Vec::new(),
        }
    }

    /// Counts one sample: its true class index (`None` when its label is not
    /// one of the model's classes) and the model's class probabilities.
    pub fn add(&mut self, truth: Option<usize>, probabilities: &[f32]) {
        let (answer, confidence) =
            self.head.decide(probabilities).map_or((0, 0.0), |d| (d.class_index, d.confidence));
        self.samples += 1;
        self.confidence_sum += f64::from(confidence);
        if let Some(count) = self.predicted.get_mut(answer) {
            *count += 1;
        }
        let Some(truth) = truth.filter(|&t| t < self.classes) else {
            self.unknown_labels += 1;
            return;
        };
        self.support[truth] += 1;
        if answer == truth {
            self.correct[truth] += 1;
        }
        if let Some(matrix) = &mut self.confusion
            && answer < self.classes
        {
            matrix[truth * self.classes + answer] += 1;
        }
        if self.classes == 2 {
            let second = probabilities.get(1).copied().unwrap_or(0.0);
            self.binary_scores.push((truth == 1, f64::from(second)));
        }
    }

    /// The evaluation, classes named by `class_names` (the card's, in output order).
    pub fn finish(self, class_names: &[String], dataset_digest: &str) -> Evaluation {
        // (precision, recall, f1) of each class, unrounded: the macro means
        // are taken before rounding.
        let scores: Vec<[f64; 3]> = (0..self.classes)
            .map(|c| {
                let precision = ratio(self.correct[c], self.predicted[c]);
                let recall = ratio(self.correct[c], self.support[c]);
                let sum = precision + recall;
                [precision, recall, if sum > 0.0 { 2.0 * precision * recall / sum } else { 0.0 }]
            })
            .collect();
        let seen: Vec<&[f64; 3]> = scores
            .iter()
            .enumerate()
            .filter(|(c, _)| self.support[*c] > 0 || self.predicted[*c] > 0)
            .map(|(_, s)| s)
            .collect();
        let macro_mean = |i: usize| {
            if seen.is_empty() { 0.0 } else { seen.iter().map(|s| s[i]).sum::<f64>() / seen.len() as f64 }
        };
        let per_class = scores
            .iter()
            .enumerate()
            .map(|(c, &[precision, recall, f1])| ClassMetrics {
                class: class_names.get(c).cloned().unwrap_or_default(),
                precision: round6(precision),
                recall: round6(recall),
                f1: round6(f1),
                support: self.support[c],
            })
            .collect();
        let correct: u64 = self.correct.iter().sum();
        let mut metrics = BTreeMap::from([
            (metric::ACCURACY.to_owned(), round6(ratio(correct, self.samples))),
            (metric::MACRO_PRECISION.to_owned(), round6(macro_mean(0))),
            (metric::MACRO_RECALL.to_owned(), round6(macro_mean(1))),
            (metric::MACRO_F1.to_owned(), round6(macro_mean(2))),
            (
                metric::MEAN_CONFIDENCE.to_owned(),
                round6(if self.samples > 0 { self.confidence_sum / self.samples as f64 } else { 0.0 }),
            ),
        ]);
        if self.classes == 2
            && let Some(auc) = roc_auc(self.binary_scores)
        {
            metrics.insert(metric::ROC_AUC.to_owned(), round6(auc));
        }
        let classes = self.classes;
        Evaluation {
            dataset: None,
            dataset_digest: dataset_digest.to_owned(),
            samples: self.samples,
            metrics,
            per_class,
            confusion_matrix: self
                .confusion
                .map(|counts| counts.chunks(classes.max(1)).map(<[u64]>::to_vec).collect()),
            unknown_labels: self.unknown_labels,
            evaluated_at: None,
        }
    }
}

/// The evaluation of `answers` (true class index or `None`, probabilities)
/// for a model whose classes are `class_names`.
pub fn evaluate<'a>(
    class_names: &[String],
    dataset_digest: &str,
    answers: impl IntoIterator<Item = (Option<usize>, &'a [f32])>,
) -> Evaluation {
    let mut tally = Tally::new(class_names.len());
    for (truth, probabilities) in answers {
        tally.add(truth, probabilities);
    }
    tally.finish(class_names, dataset_digest)
}

/// Area under the ROC curve by ranks (Mann-Whitney U), ties averaged;
/// `None` without positives or negatives.
fn roc_auc(mut scores: Vec<(bool, f64)>) -> Option<f64> {
    let positives = scores.iter().filter(|(positive, _)| *positive).count();
    let negatives = scores.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    scores.sort_by(|a, b| a.1.total_cmp(&b.1));
    let mut positive_rank_sum = 0.0;
    let mut start = 0;
    while start < scores.len() {
        let end = start + scores[start..].iter().take_while(|s| s.1 == scores[start].1).count();
        // Ranks start + 1 ..= end share their mean.
        let rank = (start + 1 + end) as f64 / 2.0;
        positive_rank_sum +=
            rank * scores[start..end].iter().filter(|(positive, _)| *positive).count() as f64;
        start = end;
    }
    let (p, n) = (positives as f64, negatives as f64);
    Some((positive_rank_sum - p * (p + 1.0) / 2.0) / (p * n))
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 { 0.0 } else { part as f64 / whole as f64 }
}

/// Rounded to 6 decimals.
pub fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        ["a", "b", "c", "d"].iter().take(n).map(|s| (*s).to_owned()).collect()
    }

    fn run(classes: usize, answers: &[(Option<usize>, Vec<f32>)]) -> Evaluation {
        evaluate(&names(classes), "sha256:data", answers.iter().map(|(t, p)| (*t, p.as_slice())))
    }

    fn m(e: &Evaluation, name: &str) -> f64 {
        e.metrics[name]
    }

    #[test]
    fn a_perfect_model_scores_one_everywhere() {
        let e = run(
            3,
            &[
                (Some(0), vec![0.9, 0.05, 0.05]),
                (Some(1), vec![0.1, 0.7, 0.2]),
                (Some(2), vec![0.0, 0.2, 0.8]),
                (Some(2), vec![0.0, 0.0, 1.0]),
            ],
        );
        for name in [metric::ACCURACY, metric::MACRO_PRECISION, metric::MACRO_RECALL, metric::MACRO_F1] {
            assert_eq!(m(&e, name), 1.0, "{name}");
        }
        assert_eq!(m(&e, metric::MEAN_CONFIDENCE), 0.85);
        assert!(!e.metrics.contains_key(metric::ROC_AUC), "three classes have no AUC");
        assert_eq!(e.confusion_matrix, Some(vec![vec![1, 0, 0], vec![0, 1, 0], vec![0, 0, 2]]));
        assert_eq!(e.per_class.iter().map(|c| c.support).collect::<Vec<_>>(), vec![1, 1, 2]);
        assert_eq!(e.per_class[2].class, "c");
        assert_eq!((e.samples, e.unknown_labels, e.dataset_digest.as_str()), (4, 0, "sha256:data"));
    }

    #[test]
    fn an_always_wrong_model_scores_zero() {
        let e = run(2, &[(Some(0), vec![0.2, 0.8]), (Some(1), vec![0.6, 0.4]), (Some(1), vec![0.9, 0.1])]);
        for name in [metric::ACCURACY, metric::MACRO_PRECISION, metric::MACRO_RECALL, metric::MACRO_F1] {
            assert_eq!(m(&e, name), 0.0, "{name}");
        }
        assert_eq!(m(&e, metric::ROC_AUC), 0.0);
        assert_eq!(m(&e, metric::MEAN_CONFIDENCE), 0.766667);
        assert_eq!(e.confusion_matrix, Some(vec![vec![0, 1], vec![2, 0]]));
    }

    #[test]
    fn a_model_with_two_classes_swapped_is_right_only_on_the_third() {
        let e = run(
            3,
            &[(Some(0), vec![0.1, 0.8, 0.1]), (Some(1), vec![0.8, 0.1, 0.1]), (Some(2), vec![0.1, 0.1, 0.8])],
        );
        assert_eq!(m(&e, metric::ACCURACY), 0.333333);
        assert_eq!(m(&e, metric::MACRO_PRECISION), 0.333333);
        assert_eq!(m(&e, metric::MACRO_F1), 0.333333);
        assert_eq!((e.per_class[0].precision, e.per_class[0].recall, e.per_class[0].f1), (0.0, 0.0, 0.0));
        assert_eq!((e.per_class[2].precision, e.per_class[2].recall, e.per_class[2].f1), (1.0, 1.0, 1.0));
        assert_eq!(e.confusion_matrix, Some(vec![vec![0, 1, 0], vec![1, 0, 0], vec![0, 0, 1]]));
    }

    #[test]
    fn macro_means_leave_out_classes_with_neither_samples_nor_predictions() {
        // Class c has no samples and is never predicted; class b is never predicted.
        let e = run(3, &[(Some(0), vec![0.9, 0.1, 0.0]), (Some(1), vec![0.6, 0.4, 0.0])]);
        assert_eq!(m(&e, metric::ACCURACY), 0.5);
        assert_eq!(e.per_class[0].precision, 0.5);
        assert_eq!(e.per_class[0].f1, 0.666667);
        assert_eq!(e.per_class[1].precision, 0.0, "a class never predicted has precision 0");
        assert_eq!(m(&e, metric::MACRO_PRECISION), 0.25);
        assert_eq!(m(&e, metric::MACRO_RECALL), 0.5);
        assert_eq!(m(&e, metric::MACRO_F1), 0.333333);
        assert_eq!(e.per_class.len(), 3, "every class is listed");
    }

    #[test]
    fn binary_auc_ranks_scores_and_averages_ties() {
        // Positives (class b) score 0.8 and 0.4, negatives 0.4 and 0.2: of the
        // four positive-negative pairs three are ordered and one tied: 3.5 / 4.
        let e = run(
            2,
            &[
                (Some(1), vec![0.2, 0.8]),
                (Some(1), vec![0.6, 0.4]),
                (Some(0), vec![0.6, 0.4]),
                (Some(0), vec![0.8, 0.2]),
            ],
        );
        assert_eq!(m(&e, metric::ROC_AUC), 0.875);
        assert_eq!(m(&e, metric::ACCURACY), 0.75);
        let all_tied = run(2, &[(Some(1), vec![0.5, 0.5]), (Some(0), vec![0.5, 0.5])]);
        assert_eq!(m(&all_tied, metric::ROC_AUC), 0.5);
    }

    #[test]
    fn auc_is_absent_when_a_class_has_no_samples() {
        let e = run(2, &[(Some(1), vec![0.2, 0.8]), (Some(1), vec![0.3, 0.7]), (None, vec![0.9, 0.1])]);
        assert!(!e.metrics.contains_key(metric::ROC_AUC), "{:?}", e.metrics);
        assert_eq!(m(&e, metric::ACCURACY), 0.666667);
    }

    #[test]
    fn unknown_labels_count_as_wrong_answers_outside_every_class() {
        let e = run(2, &[(Some(0), vec![0.9, 0.1]), (None, vec![0.9, 0.1]), (Some(1), vec![0.1, 0.9])]);
        assert_eq!((e.samples, e.unknown_labels), (3, 1));
        assert_eq!(m(&e, metric::ACCURACY), 0.666667);
        assert_eq!(e.per_class[0].support, 1);
        assert_eq!(e.per_class[0].precision, 0.5, "the unknown sample was answered a");
        assert_eq!(e.confusion_matrix, Some(vec![vec![1, 0], vec![0, 1]]));
        assert_eq!(m(&e, metric::ROC_AUC), 1.0);
    }

    #[test]
    fn many_classes_keep_per_class_metrics_but_no_matrix() {
        let classes: Vec<String> = (0..CONFUSION_MATRIX_MAX_CLASSES + 1).map(|c| c.to_string()).collect();
        let mut probabilities = vec![0.0; classes.len()];
        probabilities[3] = 1.0;
        let e = evaluate(&classes, "d", [(Some(3), probabilities.as_slice())]);
        assert_eq!(e.confusion_matrix, None);
        assert_eq!(e.per_class.len(), classes.len());
        assert_eq!(m(&e, metric::MACRO_F1), 1.0);
    }

    #[test]
    fn floats_are_rounded_to_six_decimals() {
        assert_eq!(round6(1.0 / 3.0), 0.333333);
        assert_eq!(round6(2.0 / 3.0), 0.666667);
        assert_eq!(round6(f64::from(0.9f32)), 0.9);
    }
}
