//! Leader election on a `coordination.k8s.io` Lease, so that of several replicas only one
//! patches workloads.
//!
//! kube-lease-manager takes and renews the Lease. Two things are added around it: a watch of the
//! Lease, so a standby notices at once when the leader releases it (the manager alone sleeps
//! until the lease would expire), and a [`LeaseGuard`] that says whether the lease is provably
//! still held, so a leader that cannot renew stops patching before another replica may take over.
//! A leader that stops releases the Lease after its last patch; one that loses it exits and
//! rejoins as a standby.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    /// Seconds a leader holds the lease without renewing it; a standby takes over after that.
    pub duration_seconds: u64,
}

impl LeaseSettings {
    /// The margin by which a leader stops patching before another replica may take the lease:
    /// room for clock skew between nodes and for a patch in flight.
    fn grace(&self) -> Duration {
        Duration::from_secs(self.duration_seconds.div_ceil(3).max(1))
    }

    /// Renewal starts this long before the lease would expire: earlier than the grace, so a
    /// healthy leader renews before its guard runs out.
    fn renew_before(&self) -> Duration {
        Duration::from_secs(self.duration_seconds.div_ceil(2).max(1))
    }
}

/// Whether this replica provably holds the lease now.
#[derive(Clone, Debug, Default)]
pub struct LeaseGuard {
    held_until: Arc<Mutex<Option<Instant>>>,
}

impl LeaseGuard {
    pub fn is_held(&self) -> bool {
        self.held_until
            .lock()
            .expect("lease guard lock")
            .is_some_and(|until| Instant::now() < until)
    }

    fn hold_until(&self, until: Option<Instant>) {
        *self.held_until.lock().expect("lease guard lock") = until;
    }
}

/// The moment until which a lease renewed at `renewed` is ours: another replica may take it at
/// `renewed + duration` by its own clock, so we stop `grace` earlier.
fn held_until(
    renewed: SystemTime,
    duration: Duration,
    grace: Duration,
    now: (SystemTime, Instant),
) -> Option<Instant> {
    let deadline = renewed + duration.checked_sub(grace)?;
    let left = deadline.duration_since(now.0).ok()?;
    Some(now.1 + left)
}

