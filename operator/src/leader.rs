//! Leader election on a `coordination.k8s.io` Lease: of several replicas only
//! the holder runs the controllers; the others wait (ready, serving metrics)
//! and take over when the holder stops renewing.
//!
//! A replica that loses the lease stops its controllers and exits non-zero so
//! its pod restarts as a candidate: it never reconciles without holding it.

use std::time::Duration;

use clap::Args;
use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Name of the Lease the replicas share.
pub const DEFAULT_LEASE_NAME: &str = "hone-operator";

/// Leader-election flags of `hone-operator run`.
#[derive(Args, Debug, Clone)]
pub struct LeaderArgs {
    /// Run the controllers only while holding the Lease (for more than one replica).
    #[arg(long = "leader-election", env = "HONE_LEADER_ELECTION", default_value_t = false,
          action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub enabled: bool,
    /// Name of the Lease.
    #[arg(long = "leader-election-lease", env = "HONE_LEADER_ELECTION_LEASE", default_value = DEFAULT_LEASE_NAME)]
    pub lease: String,
    /// Namespace of the Lease (the operator's own namespace).
    #[arg(long = "leader-election-namespace", env = "POD_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// This replica's identity (the pod name); random when unset.
    #[arg(long = "leader-election-identity", env = "POD_NAME")]
    pub identity: Option<String>,
    /// Seconds a holder's claim stays valid without renewal.
    #[arg(long = "leader-election-lease-seconds", env = "HONE_LEADER_ELECTION_LEASE_SECONDS", default_value_t = 15,
          value_parser = clap::value_parser!(u64).range(3..=300))]
    pub lease_seconds: u64,
}

/// Why leader election could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Lease could not be read or created.
    #[error("leader election on Lease {namespace}/{name}: {source}")]
    Lease {
        /// Namespace of the Lease.
        namespace: String,
        /// Name of the Lease.
        name: String,
        /// The error.
        #[source]
        source: LeaseManagerError,
    },
}

/// A running election: `is_leader` follows this replica's state.
pub struct Election {
    /// True while this replica holds the Lease.
    pub is_leader: watch::Receiver<bool>,
    task: JoinHandle<Result<kube_lease_manager::LeaseManager, LeaseManagerError>>,
}

/// Renewal margin: renew this long before the claim expires (tolerated clock skew).
fn grace_seconds(lease_seconds: u64) -> u64 {
    (lease_seconds / 3).max(1)
}

/// Starts campaigning for the Lease in the background.
pub async fn start(client: Client, args: &LeaderArgs) -> Result<Election, Error> {
    let mut builder = LeaseManagerBuilder::new(client, args.lease.clone())
        .with_namespace(args.namespace.clone())
        .with_duration(args.lease_seconds)
        .with_grace(grace_seconds(args.lease_seconds));
    if let Some(identity) = &args.identity {
        builder = builder.with_identity(identity.clone());
    }
    let manager = builder.build().await.map_err(|source| Error::Lease {
        namespace: args.namespace.clone(),
        name: args.lease.clone(),
        source,
    })?;
    let (is_leader, task) = manager.watch().await;
    Ok(Election { is_leader, task })
}

impl Election {
    /// Resolves once this replica holds the Lease (true), or when the election ended (false).
    pub async fn acquired(&mut self) -> bool {
        self.is_leader.wait_for(|leader| *leader).await.is_ok()
    }

    /// Resolves when this replica, having held the Lease, no longer does.
    pub async fn lost(mut receiver: watch::Receiver<bool>) {
        // An ended election (sender gone) counts as a loss as well.
        if receiver.wait_for(|leader| *leader).await.is_ok() {
            let _ = receiver.wait_for(|leader| !*leader).await;
        }
    }

    /// Gives the Lease up (so a standby takes over at once) and waits, at most `timeout`.
    pub async fn release(self, timeout: Duration) {
        drop(self.is_leader);
        match tokio::time::timeout(timeout, self.task).await {
            Ok(Ok(Ok(_))) => tracing::info!("released the leader Lease"),
            Ok(Ok(Err(error))) => tracing::warn!(%error, "releasing the leader Lease failed"),
            Ok(Err(join)) => tracing::warn!(%join, "the leader-election task failed"),
            Err(_) => tracing::warn!("releasing the leader Lease timed out; it expires by itself"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct TestCli {
        #[command(flatten)]
        leader: LeaderArgs,
    }

    #[test]
    fn flags_default_to_off_and_accept_a_bare_switch() {
        let off = TestCli::try_parse_from(["x"]).unwrap_or_else(|e| panic!("{e}"));
        assert!(!off.leader.enabled);
        assert_eq!(off.leader.lease, DEFAULT_LEASE_NAME);
        let on =
            TestCli::try_parse_from(["x", "--leader-election", "--leader-election-namespace", "hone-system"])
                .unwrap_or_else(|e| panic!("{e}"));
        assert!(on.leader.enabled);
        assert_eq!(on.leader.namespace, "hone-system");
        let explicit =
            TestCli::try_parse_from(["x", "--leader-election", "false"]).unwrap_or_else(|e| panic!("{e}"));
        assert!(!explicit.leader.enabled);
        assert!(TestCli::try_parse_from(["x", "--leader-election-lease-seconds", "1"]).is_err());
    }

    #[test]
    fn renewal_leaves_a_margin() {
        assert_eq!(grace_seconds(15), 5);
        assert_eq!(grace_seconds(3), 1);
    }
}
