//! `status.history`: the versions each variant served, from when to when,
//! and how each stopped. Pure: the previous status and the rollout plan in,
//! the next history out. `now` lands only in an entry that opens or closes,
//! so an unchanged world writes the same history.
//!
//! Per variant: the version serving its stable share has the one open entry
//! (`Serving`, no `to`). When another version takes over, the open entry
//! closes as `RolledBack` if an abort of the variant names it (a rollback by
//! hand after its promotion), `Replaced` otherwise, and the new version's
//! entry opens. A canary aborted in this reconcile (analysis, progress
//! deadline, by hand) gets a closed `Aborted` entry from its rollout's start.
//! A variant serving nothing keeps its entries as they are.

use std::collections::{BTreeMap, BTreeSet};

use hone_crds::inferenceservice::{
    AbortedRollout, HISTORY_PER_VARIANT, HistoryEntry, HistoryOutcome, InferenceServiceStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::rollout::Plan;

/// The history after `plan`, from `previous` (the status as it is), at `now`.
pub fn next(previous: &InferenceServiceStatus, plan: &Plan, now: &Time) -> Vec<HistoryEntry> {
    let variants: BTreeSet<&str> = plan.variants.iter().map(|v| v.name.as_str()).collect();
    let mut history: Vec<HistoryEntry> =
        previous.history.iter().filter(|e| variants.contains(e.variant.as_str())).cloned().collect();
    let new_aborts: Vec<&AbortedRollout> =
        plan.aborted.iter().filter(|a| !previous.aborted_rollouts.contains(a)).collect();
    for variant in &plan.variants {
        for abort in new_aborts.iter().filter(|a| a.variant == variant.name) {
            let canary = previous
                .rollout
                .as_ref()
                .filter(|r| r.variant == abort.variant && r.to_version == abort.to_version);
            if let Some(rollout) = canary {
                history.push(HistoryEntry {
                    variant: variant.name.clone(),
                    version: abort.to_version.clone(),
                    from: rollout.started_at.clone().unwrap_or_else(|| now.clone()),
                    to: Some(now.clone()),
                    outcome: HistoryOutcome::Aborted,
                });
            }
        }
        let Some(served) = &variant.stable else { continue };
        let mut serving = false;
        for entry in history.iter_mut().filter(|e| e.variant == variant.name && e.to.is_none()) {
            if entry.version == served.name && !serving {
                serving = true;
                continue;
            }
            let rolled_back =
                plan.aborted.iter().any(|a| a.variant == variant.name && a.to_version == entry.version);
            entry.to = Some(now.clone());
            entry.outcome = if rolled_back { HistoryOutcome::RolledBack } else { HistoryOutcome::Replaced };
        }
        if !serving {
            history.push(HistoryEntry {
                variant: variant.name.clone(),
                version: served.name.clone(),
                from: now.clone(),
                to: None,
                outcome: HistoryOutcome::Serving,
            });
        }
    }
    bound(history)
}

/// Keeps, per variant, its open entries and the closed ones that ended last,
/// at most [`HISTORY_PER_VARIANT`] in all, in their order.
pub fn bound(history: Vec<HistoryEntry>) -> Vec<HistoryEntry> {
    let mut room: BTreeMap<&str, usize> = BTreeMap::new();
    for entry in &history {
        let left = room.entry(entry.variant.as_str()).or_insert(HISTORY_PER_VARIANT);
        if entry.to.is_none() {
            *left = left.saturating_sub(1);
        }
    }
    // Closed entries, the last to end first (ties: the later in the list first).
    let mut closed: Vec<(usize, &HistoryEntry)> =
        history.iter().enumerate().filter(|(_, e)| e.to.is_some()).collect();
    closed.sort_by(|(i, a), (j, b)| (&b.to, j).cmp(&(&a.to, i)));
    let mut keep: BTreeSet<usize> =
        history.iter().enumerate().filter(|(_, e)| e.to.is_none()).map(|(index, _)| index).collect();
    for (index, entry) in closed {
        if let Some(left) = room.get_mut(entry.variant.as_str())
            && *left > 0
        {
            *left -= 1;
            keep.insert(index);
        }
    }
    history.iter().enumerate().filter(|(index, _)| keep.contains(index)).map(|(_, e)| e.clone()).collect()
}
