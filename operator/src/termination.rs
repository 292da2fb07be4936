//! Reading what a Job's pods left behind: their termination messages, parsed
//! as the trainer's [`TerminationSummary`] where they are one.

use hone_crds::contract::TerminationSummary;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStateTerminated, Pod};
use k8s_openapi::jiff::Timestamp;

use crate::labels::{LABEL_JOB_NAME, LABEL_JOB_NAME_LEGACY};

/// Longest piece of a raw (non-JSON) termination message quoted in a status message.
const RAW_MESSAGE_MAX_CHARS: usize = 512;

/// What the newest terminated container of a Job left in its termination message.
#[derive(Clone, Debug, PartialEq)]
// Parsed once per reconcile and dropped; boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum TerminationMessage {
    /// A trainer summary.
    Summary(TerminationSummary),
    /// Text that is not a summary (e.g. the log tail a crash left), shortened.
    Raw(String),
}

/// How a Job ended, read from its conditions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobOutcome {
    /// Not finished yet; `active` pods are running.
    Running {
        /// Pods running now.
        active: i32,
    },
    /// Every completion succeeded.
    Succeeded,
    /// The Job failed for good.
    Failed {
        /// The Job condition's reason, e.g. `BackoffLimitExceeded`, `DeadlineExceeded`.
        reason: String,
        /// The Job condition's message.
        message: String,
    },
}

/// The outcome of `job` from its `Complete` and `Failed` conditions, or
/// `SuccessCriteriaMet`, which the Job controller sets first (its `Complete`
/// follows once every pod has terminated).
pub fn job_outcome(job: &Job) -> JobOutcome {
    let status = job.status.as_ref();
    let conditions = status.and_then(|s| s.conditions.as_deref()).unwrap_or_default();
    let is_true = |type_: &str| conditions.iter().find(|c| c.type_ == type_ && c.status == "True");
    if let Some(failed) = is_true("Failed") {
        return JobOutcome::Failed {
            reason: failed.reason.clone().unwrap_or_else(|| "JobFailed".to_owned()),
            message: failed.message.clone().unwrap_or_default(),
        };
    }
    if is_true("Complete").or_else(|| is_true("SuccessCriteriaMet")).is_some() {
        return JobOutcome::Succeeded;
    }
    JobOutcome::Running { active: status.and_then(|s| s.active).unwrap_or(0) }
}

/// The time `job` finished, from its completion time or its final condition.
pub fn job_finished_at(job: &Job) -> Option<Timestamp> {
    let status = job.status.as_ref()?;
    if let Some(done) = &status.completion_time {
        return Some(done.0);
    }
    status
        .conditions
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|c| (c.type_ == "Failed" || c.type_ == "Complete") && c.status == "True")
        .and_then(|c| c.last_transition_time.as_ref().map(|t| t.0))
}

/// True when `pod` belongs to the Job named `job_name`.
pub fn pod_of_job(pod: &Pod, job_name: &str) -> bool {
    let labels = pod.metadata.labels.as_ref();
    let by_label = labels
        .and_then(|l| l.get(LABEL_JOB_NAME).or_else(|| l.get(LABEL_JOB_NAME_LEGACY)))
        .is_some_and(|name| name == job_name);
    let by_owner = pod
        .metadata
        .owner_references
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|r| r.kind == "Job" && r.name == job_name);
    by_label || by_owner
}

/// The termination message of container `container` in the newest pod of
/// `pods` that has one (current state first, then the last state).
pub fn latest_termination_message(pods: &[&Pod], container: &str) -> Option<TerminationMessage> {
    latest_raw_termination_message(pods, container).map(parse_message)
}

/// Like [`latest_termination_message`], unparsed (for programs other than the trainer).
pub fn latest_raw_termination_message<'a>(pods: &[&'a Pod], container: &str) -> Option<&'a str> {
    pods.iter()
        .filter_map(|pod| terminated_state(pod, container))
        .filter(|t| t.message.as_deref().is_some_and(|m| !m.trim().is_empty()))
        .max_by_key(|t| t.finished_at.as_ref().map(|f| f.0))
        .and_then(|t| t.message.as_deref())
}

fn terminated_state<'a>(pod: &'a Pod, container: &str) -> Option<&'a ContainerStateTerminated> {
    let pod_status = pod.status.as_ref()?;
    let mut statuses =
        pod_status.container_statuses.iter().chain(&pod_status.init_container_statuses).flatten();
    let status = statuses.find(|s| s.name == container)?;
    status
        .state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .or_else(|| status.last_state.as_ref().and_then(|s| s.terminated.as_ref()))
}

/// Parses a termination message: a summary when it is one, otherwise the text, shortened.
pub fn parse_message(message: &str) -> TerminationMessage {
    match serde_json::from_str::<TerminationSummary>(message.trim()) {
        Ok(summary) => TerminationMessage::Summary(summary),
        Err(_) => {
            let trimmed = message.trim();
            let mut raw: String = trimmed.chars().take(RAW_MESSAGE_MAX_CHARS).collect();
            if raw.len() < trimmed.len() {
                raw.push_str("...");
            }
            TerminationMessage::Raw(raw)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{job_with_condition, pod_terminated};

    #[test]
    fn outcome_follows_job_conditions() {
        let running: Job = serde_json::from_value(serde_json::json!({"status": {"active": 1}})).unwrap();
        assert_eq!(job_outcome(&running), JobOutcome::Running { active: 1 });
        assert_eq!(job_outcome(&job_with_condition("Complete", None, None)), JobOutcome::Succeeded);
        assert_eq!(job_outcome(&job_with_condition("SuccessCriteriaMet", None, None)), JobOutcome::Succeeded);
        assert_eq!(
            job_outcome(&job_with_condition("Failed", Some("DeadlineExceeded"), Some("too slow"))),
            JobOutcome::Failed { reason: "DeadlineExceeded".into(), message: "too slow".into() }
        );
    }

    #[test]
    fn newest_message_wins_and_raw_text_is_kept() {
        let old = pod_terminated("j", "inspect", "2024-01-01T00:00:00Z", "old crash");
        let new = pod_terminated(
            "j",
            "inspect",
            "2024-01-01T00:05:00Z",
            r#"{"kind":"error","reason":"InvalidData","message":"bad row"}"#,
        );
        let message = latest_termination_message(&[&old, &new], "inspect").unwrap();
        assert!(
            matches!(message, TerminationMessage::Summary(TerminationSummary::Error(e)) if e.reason == "InvalidData")
        );
        let raw = latest_termination_message(&[&old], "inspect").unwrap();
        assert_eq!(raw, TerminationMessage::Raw("old crash".into()));
        assert_eq!(latest_termination_message(&[&old], "other"), None);
    }

    #[test]
    fn long_raw_messages_are_shortened() {
        let TerminationMessage::Raw(text) = parse_message(&"x".repeat(5000)) else { panic!("not raw") };
        assert_eq!(text.len(), RAW_MESSAGE_MAX_CHARS + 3);
    }

    #[test]
    fn pods_are_matched_to_their_job() {
        let pod = pod_terminated("digits-inspect-1", "inspect", "2024-01-01T00:00:00Z", "x");
        assert!(pod_of_job(&pod, "digits-inspect-1"));
        assert!(!pod_of_job(&pod, "digits-inspect-2"));
    }
}
