//! Leader election among the controller's replicas, for the one job only one of them may do:
//! driving canaries (two drivers would each move the weights once per interval). Serving
//! proxies needs no leader; every replica does it.
//!
//! The protocol is client-go's, on a `coordination.k8s.io/v1` Lease: the holder renews
//! `renewTime` every [`RETRY`]; another replica takes the Lease over once its record (holder and
//! renew time) has not changed for `leaseDurationSeconds` *as that replica observed it* (its
//! own clock, so clock skew between nodes does not matter); every write carries the
//! `resourceVersion` it read, so of two replicas racing for it, one gets 409 and stays a
//! follower. A leader that cannot renew for [`RENEW_DEADLINE`] steps down before another can
//! take over.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;
use tokio::sync::watch;

/// The Lease's name, in the controller's namespace.
pub(crate) const LEASE_NAME: &str = "mesh-controller-canary";
/// How long a Lease not renewed stays held (client-go's default).
const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How long a leader may fail to renew before it steps down: shorter than [`LEASE_DURATION`],
/// so it stops before another replica may start.
const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// How often to renew, or to try to acquire.
const RETRY: Duration = Duration::from_secs(2);

/// Runs the election for `holder` on the Lease `LEASE_NAME` in `api`'s namespace; the
/// receiver says whether this replica leads now.
pub(crate) fn elect(api: Api<Lease>, holder: String) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut election = Election {
            api,
            holder,
            observed: None,
            renewed: None,
        };
        loop {
            let leads = election.round().await;
            tx.send_if_modified(|now| {
                let changed = *now != leads;
                if changed {
                    tracing::info!(holder = %election.holder, leads, "canary leadership changed");
                }
                *now = leads;
                changed
            });
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(RETRY).await;
        }
    });
    rx
}

/// This replica's view of the Lease.
struct Election {
    api: Api<Lease>,
    holder: String,
    /// The record last read (holder, renew time) and when it was first seen as it is.
    observed: Option<(Record, Instant)>,
    /// When this replica last renewed successfully, while it leads.
    renewed: Option<Instant>,
}

type Record = (Option<String>, Option<MicroTime>);

/// What a round decided to write.
enum Write {
    /// No Lease yet.
    Create,
    /// Renew ours, or take over one whose holder stopped renewing.
    Replace(Box<Lease>),
}

impl Election {
    /// One round: read, then renew, take over or leave alone. Whether this replica leads.
    async fn round(&mut self) -> bool {
        let write = match self.api.get_opt(LEASE_NAME).await {
            Ok(None) => Write::Create,
            Ok(Some(lease)) => match self.decide(lease) {
                Some(write) => write,
                None => return false,
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the canary leader Lease");
                return self.still_within_deadline();
            }
        };
        let result = match write {
            Write::Create => {
                self.api
                    .create(&PostParams::default(), &self.new_lease())
                    .await
            }
            Write::Replace(lease) => {
                self.api
                    .replace(LEASE_NAME, &PostParams::default(), &lease)
                    .await
            }
        };
        match result {
            Ok(_) => {
                self.renewed = Some(Instant::now());
                true
            }
            // Another replica wrote first: it leads.
            Err(kube::Error::Api(e)) if e.code == 409 => {
                self.renewed = None;
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot write the canary leader Lease");
                self.still_within_deadline()
            }
        }
    }

    /// The write this round makes to `lease`, or `None` to follow.
    fn decide(&mut self, mut lease: Lease) -> Option<Write> {
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let record = (spec.holder_identity.clone(), spec.renew_time.clone());
        let now = Instant::now();
        let since = match &self.observed {
            Some((seen, at)) if *seen == record => *at,
            _ => now,
        };
        self.observed = Some((record, since));
        let held_by = spec.holder_identity.as_deref().filter(|h| !h.is_empty());
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(LEASE_DURATION, Duration::from_secs);
        let stamp = Some(MicroTime(Timestamp::now()));
        if held_by == Some(self.holder.as_str()) {
            spec.renew_time = stamp;
            return Some(Write::Replace(Box::new(lease)));
        }
        if held_by.is_some() && now.duration_since(since) < duration {
            self.renewed = None;
            return None;
        }
        spec.holder_identity = Some(self.holder.clone());
        spec.lease_duration_seconds = Some(LEASE_DURATION.as_secs() as i32);
        spec.acquire_time = stamp.clone();
        spec.renew_time = stamp;
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        Some(Write::Replace(Box::new(lease)))
    }

    /// A leader that could not reach the API server keeps leading only until its renew
    /// deadline; a follower stays one.
    fn still_within_deadline(&self) -> bool {
        self.renewed.is_some_and(|at| at.elapsed() < RENEW_DEADLINE)
    }

    fn new_lease(&self) -> Lease {
        let stamp = Some(MicroTime(Timestamp::now()));
        Lease {
            metadata: ObjectMeta {
                name: Some(LEASE_NAME.to_owned()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.holder.clone()),
                lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
                acquire_time: stamp.clone(),
                renew_time: stamp,
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        }
    }
}

/// This replica's name in the Lease: the pod's name (its hostname) and a suffix that differs
/// between restarts of the same pod, as client-go does.
pub(crate) fn holder_identity() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "mesh-controller".to_owned());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{host}_{:08x}", nanos ^ std::process::id())
}
