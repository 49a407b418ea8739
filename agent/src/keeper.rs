//! Keeps this host's claim alive in the background while its instance is out of service after
//! a reboot, however long the way back takes (a new version whose API fails, an ECS agent that
//! reconnects late, ECS itself down).
//!
//! The claim is read first, before any other ECS call after boot (the agent waits up to a
//! minute for the ECS agent to answer first, while over half a TTL is left), and renewed then
//! unless the host gives its slot back at once with over half a TTL left; then whenever half of
//! its life is left. The keeper and the work it covers run in one task; a mutex around every claim write
//! lets the work stop the keeper and know that no renewal is still in flight before it removes
//! the claim (a renewal landing after the removal would bring the claim back).

use std::time::Duration;

use tokio::sync::Mutex;

use crate::clock::{Clock, WallTime};
use crate::cluster::retry::with_retry;
use crate::cluster::{ClusterStore, InstanceInfo};
use crate::lease::{Claim, ClaimPhase, Held, LeaseClient, LeaseError};

/// The shortest pause between renewal attempts, so a failing store is not hammered.
const MIN_PAUSE: Duration = Duration::from_secs(1);

struct Kept {
    /// The claim as last written; `None` once it is lost (the drained marker then keeps the slot).
    held: Option<Held>,
    /// Set by [`ClaimKeeper::stop`]: no write after it.
    stopped: bool,
}

/// Renews one claim until stopped.
pub struct ClaimKeeper<'a, S, K> {
    lease: LeaseClient<'a, S, K>,
    ttl: Duration,
    margin: Duration,
    state: Mutex<Kept>,
}

impl<'a, S: ClusterStore, K: Clock> ClaimKeeper<'a, S, K> {
    /// A keeper for the claim with `token` (not yet confirmed: see [`Self::first_renewal`]).
    pub fn new(lease: LeaseClient<'a, S, K>, ttl: Duration, margin: Duration) -> Self {
        ClaimKeeper { lease, ttl, margin, state: Mutex::new(Kept { held: None, stopped: false }) }
    }

    /// Reads our instance and renews the claim with `token` as `Verifying`; also returns the
    /// instance as read. `false` when the claim is gone, replaced or lapsed (nothing to keep);
    /// `Err` when ECS could not be reached (call again). A host that `returns_at_once` (no bake,
    /// no checks to wait for) leaves a claim read with over half a TTL to run as it is: a write
    /// would only say "verifying" for the second before the claim is removed, and the claim
    /// already outlives a fresh renewal's schedule (the keeper renews it when half a TTL is left).
    pub async fn first_renewal(&self, token: &str, returns_at_once: bool) -> Result<(bool, InstanceInfo), LeaseError> {
        let mut st = self.state.lock().await;
        let l = &self.lease;
        let me = with_retry(l.clock, l.jitter, &l.retry, "DescribeContainerInstances", || l.store.describe_self()).await?;
        let claim = match me.attributes.get(&l.names.lease).map(|v| Claim::parse(v)) {
            Some(Ok(c)) if c.token == token => c,
            Some(Ok(_)) => {
                tracing::warn!("our claim was replaced while the host was down; the drained marker keeps the slot");
                return Ok((false, me));
            }
            _ => {
                tracing::warn!("our claim is gone after the reboot; the drained marker keeps the slot");
                return Ok((false, me));
            }
        };
        let read = Held { claim, own_draining: None };
        if returns_at_once && self.outlives_half_a_ttl(&me, &read) {
            tracing::info!(expires = %WallTime::from_secs(read.claim.expires_at), "claim read after boot with over half a TTL left; not rewritten");
            st.held = Some(read);
            return Ok((true, me));
        }
        match l.renew_seen(&me.attributes, &read, ClaimPhase::Verifying, self.ttl, self.margin, &[]).await {
            Ok(h) => {
                tracing::info!(expires = %WallTime::from_secs(h.claim.expires_at), "claim renewed first thing after boot");
                st.held = Some(h);
                Ok((true, me))
            }
            Err(LeaseError::Lost(why)) => {
                tracing::warn!(reason = %why, "claim lapsed while the host was down; the drained marker keeps the slot");
                Ok((false, me))
            }
            Err(e) => Err(e),
        }
    }

    /// Whether `read` is still ours, in time, with more than half a TTL left: the state a
    /// renewal leaves, so the keeper's schedule covers it from here.
    fn outlives_half_a_ttl(&self, me: &InstanceInfo, read: &Held) -> bool {
        let left = WallTime::from_secs(read.claim.expires_at).since(self.lease.clock.now());
        self.lease.check_own(&me.attributes, read, self.margin).is_ok() && left > self.ttl / 2
    }

    /// Renews whenever half of the claim's life is left, until stopped or the claim is lost;
    /// never returns (run it beside the work it covers).
    pub async fn run(&self) {
        loop {
            let wait = self.until_due().await;
            let Some(wait) = wait else { return std::future::pending().await };
            self.lease.clock.sleep(wait).await;
            self.renew_once().await;
        }
    }

    /// How long until the next renewal is due; `None` when there is nothing to keep.
    async fn until_due(&self) -> Option<Duration> {
        let st = self.state.lock().await;
        if st.stopped {
            return None;
        }
        let h = st.held.as_ref()?;
        let due = WallTime::from_secs(h.claim.expires_at).minus(self.ttl / 2);
        Some(due.since(self.lease.clock.now()).max(MIN_PAUSE))
    }

    async fn renew_once(&self) {
        let mut st = self.state.lock().await;
        let Some(h) = st.held.clone().filter(|_| !st.stopped) else { return };
        match self.lease.renew(&h, ClaimPhase::Verifying, self.ttl, self.margin).await {
            Ok(renewed) => {
                tracing::debug!(expires = %WallTime::from_secs(renewed.claim.expires_at), "claim kept alive");
                st.held = Some(renewed);
            }
            Err(LeaseError::Lost(why)) => {
                tracing::error!(reason = %why, "claim lost while the instance is out of service; the drained marker keeps the slot");
                st.held = None;
            }
            Err(e) => tracing::warn!(error = %e, "cannot renew the claim now; trying again"),
        }
    }

    /// Stops the keeper once no renewal is in flight; returns the claim as last written.
    pub async fn stop(&self) -> Option<Held> {
        let mut st = self.state.lock().await;
        st.stopped = true;
        st.held.clone()
    }
}