/// Holding the lease.
pub struct Leadership {
    pub guard: LeaseGuard,
    /// Turns true when the lease is lost.
    pub lost: watch::Receiver<bool>,
    release: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Leadership {
    /// Stops patching and releases the Lease, so a standby takes over at once rather than after
    /// the lease duration.
    pub async fn release(self) {
        self.guard.hold_until(None);
        let _ = self.release.send(());
        if tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .is_err()
        {
            warn!("releasing the Lease took too long; a standby takes over when it expires");
        }
    }
}

/// Waits until this replica holds the lease, or until `stop` asks to give up.
pub async fn acquire(
    client: Client,
    settings: &LeaseSettings,
    mut stop: watch::Receiver<bool>,
) -> Result<Option<Leadership>, LeaseManagerError> {
    let mut manager = manager(&client, settings).await?;
    let (lease, lease_watch) = watch_lease(client.clone(), settings);
    info!(lease = %format!("{}/{}", settings.namespace, settings.name), identity = %settings.identity, "standing by for leadership");
    let mut released = lease.clone();
    loop {
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => {
                lease_watch.abort();
                return Ok(None);
            }
            changed = manager.changed() => match changed {
                Ok(true) => break,
                Ok(false) => {}
                Err(problem) => {
                    warn!(error = %problem, "leader election failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            },
            // The manager sleeps until the holder's lease would expire, and keeps what it read
            // of the Lease until then: a new one reads the released Lease and takes it.
            _ = holder_released(&mut released) => match self::manager(&client, settings).await {
                Ok(fresh) => manager = fresh,
                Err(problem) => warn!(error = %problem, "leader election failed; retrying"),
            },
        }
    }
    info!(identity = %settings.identity, "became leader");
    let guard = LeaseGuard::default();
    let duration = Duration::from_secs(settings.duration_seconds);
    guard.hold_until(held_until(
        SystemTime::now(),
        duration,
        settings.grace(),
        (SystemTime::now(), Instant::now()),
    ));
    let (lost_sender, lost) = watch::channel(false);
    let (release, released) = oneshot::channel();
    let task = tokio::spawn(lead(
        manager,
        guard.clone(),
        lease,
        lease_watch,
        settings.clone(),
        lost_sender,
        released,
    ));
    Ok(Some(Leadership {
        guard,
        lost,
        release,
        task,
    }))
}

async fn manager(
    client: &Client,
    settings: &LeaseSettings,
) -> Result<LeaseManager, LeaseManagerError> {
    LeaseManagerBuilder::new(client.clone(), &settings.name)
        .with_namespace(&settings.namespace)
        .with_identity(&settings.identity)
        .with_duration(settings.duration_seconds)
        .with_grace(settings.renew_before().as_secs())
        .build()
        .await
}

/// What the Lease says: who holds it and when they last renewed.
#[derive(Clone, Debug, Default, PartialEq)]
struct LeaseView {
    holder: Option<String>,
    renewed: Option<SystemTime>,
}

fn watch_lease(
    client: Client,
    settings: &LeaseSettings,
) -> (watch::Receiver<LeaseView>, JoinHandle<()>) {
    let api: Api<Lease> = Api::namespaced(client, &settings.namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={}", settings.name));
    let (sender, receiver) = watch::channel(LeaseView::default());
    let task = tokio::spawn(async move {
        let mut leases = watcher(api, config)
            .default_backoff()
            .applied_objects()
            .boxed();
        while let Some(lease) = leases.next().await {
            match lease {
                Ok(lease) => {
                    let spec = lease.spec.unwrap_or_default();
                    let view = LeaseView {
                        holder: spec.holder_identity.filter(|holder| !holder.is_empty()),
                        renewed: spec.renew_time.map(|time| SystemTime::from(time.0)),
                    };
                    sender.send_if_modified(|known| {
                        let modified = *known != view;
                        *known = view;
                        modified
                    });
                }
                Err(problem) => warn!(error = %problem, "watching the Lease failed; retrying"),
            }
        }
    });
    (receiver, task)
}

/// Resolves when the Lease changes to having no holder.
async fn holder_released(lease: &mut watch::Receiver<LeaseView>) {
    loop {
        if lease.changed().await.is_err() {
            return std::future::pending().await;
        }
        if lease.borrow_and_update().holder.is_none() {
            return;
        }
    }
}

/// Keeps the lease renewed and the guard current until asked to release it, or until it is lost.
async fn lead(
    manager: LeaseManager,
    guard: LeaseGuard,
    lease: watch::Receiver<LeaseView>,
    lease_watch: JoinHandle<()>,
    settings: LeaseSettings,
    lost: watch::Sender<bool>,
    mut release: oneshot::Receiver<()>,
) {
    // Renewals are followed through the Lease watch, apart from the manager, so that a renewal
    // in flight is never cancelled by an update of the guard.
    let guarding = tokio::spawn(follow_renewals(guard.clone(), lease, settings.clone()));
    loop {
        tokio::select! {
            _ = &mut release => {
                guarding.abort();
                guard.hold_until(None);
                if let Err(problem) = manager.release().await {
                    warn!(error = %problem, "could not release the Lease; a standby takes over when it expires");
                } else {
                    info!(identity = %settings.identity, "released the Lease");
                }
                break;
            }
            changed = manager.changed() => match changed {
                Ok(true) => {}
                Ok(false) => {
                    guarding.abort();
                    guard.hold_until(None);
                    error!("lost leadership");
                    let _ = lost.send(true);
                    break;
                }
                Err(problem) => {
                    // Without a renewal the guard runs out by itself before the lease expires.
                    warn!(error = %problem, "renewing the Lease failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            },
        }
    }
    lease_watch.abort();
}

/// Moves the guard's deadline with every renewal of ours that the Lease shows.
async fn follow_renewals(
    guard: LeaseGuard,
    mut lease: watch::Receiver<LeaseView>,
    settings: LeaseSettings,
) {
    let duration = Duration::from_secs(settings.duration_seconds);
    // What the Lease said before this replica took it says nothing about this replica.
    lease.borrow_and_update();
    while lease.changed().await.is_ok() {
        let view = lease.borrow_and_update().clone();
        if view.holder.as_deref() != Some(settings.identity.as_str()) {
            guard.hold_until(None);
            continue;
        }
        if let Some(renewed) = view.renewed {
            guard.hold_until(held_until(
                renewed,
                duration,
                settings.grace(),
                (SystemTime::now(), Instant::now()),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_runs_out_a_grace_period_before_the_lease_can_be_taken() {
        let now = (SystemTime::now(), Instant::now());
        let second = Duration::from_secs(1);
        let until = held_until(now.0, 15 * second, 5 * second, now).unwrap();
        assert_eq!(until - now.1, 10 * second);
        // Renewed long ago: already run out.
        assert_eq!(
            held_until(now.0 - 20 * second, 15 * second, 5 * second, now),
            None
        );
        // A grace longer than the lease holds nothing.
        assert_eq!(held_until(now.0, second, 5 * second, now), None);
    }

    #[test]
    fn a_guard_holds_only_until_its_deadline() {
        let guard = LeaseGuard::default();
        assert!(!guard.is_held());
        guard.hold_until(Some(Instant::now() + Duration::from_secs(60)));
        assert!(guard.is_held());
        guard.hold_until(Some(Instant::now() - Duration::from_millis(1)));
        assert!(!guard.is_held());
        guard.hold_until(None);
        assert!(!guard.is_held());
    }

    #[test]
    fn renewal_comes_before_the_guard_runs_out() {
        let settings = |duration_seconds| LeaseSettings {
            namespace: "envroll".into(),
            name: "envroll".into(),
            identity: "a".into(),
            duration_seconds,
        };
        assert_eq!(settings(15).grace(), Duration::from_secs(5));
        assert_eq!(settings(15).renew_before(), Duration::from_secs(8));
        assert_eq!(settings(1).grace(), Duration::from_secs(1));
        // A healthy leader renews while its guard still holds.
        for duration in [3, 6, 15, 60] {
            assert!(settings(duration).renew_before() >= settings(duration).grace());
        }
    }
}
