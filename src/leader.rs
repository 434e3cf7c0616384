//! Leader election on a `coordination.k8s.io` Lease, so that of several replicas only one
//! patches workloads. A replica that loses the lease stops and exits; its restart rejoins as a
//! standby, which is simpler and safer than trying to resume half-way.

use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tracing::{error, info};

#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    /// Seconds a leader holds the lease without renewing it; a standby takes over after that.
    pub duration_seconds: u64,
}

/// Holding the lease: dropping it releases the lease for the next replica.
pub struct Leadership {
    _held: watch::Receiver<bool>,
    pub lost: watch::Receiver<bool>,
}

/// Waits until this replica holds the lease, or until `stop` asks to give up.
pub async fn acquire(
    client: Client,
    settings: &LeaseSettings,
    mut stop: watch::Receiver<bool>,
) -> Result<Option<Leadership>, LeaseManagerError> {
    let manager = LeaseManagerBuilder::new(client, &settings.name)
        .with_namespace(&settings.namespace)
        .with_identity(&settings.identity)
        .with_duration(settings.duration_seconds)
        .with_grace(settings.duration_seconds.div_ceil(3).max(1))
        .build()
        .await?;
    let (mut leader, _task) = manager.watch().await;
    info!(lease = %format!("{}/{}", settings.namespace, settings.name), identity = %settings.identity, "standing by for leadership");
    tokio::select! {
        acquired = leader.wait_for(|is_leader| *is_leader) => {
            if acquired.is_err() {
                error!("leader election stopped before this replica became leader");
                return Ok(None);
            }
        }
        _ = stop.wait_for(|stop| *stop) => return Ok(None),
    }
    info!(identity = %settings.identity, "became leader");
    let (lost_sender, lost) = watch::channel(false);
    let mut watching = leader.clone();
    tokio::spawn(async move {
        // An error means the election task ended, which also ends leadership.
        let _ = watching.wait_for(|is_leader| !*is_leader).await;
        let _ = lost_sender.send(true);
    });
    Ok(Some(Leadership {
        _held: leader,
        lost,
    }))
}
