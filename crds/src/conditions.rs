//! Condition helpers shared by every controller.
//!
//! Conditions follow `metav1.Condition`: a list keyed by `type`, where
//! `lastTransitionTime` moves only when `status` flips. Keeping that rule in
//! one place is what lets an unchanged world produce no status patch.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The three values a condition's `status` takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// Not known yet.
    Unknown,
}

impl ConditionStatus {
    /// The wire form: `True`, `False` or `Unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }
}

impl From<bool> for ConditionStatus {
    fn from(value: bool) -> Self {
        if value { Self::True } else { Self::False }
    }
}

/// What a controller wants a condition to say, without a timestamp.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredCondition {
    /// Condition type, e.g. `Ready`.
    pub type_: String,
    /// Whether it holds.
    pub status: ConditionStatus,
    /// One CamelCase word a program can switch on.
    pub reason: String,
    /// A sentence a person can act on.
    pub message: String,
    /// The object's `metadata.generation` this was computed from.
    pub observed_generation: Option<i64>,
}

impl DesiredCondition {
    /// A desired condition; `reason` must be CamelCase, `message` human text.
    pub fn new(
        type_: impl Into<String>,
        status: impl Into<ConditionStatus>,
        reason: impl Into<String>,
        message: impl Into<String>,
        observed_generation: Option<i64>,
    ) -> Self {
        Self {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
            observed_generation,
        }
    }
}

/// Sets `desired` in `conditions`, keeping `lastTransitionTime` unless the
/// status flips (or the condition is new), in which case it becomes `now`.
/// Returns true when anything in the list changed.
pub fn set_condition(conditions: &mut Vec<Condition>, desired: DesiredCondition, now: &Time) -> bool {
    let status = desired.status.as_str();
    match conditions.iter_mut().find(|c| c.type_ == desired.type_) {
        Some(existing) => {
            let flipped = existing.status != status;
            let changed = flipped
                || existing.reason != desired.reason
                || existing.message != desired.message
                || existing.observed_generation != desired.observed_generation;
            if flipped {
                existing.status = status.to_owned();
                existing.last_transition_time = now.clone();
            }
            existing.reason = desired.reason;
            existing.message = desired.message;
            existing.observed_generation = desired.observed_generation;
            changed
        }
        None => {
            conditions.push(Condition {
                type_: desired.type_,
                status: status.to_owned(),
                reason: desired.reason,
                message: desired.message,
                observed_generation: desired.observed_generation,
                last_transition_time: now.clone(),
            });
            true
        }
    }
}

/// Sets every condition in `desired`; true when any changed.
pub fn set_conditions(
    conditions: &mut Vec<Condition>,
    desired: impl IntoIterator<Item = DesiredCondition>,
    now: &Time,
) -> bool {
    desired.into_iter().fold(false, |changed, d| set_condition(conditions, d, now) | changed)
}

/// The condition of type `type_`, if present.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// True when the condition of type `type_` is present with status `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find_condition(conditions, type_).is_some_and(|c| c.status == ConditionStatus::True.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap())
    }

    fn ready(status: bool, reason: &str, message: &str, generation: i64) -> DesiredCondition {
        DesiredCondition::new("Ready", status, reason, message, Some(generation))
    }

    #[test]
    fn new_condition_is_added_with_now() {
        let mut conditions = Vec::new();
        assert!(set_condition(&mut conditions, ready(false, "Pending", "waiting", 1), &at(10)));
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].status, "False");
        assert_eq!(conditions[0].last_transition_time, at(10));
    }

    #[test]
    fn unchanged_condition_reports_no_change_and_keeps_time() {
        let mut conditions = Vec::new();
        set_condition(&mut conditions, ready(true, "Verified", "ok", 1), &at(10));
        assert!(!set_condition(&mut conditions, ready(true, "Verified", "ok", 1), &at(20)));
        assert_eq!(conditions[0].last_transition_time, at(10));
    }

    #[test]
    fn reason_change_without_flip_keeps_transition_time() {
        let mut conditions = Vec::new();
        set_condition(&mut conditions, ready(false, "Pending", "waiting", 1), &at(10));
        assert!(set_condition(&mut conditions, ready(false, "Verifying", "job running", 2), &at(20)));
        assert_eq!(conditions[0].reason, "Verifying");
        assert_eq!(conditions[0].observed_generation, Some(2));
        assert_eq!(conditions[0].last_transition_time, at(10));
    }

    #[test]
    fn status_flip_moves_transition_time() {
        let mut conditions = Vec::new();
        set_condition(&mut conditions, ready(false, "Pending", "waiting", 1), &at(10));
        assert!(set_condition(&mut conditions, ready(true, "Verified", "ok", 1), &at(30)));
        assert_eq!(conditions[0].status, "True");
        assert_eq!(conditions[0].last_transition_time, at(30));
        assert!(is_true(&conditions, "Ready"));
    }

    #[test]
    fn conditions_are_keyed_by_type() {
        let mut conditions = Vec::new();
        let desired = [
            DesiredCondition::new("Ready", false, "Training", "epoch 1", Some(1)),
            DesiredCondition::new("Running", true, "PodRunning", "epoch 1", Some(1)),
        ];
        assert!(set_conditions(&mut conditions, desired.clone(), &at(1)));
        assert!(!set_conditions(&mut conditions, desired, &at(2)));
        assert_eq!(conditions.len(), 2);
        assert!(is_true(&conditions, "Running"));
        assert!(!is_true(&conditions, "Ready"));
        assert!(find_condition(&conditions, "Missing").is_none());
    }
}
