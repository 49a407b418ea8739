//! The at-most-N lease on ECS container-instance attributes.
//!
//! ECS has no conditional write, so the limit comes from the protocol, not the store: each host
//! writes a claim only on its own instance, waits a settle time at least as long as the store's
//! staleness, then counts the live claims of the others and proceeds only if fewer than N remain.
//! If N+1 hosts ever held a slot, the last of them to count would have seen the other N (each was
//! written at least the settle time before that count), so it cannot hold one. A tie-break that
//! lets a host proceed while it sees N others (say, the oldest claim wins) is unsafe: two hosts
//! can see each other's claims differently.
//!
//! What the argument needs from the holder, and this module provides: the claim never expires
//! while the holder acts (it renews, and writes an expiry covering the reboot before rebooting);
//! a holder that finds its claim expired or replaced stops before any further side effect; and a
//! claim that cannot be parsed counts as live.

use std::fmt;
use std::time::Duration;

use crate::backoff::{Backoff, Jitter};
use crate::clock::{Clock, WallTime};
use crate::cluster::retry::{with_retry, RetryPolicy};
use crate::cluster::{valid_attribute_value, Attribute, ClusterError, ClusterStore};

/// The claim format version written first in every value.
const FORMAT: &str = "v1";

/// The names of the attributes the agent reads and writes, all under one prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    /// The claim (`<prefix>.lease`).
    pub lease: String,
    /// The drained-by-this-agent marker (`<prefix>.drained`).
    pub drained: String,
    /// The status for operators (`<prefix>.status`).
    pub status: String,
    /// Set by an operator to keep this host out of updates (`<prefix>.opt-out`).
    pub opt_out: String,
    /// Set by an operator to make this host skip its wait once (`<prefix>.update-now`).
    pub update_now: String,
    /// The version whose update failed on this instance (`<prefix>.failed`).
    pub failed: String,
    /// The version this instance last updated to and returned to service on (`<prefix>.updated`):
    /// the canary count lists it by value, one call whatever the fleet's size.
    pub updated: String,
    /// Cluster tag that stops new lease attempts fleet-wide (`<prefix>.paused`).
    pub paused_tag: String,
    /// Cluster tag that overrides N fleet-wide (`<prefix>.max-concurrent`).
    pub max_concurrent_tag: String,
    /// Simulations only: replaces [`LeaseParams::rule`], so a fleet simulation can show that an
    /// unsafe rule fails. `None` (as [`Names::new`] sets it) everywhere else.
    #[doc(hidden)]
    pub rule_override: Option<LeaseRule>,
    /// Negative controls: safety fixes a simulation switches off to show its checker catches
    /// the hole each one closes. Only in builds with the `negative-controls` feature.
    #[cfg(feature = "negative-controls")]
    pub unsafe_off: UnsafeOff,
}

/// How a drained marker's value starts when someone else (an operator, ECS scale-in) had set
/// the instance DRAINING before its agent's drain: the marker still keeps the slot for as long as
/// the update lasts, whatever becomes of the claim or the instance's status, but its agent leaves
/// the instance's status to whoever drained it.
pub const DRAINED_BY_OTHERS: &str = "by-other:";

/// Whether a drained marker's `value` says someone else had drained the instance before its agent.
pub fn drained_by_others(value: &str) -> bool {
    value.starts_with(DRAINED_BY_OTHERS)
}

/// Safety fixes that a simulation may switch off, one at a time, to show that its checker
/// catches the hole each closes. Only builds with the `negative-controls` feature can set them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnsafeOff {
    /// Count live claims only, not instances out of service (drained marker, DRAINING).
    pub out_of_service_count: bool,
    /// Accept a renewal whatever time its write landed.
    pub late_renewal_check: bool,
    /// After boot, renew once after the version check and keep nothing alive meanwhile.
    pub claim_keeper: bool,
    /// Undo sets ACTIVE only when one read says DRAINING.
    pub undo_sets_active_always: bool,
    /// Write no drained marker when someone else drained the instance before its agent did.
    pub marker_when_drained_by_others: bool,
    /// Claim on the operator's flags as the round's start read them, however long ago.
    pub opt_out_recheck: bool,
}

impl Names {
    /// The names under `prefix`.
    pub fn new(prefix: &str) -> Names {
        let n = |s: &str| format!("{prefix}.{s}");
        Names {
            lease: n("lease"),
            drained: n("drained"),
            status: n("status"),
            opt_out: n("opt-out"),
            update_now: n("update-now"),
            failed: n("failed"),
            updated: n("updated"),
            paused_tag: n("paused"),
            max_concurrent_tag: n("max-concurrent"),
            rule_override: None,
            #[cfg(feature = "negative-controls")]
            unsafe_off: UnsafeOff::default(),
        }
    }

    /// Whether `attrs` carry a drained marker that says the agent itself set its instance
    /// DRAINING (so the agent, and only it, sets it ACTIVE again). Markers written before
    /// [`DRAINED_BY_OTHERS`] existed all say so.
    pub fn agent_drained(&self, attrs: &std::collections::BTreeMap<String, String>) -> bool {
        attrs.get(&self.drained).is_some_and(|v| !drained_by_others(v))
    }

    /// Whether the fix `pick` selects is switched off (never, outside negative-control builds).
    #[allow(unused_variables)]
    pub fn is_off(&self, pick: fn(&UnsafeOff) -> bool) -> bool {
        #[cfg(feature = "negative-controls")]
        {
            pick(&self.unsafe_off)
        }
        #[cfg(not(feature = "negative-controls"))]
        {
            false
        }
    }
}

/// What the claim's holder is doing; lets operators and waiters read the fleet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimPhase {
    /// Written, not yet confirmed by the count.
    Claiming,
    /// Confirmed; nothing changed yet.
    Held,
    /// Draining the instance.
    Draining,
    /// Rebooting into the new version.
    Rebooting,
    /// Back from the reboot, returning to service.
    Verifying,
}

impl ClaimPhase {
    /// The one-letter code stored in the claim.
    pub fn code(self) -> &'static str {
        match self {
            ClaimPhase::Claiming => "c",
            ClaimPhase::Held => "h",
            ClaimPhase::Draining => "d",
            ClaimPhase::Rebooting => "r",
            ClaimPhase::Verifying => "v",
        }
    }
    /// The word operators read (`claiming`, `held`, `draining`, `rebooting`, `verifying`).
    pub fn name(self) -> &'static str {
        match self {
            ClaimPhase::Claiming => "claiming",
            ClaimPhase::Held => "held",
            ClaimPhase::Draining => "draining",
            ClaimPhase::Rebooting => "rebooting",
            ClaimPhase::Verifying => "verifying",
        }
    }
    fn from_code(s: &str) -> Option<ClaimPhase> {
        Some(match s {
            "c" => ClaimPhase::Claiming,
            "h" => ClaimPhase::Held,
            "d" => ClaimPhase::Draining,
            "r" => ClaimPhase::Rebooting,
            "v" => ClaimPhase::Verifying,
            _ => return None,
        })
    }
}

/// One host's claim, as stored: `v1:<phase>:<claimed-at>:<expires-at>:<token>:<target>`
/// (times in whole seconds since the epoch; fits ECS's value rules).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    /// What the holder is doing.
    pub phase: ClaimPhase,
    /// When the slot was first claimed.
    pub claimed_at: i64,
    /// When the claim lapses unless renewed.
    pub expires_at: i64,
    /// Random per attempt, so a holder recognises its own claim.
    pub token: String,
    /// The version the holder moves to.
    pub target: String,
}

impl Claim {
    /// The attribute value.
    pub fn encode(&self) -> String {
        format!(
            "{FORMAT}:{}:{}:{}:{}:{}",
            self.phase.code(),
            self.claimed_at,
            self.expires_at,
            self.token,
            self.target
        )
    }

    /// Parses a value strictly: anything else is an error (and counts as a live claim).
    pub fn parse(value: &str) -> Result<Claim, String> {
        let parts: Vec<&str> = value.split(':').collect();
        let [format, phase, claimed, expires, token, target] = parts.as_slice() else {
            return Err(format!("expected 6 fields, found {}", parts.len()));
        };
        if *format != FORMAT {
            return Err(format!("unknown format `{format}`"));
        }
        let phase = ClaimPhase::from_code(phase).ok_or_else(|| format!("unknown phase `{phase}`"))?;
        let num = |s: &str, what: &str| s.parse::<i64>().map_err(|_| format!("{what} `{s}` is not a number"));
        let (claimed_at, expires_at) = (num(claimed, "claimed-at")?, num(expires, "expires-at")?);
        if !(4..=32).contains(&token.len()) || !token.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!("bad token `{token}`"));
        }
        if target.is_empty() {
            return Err("empty target".into());
        }
        Ok(Claim { phase, claimed_at, expires_at, token: token.to_string(), target: target.to_string() })
    }

    /// Whether other hosts must still count it at `now`, allowing for clock skew.
    pub fn is_live(&self, now: WallTime, skew: Duration) -> bool {
        WallTime::from_secs(self.expires_at).plus(skew) > now
    }
}

/// Another host's claim as this host reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    /// The instance that wrote it.
    pub instance: String,
    /// The claim, or the raw value that did not parse.
    pub claim: Result<Claim, String>,
}

impl Seen {
    /// Whether it takes a slot at `now`: live claims and unreadable ones do.
    pub fn occupies(&self, now: WallTime, skew: Duration) -> bool {
        match &self.claim {
            Ok(c) => c.is_live(now, skew),
            Err(_) => true,
        }
    }
}

/// The protocol's settings for one attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseParams {
    /// How many hosts may hold a slot at once.
    pub max_concurrent: u32,
    /// Claim lifetime without renewal.
    pub ttl: Duration,
    /// Wait between writing the claim and counting.
    pub settle: Duration,
    /// Allowed clock skew between hosts.
    pub skew: Duration,
    /// Back-off after a lost race.
    pub backoff: Backoff,
    /// The longest sleep between looks while the cluster is full.
    pub wait_poll_max: Duration,
    /// How the count after the settle time decides.
    pub rule: LeaseRule,
    /// Count DRAINING instances that no agent drained as taking a slot.
    pub foreign_draining: bool,
    /// A slot held longer than this (or by an instance out of service without a live claim)
    /// may be held by a host that failed: a look that finds the cluster full then asks `ready`
    /// as well, so a waiter learns of a halt that keeps it waiting. `None`: only before a claim.
    pub stuck_after: Option<Duration>,
}

impl LeaseParams {
    /// What each census reads.
    pub fn scope(&self) -> CensusScope {
        CensusScope { skew: self.skew, foreign_draining: self.foreign_draining }
    }

    /// The longest pause between the fleet-wide gate (tags, failure markers, canary count) and
    /// the census of one look but a host's first (which is spread over the whole settle time):
    /// a quarter of the settle time, at most a second, so looks that coincide across the fleet
    /// do not stack up in one second. Not inside the census: a pause between reading the claims
    /// and writing ours would widen the window in which two hosts both see a free slot (more
    /// lost races, each costing a claim, a count and a withdrawal).
    pub fn pace(&self) -> Duration {
        (self.settle / 4).min(Duration::from_secs(1))
    }

    /// How long before a claim's expiry its holder must have finished writing a renewal, and
    /// must stop acting on it: readers may be `settle` behind the store, and clocks `skew` apart.
    pub fn margin(&self) -> Duration {
        self.settle.saturating_add(self.skew)
    }
}

/// How a claimer decides, after the settle time, whether it holds a slot.
// The hidden variant is a test device, not room for future variants: no `non_exhaustive`.
#[allow(clippy::manual_non_exhaustive)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LeaseRule {
    /// Hold only while fewer than N other live claims are seen: the rule the safety argument
    /// covers, and the only one the configuration can select.
    #[default]
    CountOthers,
    /// UNSAFE, kept so a simulation can show that it fails: hold when our claim is among the N
    /// earliest seen (by claimed-at, then token), even while N or more others are seen. Hosts
    /// that see each other's claims differently (staleness, skewed or same-second claimed-at)
    /// both conclude they are early enough.
    #[doc(hidden)]
    UnsafeLowestClaimWins,
}

impl LeaseRule {
    /// Whether `own` holds one of `n` slots given the other claims `after` shows.
    fn holds(self, own: &Claim, after: &Census, n: u32) -> bool {
        match self {
            LeaseRule::CountOthers => (after.taken() as u32) < n,
            LeaseRule::UnsafeLowestClaimWins => {
                let mine = (own.claimed_at, own.token.as_str());
                let earlier = after
                    .occupied
                    .iter()
                    .filter(|s| s.claim.as_ref().map_or(true, |c| (c.claimed_at, c.token.as_str()) < mine))
                    .count();
                ((earlier + after.out_of_service.len()) as u32) < n
            }
        }
    }
}

/// How many waiters should look around each predicted release: three, whatever N and the
/// fleet's size. Every look costs the same few calls, so the fleet's rate of looks, not a
/// host's, is what must stay flat. Predictions are rough (a slot takes 5-20 min) and the count
/// of competitors is high (it includes hosts already done), so with two a freed slot often sat
/// idle (makespan 1.2-1.9 x the lower bound in the simulator); three keep it at 1.1-1.3 x.
const LOOKS_PER_RELEASE: f64 = 3.0;

/// The longest sleep between looks at the cluster tags while the fleet is paused: an operator
/// who resumes it should not wait for a long sleep to end.
const PAUSED_POLL_MAX: Duration = Duration::from_secs(3600);

/// How many slots a look must leave free for this host to claim on it after holding its claim
/// back behind a fresh one: the claims that could land in those seconds (about as many as the
/// waiters the waiting policy sends to look around each release, [`LOOKS_PER_RELEASE`]). With
/// fewer free, the claims are listed again first, so that a claim on an outdated look does not
/// make it and another both count one too many and withdraw.
const ROOM_TO_CLAIM_ON_A_HELD_LOOK: u32 = 3;

/// What a look's read of the fleet-wide settings (the cluster tags) said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gate {
    /// The N to claim under; `None` while the fleet is paused.
    pub limit: Option<u32>,
    /// The cluster's registered instances, read in the same call; `None` where not read.
    pub registered: Option<u64>,
}

impl Gate {
    /// Open at `n`, with no count of the instances.
    pub fn open(n: u32) -> Gate {
        Gate { limit: Some(n), registered: None }
    }
}

/// What a look before a claim found.
struct Look {
    /// The count it judges by.
    census: Census,
    /// The limit it is judged by.
    limit: u32,
    /// Whether `ready` was asked.
    asked: bool,
    /// Whether the count includes the instances out of service (not only the claims).
    whole: bool,
}

/// What a waiter learnt while the cluster was full.
#[derive(Clone, Debug, Default)]
struct Waiting {
    /// How many other hosts were taken to compete, and when.
    behind: Option<(f64, WallTime)>,
}

impl Waiting {
    /// Takes `fresh` competitors from `now` on. A count taken again (the estimate ran out while
    /// this host still waits: the rollout is slower than N per slot time) is at most a quarter of
    /// the last, as the instance count alone cannot say how many are left: the estimate falls
    /// through the tail of the rollout, and the waiters' looks per release grow with it only by a
    /// bounded factor.
    fn counted(&mut self, fresh: f64, now: WallTime) {
        let count = match self.behind {
            Some((last, _)) => fresh.min(last / 4.0),
            None => fresh,
        };
        self.behind = Some((count, now));
    }

    /// How many still compete: the count less the releases expected since (`n` per slot time).
    fn competing(&self, now: WallTime, slot: Duration, n: u32) -> f64 {
        let Some((counted, at)) = self.behind else { return f64::from(n) };
        let served = now.since(at).as_secs_f64() / slot.as_secs_f64() * f64::from(n);
        (counted - served).max(0.0)
    }

    /// Whether to count again: never counted, or the estimate from a count larger than N has run
    /// out (so that an estimate that ran out too early cannot make every waiter aim at the same
    /// release).
    fn needs_count(&self, now: WallTime, slot: Duration, n: u32) -> bool {
        match self.behind {
            None => true,
            Some((counted, _)) => counted > f64::from(n) && self.competing(now, slot, n) <= f64::from(n),
        }
    }
}

/// How long a slot lasts, judged from the holders: at least the oldest holder's age, and the
/// mean of what each holder's age says (a holder seen at a random instant is half through its
/// slot on average, so twice its age; but one already verifying, such as a canary through its
/// bake, is at the end of it, so its age); and half the claim TTL (before anyone has held long).
fn slot_estimate(claims: &[&Claim], now: WallTime, ttl: Duration) -> Duration {
    // Saturating throughout: claim times are other hosts' writing and may be any i64.
    let ages: Vec<i64> = claims.iter().map(|c| now.as_secs().saturating_sub(c.claimed_at).max(0)).collect();
    let oldest = ages.iter().copied().max().unwrap_or(0);
    let said = claims.iter().zip(&ages).map(|(c, a)| if c.phase == ClaimPhase::Verifying { *a } else { a.saturating_mul(2) });
    let sum = said.fold(0i64, |acc, a| acc.saturating_add(a));
    let mean = if ages.is_empty() { 0 } else { sum / ages.len() as i64 };
    Duration::from_secs(oldest.max(mean).max(0) as u64).max(ttl / 2).max(Duration::from_secs(60))
}

/// When each holder may free its slot, soonest first (never empty): one slot time after it
/// claimed, but no earlier than its phase allows once it has overrun (a verifying host is about
/// to release; a rebooting one needs part of a reboot; others a good part of a drain).
fn release_times(claims: &[&Claim], now: WallTime, slot: Duration) -> Vec<Duration> {
    let mut out: Vec<Duration> = claims
        .iter()
        .map(|c| {
            let floor = match c.phase {
                ClaimPhase::Verifying => Duration::from_secs(15),
                ClaimPhase::Rebooting => slot / 8,
                _ => slot / 4,
            };
            WallTime::from_secs(c.claimed_at).plus(slot).since(now).max(floor)
        })
        .collect();
    out.sort();
    if out.is_empty() {
        out.push(slot / 4);
    }
    out
}

/// How long a look that saw another claim written this second holds its own back: a tenth
/// to four tenths of the settle time (1-4 s by default). Claims come at random instants, and
/// a few now and then in the same second, each a listing and a write at once; held back,
/// they reach ECS a second or more apart. Once per look: a skewed clock's claim looks fresh
/// for longer, and must not hold a host back twice. The claim then goes out on the same
/// look, or on a new listing of the claims when the look left few slots free
/// ([`ROOM_TO_CLAIM_ON_A_HELD_LOOK`]).
fn claim_stagger(settle: Duration, jitter: &Jitter) -> Duration {
    jitter.between(settle / 10, settle * 2 / 5)
}

/// A slot this host holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    /// The claim as last written.
    pub claim: Claim,
    /// Whether the count that confirmed the claim found this host's own instance DRAINING
    /// (`None`: it did not list the DRAINING instances, or this is a renewal).
    pub own_draining: Option<bool>,
}

/// What one look's listing of the claims showed, for the checks made before a claim.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClaimsInView {
    /// Slots the claims take.
    pub taken: u32,
    /// Other hosts' live claims for the same target that their count confirmed (past
    /// `claiming`). Under a canary's limit of one no two can be: two show that it passed.
    pub confirmed_same_target: u32,
}

impl Census {
    /// Other hosts' claims written in the last second or so (their claimed-at within a second
    /// of `now`, or ahead of it), still settling.
    pub fn fresh_claims(&self, now: WallTime) -> usize {
        let fresh = |c: &&Claim| c.phase == ClaimPhase::Claiming && now.as_secs().saturating_sub(c.claimed_at) <= 1;
        self.occupied.iter().filter_map(|s| s.claim.as_ref().ok()).filter(fresh).count()
    }

    /// What this census's claims show to a host moving to `target`.
    pub fn in_view(&self, target: &str) -> ClaimsInView {
        let confirmed = self.occupied.iter().filter_map(|s| s.claim.as_ref().ok()).filter(|c| c.target == target && c.phase != ClaimPhase::Claiming).count();
        ClaimsInView { taken: u32::try_from(self.taken()).unwrap_or(u32::MAX), confirmed_same_target: u32::try_from(confirmed).unwrap_or(u32::MAX) }
    }
}

/// Why the lease could not be taken or kept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    /// ECS failed beyond the retry budget.
    #[error("cluster store: {0}")]
    Store(#[from] ClusterError),
    /// Our claim expired or was replaced: stop, and take a slot again before acting.
    #[error("claim lost: {0}")]
    Lost(String),
    /// The caller's gate said not now (e.g. the maintenance window no longer fits the update).
    #[error("not now: {0}")]
    NotNow(String),
    /// The target version cannot be written into an attribute value.
    #[error("target `{0}` cannot be encoded in an ECS attribute value")]
    Unencodable(String),
}

/// Why an instance without a live claim still takes a slot: it is out of service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutOfService {
    /// It carries an agent's drained marker: drained for an update (by its agent or, before
    /// it, by someone else) and not yet back, whatever its claim says (the agent may be down,
    /// crash-looping or stuck after boot).
    DrainedByAgent {
        /// The claim it still shows, lapsed (or none).
        lapsed_claim: Option<Claim>,
    },
    /// It is DRAINING with no agent's marker: an operator or ECS (managed draining on scale-in)
    /// drained it.
    DrainingByOthers,
}

/// An instance that takes a slot without a live claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Occupant {
    /// Its container instance ARN.
    pub instance: String,
    /// Why.
    pub why: OutOfService,
}

/// What one look at the cluster found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Census {
    /// Other instances' claims that take a slot (live, or unreadable).
    pub occupied: Vec<Seen>,
    /// Other instances without a live claim that take a slot because they are out of service.
    pub out_of_service: Vec<Occupant>,
    /// Other instances' claims that lapsed (and are not out of service).
    pub lapsed: usize,
    /// This host's own claim, if the store shows one.
    pub own: Option<Result<Claim, String>>,
    /// Whether this host's own instance is DRAINING, when the count listed the DRAINING
    /// instances.
    pub own_draining: Option<bool>,
}

impl Census {
    /// Sorts the three listings of one look at the cluster (every claim, every drained marker,
    /// every DRAINING instance) into the instances other than `me` that take a slot at `now`.
    /// The agent's census and the operator's fleet view both count through this, so they agree.
    pub fn from_listings(
        me: &str,
        claims: Vec<Attribute>,
        markers: Vec<Attribute>,
        draining: Vec<String>,
        now: WallTime,
        skew: Duration,
    ) -> Census {
        let mut census = Census { occupied: vec![], out_of_service: vec![], lapsed: 0, own: None, own_draining: None };
        let mut lapsed: std::collections::BTreeMap<String, Option<Claim>> = Default::default();
        for a in claims {
            let value = a.value.unwrap_or_default();
            let claim = Claim::parse(&value).map_err(|why| format!("{why} in `{value}`"));
            if a.target == me {
                census.own = Some(claim);
                continue;
            }
            if let Err(why) = &claim {
                tracing::warn!(instance = %a.target, reason = %why, "unreadable claim counts as live");
            }
            let seen = Seen { instance: a.target, claim };
            if seen.occupies(now, skew) {
                census.occupied.push(seen);
            } else {
                lapsed.insert(seen.instance, seen.claim.ok());
            }
        }
        let claimed: std::collections::BTreeSet<String> = census.occupied.iter().map(|s| s.instance.clone()).collect();
        let marked: std::collections::BTreeSet<String> =
            markers.into_iter().map(|a| a.target).filter(|t| t != me && !claimed.contains(t)).collect();
        for instance in &marked {
            let lapsed_claim = lapsed.remove(instance).flatten();
            census.out_of_service.push(Occupant { instance: instance.clone(), why: OutOfService::DrainedByAgent { lapsed_claim } });
        }
        for instance in draining {
            if instance == me || claimed.contains(&instance) || marked.contains(&instance) {
                continue;
            }
            // A lapsed claim on a DRAINING instance without a marker: it was DRAINING before its
            // agent claimed (someone else drained it), so it is counted as such.
            lapsed.remove(&instance);
            census.out_of_service.push(Occupant { instance, why: OutOfService::DrainingByOthers });
        }
        census.lapsed = lapsed.len();
        census
    }

    /// How many slots the others take.
    pub fn taken(&self) -> usize {
        self.occupied.len() + self.out_of_service.len()
    }

    /// How long the longest-held slot has been held at `now`: since its claim was first written,
    /// or for good when an instance is out of service without a live claim, or its claim cannot
    /// be read.
    pub fn longest_hold(&self, now: WallTime) -> Duration {
        if !self.out_of_service.is_empty() {
            return Duration::MAX;
        }
        let ages = self.occupied.iter().map(|s| match &s.claim {
            Ok(c) => Duration::from_secs(u64::try_from(now.as_secs().saturating_sub(c.claimed_at)).unwrap_or(0)),
            Err(_) => Duration::MAX,
        });
        ages.max().unwrap_or(Duration::ZERO)
    }

    /// Who holds the slots, one short phrase each, for logs and the status detail (no times,
    /// so that the status of a host waiting on the same holders does not change).
    pub fn holders(&self) -> Vec<String> {
        self.holders_where(|_| true)
    }

    /// The holders that hold up the fleet: every instance out of service without a live claim,
    /// every unreadable claim, and every claim older than `after` (all claims when `None`).
    /// A waiter's status names only these: the holders of a rollout going well change at every
    /// release, and naming them cost a status write at nearly every look.
    pub fn blocking_holders(&self, now: WallTime, after: Option<Duration>) -> Vec<String> {
        let Some(after) = after else { return self.holders() };
        let limit = i64::try_from(after.as_secs()).unwrap_or(i64::MAX);
        self.holders_where(|claim| claim.is_none_or(|c| now.as_secs().saturating_sub(c.claimed_at) > limit))
    }

    /// The phrases for the claims `keep` accepts (`None`: an unreadable claim), and for every
    /// instance out of service without a live claim.
    fn holders_where(&self, keep: impl Fn(Option<&Claim>) -> bool) -> Vec<String> {
        let claims = self.occupied.iter().filter(|s| keep(s.claim.as_ref().ok())).map(|s| {
            let id = crate::status::short_id(&s.instance);
            match &s.claim {
                Ok(c) => format!("{id} claim-{}", c.phase.code()),
                Err(_) => format!("{id} unreadable-claim"),
            }
        });
        let out = self.out_of_service.iter().map(|o| {
            let id = crate::status::short_id(&o.instance);
            match &o.why {
                OutOfService::DrainedByAgent { lapsed_claim: Some(_) } => format!("{id} drained-by-agent claim-lapsed"),
                OutOfService::DrainedByAgent { lapsed_claim: None } => format!("{id} drained-by-agent no-claim"),
                OutOfService::DrainingByOthers => format!("{id} draining-not-by-agent"),
            }
        });
        claims.chain(out).collect()
    }
}

impl fmt::Display for Census {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} claimed, {} out of service, {} lapsed", self.occupied.len(), self.out_of_service.len(), self.lapsed)
    }
}

/// What a census reads besides the claims.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CensusScope {
    /// Allowed clock skew between hosts.
    pub skew: Duration,
    /// Count DRAINING instances that no agent drained (`cluster.count-foreign-draining`).
    pub foreign_draining: bool,
}

/// The lease operations of one host: whole-cluster reads, writes on its own instance only.
pub struct LeaseClient<'a, S, K> {
    /// The store bound to this host's instance.
    pub store: &'a S,
    /// This host's clock.
    pub clock: &'a K,
    /// This host's randomness.
    pub jitter: &'a Jitter,
    /// Attribute names.
    pub names: &'a Names,
    /// How ECS calls are retried.
    pub retry: RetryPolicy,
}

impl<'a, S: ClusterStore, K: Clock> LeaseClient<'a, S, K> {
    /// Reads every claim, every drained marker and (by `scope`) every DRAINING instance of the
    /// cluster, and sorts out which other instances take a slot. Any listing that cannot be read
    /// whole is an error: the count must never come out low.
    pub async fn census(&self, scope: CensusScope) -> Result<Census, LeaseError> {
        let claims = self.list(&self.names.lease).await?;
        self.census_with(claims, scope).await
    }

    /// The look before a claim, at the fleet's limit `n`: the claims first. When they alone fill
    /// the slots the look stops there, since the other listings could only add to the count and
    /// the answer (wait) is the same; otherwise `ready` is asked for the limit (and may end the
    /// attempt). If the claims leave a slot free under it, the drained markers and the DRAINING
    /// instances are read too when a claim has lapsed or `out_of_service` says the last count
    /// found instances out of service without a live claim (else they are left to the count
    /// after the claim, which always reads them: they are rare, and a claim they make one too
    /// many is withdrawn), and then the claims again, so that the claim written right after
    /// follows a listing of the claims closely. So too when `ready` read the cluster on a look
    /// that is `crowded`, one that many hosts may make at once. On other looks, spread by the
    /// waiting policy, what `ready` reads (a call, mostly the operator's flags after a long
    /// wait) widens by as much the window in which two hosts both see the same free slot: a
    /// race lost there costs a claim, a count and a withdrawal, rarer than a second listing
    /// before every such claim would be (see the README's benchmarks). Only the census after
    /// the claim decides whether it holds, and that one is always whole.
    async fn look<R, RF>(&self, scope: CensusScope, n: u32, target: &str, (out_of_service, crowded): (bool, bool), ready: &mut R) -> Result<Look, LeaseError>
    where
        R: FnMut(u32, ClaimsInView) -> RF,
        RF: std::future::Future<Output = Result<(u32, bool), LeaseError>>,
    {
        let claims = self.list(&self.names.lease).await?;
        let by_claims = self.by_claims(&claims, scope.skew);
        if by_claims.taken() as u32 >= n {
            return Ok(Look { census: by_claims, limit: n, asked: false, whole: false });
        }
        let (limit, ready_read) = ready(n, by_claims.in_view(target)).await?;
        let limit = limit.clamp(1, n);
        if by_claims.taken() as u32 >= limit {
            return Ok(Look { census: by_claims, limit, asked: true, whole: false });
        }
        // A lapsed claim is what an agent that died holding its slot leaves: its instance is
        // likely still out of service.
        let whole = out_of_service || by_claims.lapsed > 0;
        let (markers, draining) = match whole {
            true => {
                let (markers, draining) = self.out_of_service_listings(scope).await?;
                (markers, draining.unwrap_or_default())
            }
            false => (vec![], vec![]),
        };
        let claims = match whole || crowded && ready_read {
            false => claims,
            true => self.list(&self.names.lease).await?,
        };
        Ok(Look { census: self.sort(claims, markers, draining, scope.skew), limit, asked: true, whole })
    }

    /// The count after a claim: the claims, then the drained markers and the DRAINING instances,
    /// unless the other claims alone already fill the `n` slots under the rule that counts them.
    /// The other listings could then only add to a count that already says "withdraw".
    async fn count_after_claim(&self, scope: CensusScope, rule: LeaseRule, n: u32) -> Result<Census, LeaseError> {
        let claims = self.list(&self.names.lease).await?;
        if rule == LeaseRule::CountOthers {
            let by_claims = self.by_claims(&claims, scope.skew);
            if by_claims.taken() as u32 >= n {
                return Ok(by_claims);
            }
        }
        self.census_with(claims, scope).await
    }

    /// The census from the claims already listed, with the other listings read now.
    async fn census_with(&self, claims: Vec<Attribute>, scope: CensusScope) -> Result<Census, LeaseError> {
        let (markers, draining) = self.out_of_service_listings(scope).await?;
        let own_draining = draining.as_ref().map(|d| d.iter().any(|i| i == self.store.instance_arn()));
        Ok(Census { own_draining, ..self.sort(claims, markers, draining.unwrap_or_default(), scope.skew) })
    }

    /// Every drained marker and (by `scope`) every DRAINING instance of the cluster (`None`
    /// when those are not listed).
    async fn out_of_service_listings(&self, scope: CensusScope) -> Result<(Vec<Attribute>, Option<Vec<String>>), LeaseError> {
        if self.names.is_off(|o| o.out_of_service_count) {
            return Ok((vec![], None));
        }
        let markers = self.list(&self.names.drained).await?;
        let draining = match scope.foreign_draining {
            true => Some(
                with_retry(self.clock, self.jitter, &self.retry, "ListContainerInstances", || self.store.draining_instances())
                    .await?,
            ),
            false => None,
        };
        Ok((markers, draining))
    }

    /// A random pause of up to `pace` between the calls of one look.
    async fn pause(&self, pace: Duration) {
        if !pace.is_zero() {
            self.clock.sleep(self.jitter.between(pace / 2, pace)).await;
        }
    }

    async fn list(&self, name: &str) -> Result<Vec<Attribute>, LeaseError> {
        let attrs = with_retry(self.clock, self.jitter, &self.retry, "ListAttributes", || self.store.list_attribute(name)).await?;
        Ok(attrs.into_iter().filter(|a| a.name == name).collect())
    }

    /// What the claims alone show, before (or without) the drained markers and DRAINING instances.
    fn by_claims(&self, claims: &[Attribute], skew: Duration) -> Census {
        self.sort(claims.to_vec(), vec![], vec![], skew)
    }

    fn sort(&self, claims: Vec<Attribute>, markers: Vec<Attribute>, draining: Vec<String>, skew: Duration) -> Census {
        Census::from_listings(self.store.instance_arn(), claims, markers, draining, self.clock.now(), skew)
    }

    /// Takes one of `params.max_concurrent` slots; returns once held. Loops (sleeping) while the
    /// cluster is full or a race is lost; `paused` is asked before each attempt and, while it says
    /// so, no claim is written. `waiting` hears, each time the cluster is full, the holders that
    /// hold it up (see [`Census::blocking_holders`]).
    pub async fn acquire<P, PF, W, WF>(&self, params: &LeaseParams, target: &str, paused: P, mut waiting: W) -> Result<Held, LeaseError>
    where
        P: FnMut() -> PF,
        PF: std::future::Future<Output = Result<Gate, LeaseError>>,
        W: FnMut(Vec<String>) -> WF,
        WF: std::future::Future<Output = ()>,
    {
        self.acquire_when(params, target, paused, |n, _| async move { Ok((n, false)) }, |holders, _| waiting(holders)).await
    }

    /// [`Self::acquire`], with `ready` asked when the live claims leave a slot free at the
    /// fleet's N: checks that only matter to a host about to claim (and would only cost a waiter
    /// calls on every look) go there. Told N and what the claims show, it answers the
    /// limit to apply (at most N: a canary's is 1) and whether it read the cluster (see
    /// [`Self::look`]), or an error that ends the attempt without a claim.
    /// `waiting` is also told what the claims of a full look show.
    pub async fn acquire_when<P, PF, R, RF, W, WF>(
        &self,
        params: &LeaseParams,
        target: &str,
        mut paused: P,
        mut ready: R,
        mut waiting: W,
    ) -> Result<Held, LeaseError>
    where
        P: FnMut() -> PF,
        PF: std::future::Future<Output = Result<Gate, LeaseError>>,
        R: FnMut(u32, ClaimsInView) -> RF,
        RF: std::future::Future<Output = Result<(u32, bool), LeaseError>>,
        W: FnMut(Vec<String>, ClaimsInView) -> WF,
        WF: std::future::Future<Output = ()>,
    {
        let mut lost_races = 0u32;
        let mut estimate = Waiting::default();
        // Whether the last count found instances out of service without a claim: the looks then
        // read them before claiming, until a look finds none.
        let mut out_of_service = false;
        // Set when a look held its claim back behind one just written and left few slots free:
        // the look again a moment later reuses the gate's answer, and claims whatever it sees
        // fresh then.
        let mut held_back: Option<u32> = None;
        let mut looked = false;
        // The instance count from the last read of the gate, for the waiting policy.
        let mut registered: Option<u64> = None;
        loop {
            let regated = held_back.take();
            let n = match regated {
                Some(n) => n,
                None => {
                    // The cluster tags may pause the fleet or change N.
                    let gate = paused().await?;
                    registered = gate.registered.or(registered);
                    match gate.limit {
                        Some(n) => n.max(1),
                        None => {
                            self.sleep_while_paused(params).await;
                            continue;
                        }
                    }
                }
            };
            let fleet_n = n;
            // A host's first look comes when hosts find a release, or a window opens, together;
            // a look held back comes just after a claim written that second.
            let first = !std::mem::replace(&mut looked, true);
            let crowded = first || regated.is_some();
            if first {
                // Spread over the settle time: hosts that look together and claim within one
                // call of each other on the last free slot both withdraw (a claim, a count and a
                // withdrawal each), and the settle time is what a claim waits anyway.
                self.clock.sleep(self.jitter.up_to(params.settle)).await;
            } else {
                self.pause(params.pace()).await;
            }
            let look = self.look(params.scope(), n, target, (out_of_service, crowded), &mut ready).await?;
            let (before, n, asked) = (look.census, look.limit, look.asked);
            if look.whole {
                out_of_service = !before.out_of_service.is_empty();
            }
            if before.taken() as u32 >= n {
                if !asked && params.stuck_after.is_some_and(|after| before.longest_hold(self.clock.now()) > after) {
                    ready(n, before.in_view(target)).await?;
                }
                let holders = before.holders();
                let wait = self.wait_while_full(params, &before, n, &mut estimate, registered).await;
                tracing::info!(taken = before.taken(), max = n, holders = %holders.join(", "), wait_s = wait.as_secs(),
                    "cluster full; waiting for a slot");
                waiting(before.blocking_holders(self.clock.now(), params.stuck_after), before.in_view(target)).await;
                self.clock.sleep(wait).await;
                continue;
            }
            let fresh = before.fresh_claims(self.clock.now());
            if fresh > 0 && regated.is_none() {
                let wait = claim_stagger(params.settle, self.jitter);
                tracing::info!(fresh, wait_ms = wait.as_millis() as u64, "a claim written this second is settling; claiming a moment later");
                self.clock.sleep(wait).await;
                if (before.taken() as u32).saturating_add(ROOM_TO_CLAIM_ON_A_HELD_LOOK) > n {
                    held_back = Some(fleet_n);
                    continue;
                }
            }
            let claim = self.new_claim(ClaimPhase::Claiming, target, params.ttl)?;
            // A claim made at the same time as another is lost only where the look left the
            // last slot free (or one was just claimed): the claim then follows its listing at
            // once, so that the window in which two hosts both see that slot stays one call wide.
            // With more slots free, a claim paced like every other call loses nothing, and does
            // not make the host's second call in one second (see the README's benchmarks).
            if (before.taken() as u32).saturating_add(1) >= n || regated.is_some() {
                self.store.next_call_at_once();
            }
            self.write(&claim).await?;
            self.clock.sleep(params.settle).await;
            let rule = self.names.rule_override.unwrap_or(params.rule);
            let after = match self.count_after_claim(params.scope(), rule, n).await {
                Ok(c) => c,
                Err(e) => {
                    self.release_quietly().await;
                    return Err(e);
                }
            };
            if rule.holds(&claim, &after, n) {
                if let Err(e) = self.in_time(&claim, params.margin()) {
                    // The settle and the count took so long that the claim may already look
                    // lapsed to others: it never held.
                    self.release_quietly().await;
                    return Err(e);
                }
                tracing::info!(taken = after.taken(), max = n, token = %claim.token, "slot taken");
                return Ok(Held { claim, own_draining: after.own_draining });
            }
            out_of_service |= !after.out_of_service.is_empty();
            self.release().await?;
            let wait = params.backoff.delay(lost_races, self.jitter);
            lost_races += 1;
            tracing::info!(taken = after.taken(), max = n, wait_s = wait.as_secs(), "lost the race for a slot; withdrew and backing off");
            self.clock.sleep(wait).await;
        }
    }

    /// Sleeps between two looks at a paused fleet: at most [`PAUSED_POLL_MAX`], so that a resume
    /// is seen within it whatever `wait_poll_max` allows.
    async fn sleep_while_paused(&self, params: &LeaseParams) {
        let cap = params.wait_poll_max.min(PAUSED_POLL_MAX);
        let wait = self.jitter.between(cap / 2, cap);
        tracing::info!(wait_s = wait.as_secs(), "fleet is paused by cluster tag; not claiming");
        self.clock.sleep(wait).await;
    }

    /// How long to sleep while `census` shows the cluster full, from the holders' claims and (on
    /// long waits) a count of the hosts competing for the same slots (`registered`, when the
    /// look's gate read it).
    async fn wait_while_full(&self, params: &LeaseParams, census: &Census, n: u32, estimate: &mut Waiting, registered: Option<u64>) -> Duration {
        let claims: Vec<&Claim> = census.occupied.iter().filter_map(|s| s.claim.as_ref().ok()).collect();
        let slot = slot_estimate(&claims, self.clock.now(), params.ttl);
        // Slots free at the fleet's rate, not the canary's: once the canary is through, N hosts
        // are served per slot time.
        let n = n.max(params.max_concurrent).max(1);
        let competing = if params.wait_poll_max > slot {
            if estimate.needs_count(self.clock.now(), slot, n) {
                if let Some(counted) = self.competitors(registered).await {
                    estimate.counted(counted, self.clock.now());
                }
            }
            estimate.competing(self.clock.now(), slot, n)
        } else {
            // A cap within one slot time governs every sleep; counting would not pay.
            f64::INFINITY
        };
        self.full_wait(params, &claims, slot, competing, n)
    }

    /// How many other hosts may compete for the same slots: every other registered instance,
    /// as the look's read of the gate counted them (DescribeClusters, which also carries the
    /// tags), or read now where the gate did not. It over-counts hosts that are already up to
    /// date, opted out or halted, which only makes a waiter look a little less often; the
    /// estimate runs down by the releases seen since, so the tail of a rollout is looked after
    /// by the next releases. `None` if it cannot be read (the next look tries again).
    async fn competitors(&self, registered: Option<u64>) -> Option<f64> {
        let count = match registered {
            Some(count) => count,
            None => {
                let read = with_retry(self.clock, self.jitter, &self.retry, "DescribeClusters", || self.store.describe_cluster()).await;
                match read {
                    Ok(summary) => summary.registered_instances,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot count the instances; aiming at the next releases meanwhile");
                        return None;
                    }
                }
            }
        };
        let others = count.saturating_sub(1);
        tracing::info!(others, "instances in the cluster that may compete for slots");
        Some(others as f64)
    }

    /// How long to sleep while the cluster is full.
    ///
    /// The claims say when slots may free up: a holder may finish one slot time after it claimed
    /// (the slot time judged from the holders' ages), and sooner once rebooting or verifying;
    /// past the releases in view, further slots free at `n` per slot time. With `competing`
    /// other hosts after the same slots, this host aims at a random one of the next predicted
    /// releases, so that a few waiters ([`LOOKS_PER_RELEASE`]) look around each release rather than
    /// all of them around every release: a waiter's rate of looks falls as the fleet grows. Looks
    /// are spread over one release interval around the prediction, and no sleep exceeds
    /// `wait_poll_max`.
    fn full_wait(&self, params: &LeaseParams, claims: &[&Claim], slot: Duration, competing: f64, n: u32) -> Duration {
        let releases = release_times(claims, self.clock.now(), slot);
        let interval = slot / n.max(1);
        // Saturates for an unbounded count: every release is then far beyond the cap.
        let ahead = (competing / LOOKS_PER_RELEASE).ceil().max(1.0) as u64;
        let k = self.jitter.next_u64() % ahead;
        let target = match releases.get(k as usize) {
            Some(t) => *t,
            None => {
                let beyond = u32::try_from(k + 1 - releases.len() as u64).unwrap_or(u32::MAX);
                releases[releases.len() - 1].saturating_add(interval.saturating_mul(beyond))
            }
        };
        let cap = params.wait_poll_max;
        if target.saturating_add(interval / 2) >= cap {
            return self.jitter.between(cap / 2, cap);
        }
        target.saturating_sub(interval / 2).saturating_add(self.jitter.up_to(interval)).max(params.backoff.base)
    }

    fn new_claim(&self, phase: ClaimPhase, target: &str, ttl: Duration) -> Result<Claim, LeaseError> {
        let now = self.clock.now();
        let claim = Claim {
            phase,
            claimed_at: now.as_secs(),
            expires_at: now.plus(ttl).as_secs(),
            token: format!("{:08x}", self.jitter.next_u64() as u32),
            target: target.to_string(),
        };
        if !valid_attribute_value(&claim.encode()) {
            return Err(LeaseError::Unencodable(target.to_string()));
        }
        Ok(claim)
    }

    async fn write(&self, claim: &Claim) -> Result<(), LeaseError> {
        let attrs = [(self.names.lease.clone(), claim.encode())];
        with_retry(self.clock, self.jitter, &self.retry, "PutAttributes", || self.store.put_attributes(&attrs)).await?;
        Ok(())
    }

    /// Checks that the store still shows our claim unexpired, then rewrites it with a new phase
    /// and an expiry `ttl` from now. Fails with [`LeaseError::Lost`] otherwise, and also when the
    /// write lands too late (less than `margin` before the old expiry): others may have counted
    /// the old claim as lapsed by then, and taken the slot.
    pub async fn renew(&self, held: &Held, phase: ClaimPhase, ttl: Duration, margin: Duration) -> Result<Held, LeaseError> {
        self.renew_with(held, phase, ttl, margin, &[]).await
    }

    /// [`Self::renew`], writing `extra` attributes of this instance in the same call.
    pub async fn renew_with(
        &self,
        held: &Held,
        phase: ClaimPhase,
        ttl: Duration,
        margin: Duration,
        extra: &[(String, String)],
    ) -> Result<Held, LeaseError> {
        let me = with_retry(self.clock, self.jitter, &self.retry, "DescribeContainerInstances", || {
            self.store.describe_self()
        })
        .await?;
        self.renew_seen(&me.attributes, held, phase, ttl, margin, extra).await
    }

    /// [`Self::renew_with`] against attributes the caller has just read, saving a second read.
    pub async fn renew_seen(
        &self,
        attrs: &std::collections::BTreeMap<String, String>,
        held: &Held,
        phase: ClaimPhase,
        ttl: Duration,
        margin: Duration,
        extra: &[(String, String)],
    ) -> Result<Held, LeaseError> {
        self.check_own(attrs, held, margin)?;
        let claim = self.renewed(held, phase, ttl);
        let mut written = vec![(self.names.lease.clone(), claim.encode())];
        written.extend_from_slice(extra);
        with_retry(self.clock, self.jitter, &self.retry, "PutAttributes", || self.store.put_attributes(&written)).await?;
        self.in_time(&held.claim, margin)?;
        Ok(Held { claim, own_draining: None })
    }

    /// Whether it is still more than `margin` before `claim` expires, by this host's clock: a
    /// write that completed by then is seen by every reader before any could count the claim as
    /// lapsed, and an act started by then happens under a claim others still count.
    pub fn in_time(&self, claim: &Claim, margin: Duration) -> Result<(), LeaseError> {
        if self.names.is_off(|o| o.late_renewal_check) {
            return Ok(());
        }
        Self::before_deadline(claim, margin, self.clock.now())
    }

    fn before_deadline(claim: &Claim, margin: Duration, now: WallTime) -> Result<(), LeaseError> {
        let deadline = WallTime::from_secs(claim.expires_at).minus(margin);
        if now >= deadline {
            return Err(LeaseError::Lost(format!(
                "too late: it is {now}, and the claim expiring at {} had to be renewed by {deadline}",
                WallTime::from_secs(claim.expires_at)
            )));
        }
        Ok(())
    }

    /// Whether `attrs` (our instance's, freshly read) still carry our claim, more than `margin`
    /// before its expiry.
    pub fn check_own(
        &self,
        attrs: &std::collections::BTreeMap<String, String>,
        held: &Held,
        margin: Duration,
    ) -> Result<(), LeaseError> {
        match attrs.get(&self.names.lease).map(|v| Claim::parse(v)) {
            Some(Ok(c)) if c.token == held.claim.token => {
                // Without the fix only an expiry already past counted, when the claim was read.
                let margin = if self.names.is_off(|o| o.late_renewal_check) { Duration::ZERO } else { margin };
                Self::before_deadline(&c, margin, self.clock.now())
            }
            Some(Ok(c)) => Err(LeaseError::Lost(format!("claim replaced by token {}", c.token))),
            Some(Err(why)) => Err(LeaseError::Lost(format!("claim unreadable: {why}"))),
            None => Err(LeaseError::Lost("claim is gone".into())),
        }
    }

    /// Our claim with a new phase and an expiry `ttl` from now (not yet written).
    pub fn renewed(&self, held: &Held, phase: ClaimPhase, ttl: Duration) -> Claim {
        Claim { phase, expires_at: self.clock.now().plus(ttl).as_secs(), ..held.claim.clone() }
    }

    /// Removes our claim (idempotent: "release if held").
    pub async fn release(&self) -> Result<(), LeaseError> {
        let names = [self.names.lease.clone()];
        with_retry(self.clock, self.jitter, &self.retry, "DeleteAttributes", || self.store.delete_attributes(&names))
            .await?;
        Ok(())
    }

    async fn release_quietly(&self) {
        if let Err(e) = self.release().await {
            tracing::warn!(error = %e, "could not withdraw our claim; it lapses at its expiry");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_back_claim_waits_a_tenth_to_four_tenths_of_the_settle_time() {
        let jitter = Jitter::seeded(7);
        let settle = Duration::from_secs(10);
        let waits: Vec<Duration> = (0..200).map(|_| claim_stagger(settle, &jitter)).collect();
        let (lo, hi) = (waits.iter().min().copied().unwrap_or_default(), waits.iter().max().copied().unwrap_or_default());
        assert!(lo >= Duration::from_secs(1) && hi <= Duration::from_secs(4), "{lo:?}..{hi:?}");
        assert!(lo < Duration::from_millis(1300) && hi > Duration::from_millis(3700), "spread over the range: {lo:?}..{hi:?}");
    }

    fn claim() -> Claim {
        Claim {
            phase: ClaimPhase::Draining,
            claimed_at: 1_700_000_000,
            expires_at: 1_700_000_600,
            token: "0badf00d".into(),
            target: "1.26.1".into(),
        }
    }

    #[test]
    fn claim_round_trips_and_fits_ecs_rules() {
        let c = claim();
        let v = c.encode();
        assert_eq!(v, "v1:d:1700000000:1700000600:0badf00d:1.26.1");
        assert!(valid_attribute_value(&v));
        assert_eq!(Claim::parse(&v), Ok(c));
    }

    #[test]
    fn parsing_is_strict() {
        for bad in [
            "",
            "garbage",
            "v2:d:1:2:0badf00d:1.0.0",
            "v1:x:1:2:0badf00d:1.0.0",
            "v1:d:one:2:0badf00d:1.0.0",
            "v1:d:1:2:zz:1.0.0",
            "v1:d:1:2:zzzzzzzz:1.0.0",
            "v1:d:1:2:abc:1.0.0",
            "v1:d:1:2:0123456789abcdef0123456789abcdef0:1.0.0",
            "v1:d:1:2:0badf00d:",
            "v1:d:1:2:0badf00d:1.0.0:extra",
        ] {
            assert!(Claim::parse(bad).is_err(), "{bad:?} must not parse");
        }
    }

    fn held(phase: ClaimPhase, claimed_at: i64, token: &str) -> Claim {
        Claim { phase, claimed_at, expires_at: claimed_at + 600, token: token.into(), target: "1.26.1".into() }
    }

    fn census_of(claims: &[Claim]) -> Census {
        Census {
            occupied: claims.iter().map(|c| Seen { instance: format!("i-{}", c.token), claim: Ok(c.clone()) }).collect(),
            out_of_service: vec![], lapsed: 0,
            own: None,
            own_draining: None,
        }
    }

    #[test]
    fn counting_others_refuses_at_n_where_lowest_claim_wins_proceeds() {
        // Two others hold; our claim is older than one of them (a skewed clock can do that).
        let others = [held(ClaimPhase::Draining, 100, "aaaa0001"), held(ClaimPhase::Draining, 300, "aaaa0002")];
        let ours = held(ClaimPhase::Claiming, 200, "bbbb0001");
        let after = census_of(&others);
        assert!(!LeaseRule::CountOthers.holds(&ours, &after, 2));
        assert!(LeaseRule::CountOthers.holds(&ours, &after, 3));
        assert!(LeaseRule::UnsafeLowestClaimWins.holds(&ours, &after, 2), "second earliest of three");
        assert!(!LeaseRule::UnsafeLowestClaimWins.holds(&ours, &after, 1));
        let tie = held(ClaimPhase::Claiming, 100, "0000ffff");
        assert!(LeaseRule::UnsafeLowestClaimWins.holds(&tie, &after, 1), "same second: the token decides");
        let garbage = Census { occupied: vec![Seen { instance: "x".into(), claim: Err("bad".into()) }], out_of_service: vec![], lapsed: 0, own: None, own_draining: None };
        assert!(!LeaseRule::UnsafeLowestClaimWins.holds(&tie, &garbage, 1), "an unreadable claim ranks first");
        assert_eq!(LeaseRule::default(), LeaseRule::CountOthers);
    }

    #[test]
    fn a_waiter_names_only_the_holders_that_hold_the_fleet_up() {
        let now = WallTime::from_secs(10_000);
        let mut c = census_of(&[held(ClaimPhase::Draining, 9_900, "aaaa0001"), held(ClaimPhase::Verifying, 7_000, "aaaa0002")]);
        let after = Some(Duration::from_secs(2_700));
        assert_eq!(c.blocking_holders(now, after), ["i-aaaa0002 claim-v"], "only the claim older than 45 min");
        assert_eq!(c.blocking_holders(now, Some(Duration::from_secs(3_000))), Vec::<String>::new(), "3,000 s is not past 3,000 s");
        assert_eq!(c.blocking_holders(now, None), c.holders(), "no expected duration: every holder");
        c.occupied.push(Seen { instance: "i-bad".into(), claim: Err("garbled".into()) });
        c.out_of_service.push(Occupant { instance: "i-gone".into(), why: OutOfService::DrainingByOthers });
        assert_eq!(c.blocking_holders(now, after), ["i-aaaa0002 claim-v", "i-bad unreadable-claim", "i-gone draining-not-by-agent"]);
    }

    #[test]
    fn slot_time_and_releases_follow_the_holders() {
        let now = WallTime::from_secs(10_000);
        let ttl = Duration::from_secs(600);
        // Holders aged 100 s and 500 s: the slot is at least the oldest age and twice the mean.
        let a = held(ClaimPhase::Draining, 9_900, "aaaa0001");
        let b = held(ClaimPhase::Rebooting, 9_500, "aaaa0002");
        let slot = slot_estimate(&[&a, &b], now, ttl);
        assert_eq!(slot, Duration::from_secs(600));
        let r = release_times(&[&a, &b], now, slot);
        assert_eq!(r, [Duration::from_secs(100), Duration::from_secs(500)], "b overran less than a: b first");
        // Young holders: half the TTL at least; an overrun verifying holder releases soon.
        let young = held(ClaimPhase::Draining, 9_990, "aaaa0003");
        assert_eq!(slot_estimate(&[&young], now, ttl), ttl / 2);
        // A lone holder 25 min in: twice that while draining, but only that once it verifies (a
        // canary through its bake is at the end of its slot, not half through it).
        let draining = held(ClaimPhase::Draining, 8_500, "aaaa0005");
        let verifying = held(ClaimPhase::Verifying, 8_500, "aaaa0006");
        assert_eq!(slot_estimate(&[&draining], now, ttl), Duration::from_secs(3_000));
        assert_eq!(slot_estimate(&[&verifying], now, ttl), Duration::from_secs(1_500));
        let late = held(ClaimPhase::Verifying, 9_000, "aaaa0004");
        assert_eq!(release_times(&[&late], now, slot), [Duration::from_secs(15)]);
        assert_eq!(release_times(&[], now, slot), [slot / 4], "never empty");
    }

    #[test]
    fn the_count_of_competitors_runs_down_and_a_recount_falls_by_a_quarter() {
        let t0 = WallTime::from_secs(0);
        let slot = Duration::from_secs(600);
        let mut w = Waiting::default();
        assert!(w.needs_count(t0, slot, 100));
        assert_eq!(w.competing(t0, slot, 100), 100.0, "unknown: as many as the slots");
        w.counted(1000.0, t0);
        // A hundred slots turn over every 600 s: a hundred served per slot time.
        assert_eq!(w.competing(t0.plus(slot * 3), slot, 100), 700.0);
        assert!(!w.needs_count(t0.plus(slot * 3), slot, 100));
        assert!(!w.needs_count(t0.plus(slot * 8), slot, 100), "200 left by the estimate");
        assert!(w.needs_count(t0.plus(slot * 9), slot, 100), "run out to N");
        assert_eq!(w.competing(t0.plus(slot * 20), slot, 100), 0.0);
        let later = t0.plus(slot * 9);
        w.counted(1000.0, later);
        assert_eq!(w.competing(later, slot, 100), 250.0, "the same instance count again: a quarter of the last");
        w.counted(80.0, later);
        assert_eq!(w.competing(later, slot, 100), 62.5, "a smaller count than the last, still falling");
        assert!(!w.needs_count(t0.plus(slot * 20), slot, 100), "a count within N is not taken again");
    }

    #[test]
    fn extreme_claim_times_parse_and_compare_without_panic() {
        let v = "v1:d:-9223372036854775808:9223372036854775807:0badf00d:1.0.0";
        let far = Claim::parse(v).expect("i64 extremes are numbers");
        assert_eq!((far.claimed_at, far.expires_at), (i64::MIN, i64::MAX));
        assert_eq!(far.encode(), v);
        let past = Claim { claimed_at: i64::MIN, expires_at: i64::MIN, ..far.clone() };
        let future = Claim { claimed_at: i64::MAX, expires_at: i64::MAX, ..far.clone() };
        let skews = [Duration::ZERO, Duration::from_secs(30), Duration::MAX];
        let nows = [WallTime(i64::MIN), WallTime(-1), WallTime::from_secs(1_700_000_000), WallTime(i64::MAX)];
        for now in nows {
            for skew in skews {
                assert!(far.is_live(now, skew) || now == WallTime(i64::MAX), "expires at the end of time");
                assert!(future.is_live(now, skew) || now == WallTime(i64::MAX));
                let _ = past.is_live(now, skew);
            }
            let all = [&far, &past, &future];
            for ttl in [Duration::ZERO, Duration::from_secs(600), Duration::MAX] {
                let slot = slot_estimate(&all, now, ttl);
                assert!(slot >= Duration::from_secs(60), "{slot:?}");
                for s in [slot, Duration::ZERO, Duration::MAX] {
                    let r = release_times(&all, now, s);
                    assert_eq!(r.len(), 3);
                    assert!(r.windows(2).all(|w| w[0] <= w[1]), "sorted: {r:?}");
                }
            }
            // The oldest possible holder: the slot time saturates, it does not wrap to zero.
            if now.0 >= 0 {
                assert!(slot_estimate(&[&past], now, Duration::ZERO) > Duration::from_secs(1 << 62), "{now:?}");
            }
            for (counted, at) in [(1e9, WallTime(i64::MIN)), (f64::MAX, WallTime(i64::MAX)), (5.0, now)] {
                let mut w = Waiting::default();
                w.counted(counted, at);
                for slot in [Duration::from_secs(60), Duration::MAX] {
                    let c = w.competing(now, slot, 1000);
                    assert!((0.0..=counted).contains(&c), "{c}");
                    let _ = w.needs_count(now, slot, 1000);
                }
            }
        }
        let seen = Seen { instance: "i".into(), claim: Claim::parse(v) };
        assert!(seen.occupies(WallTime::from_secs(1_700_000_000), Duration::from_secs(30)));
    }

    #[test]
    fn liveness_allows_for_skew_and_garbage_occupies() {
        let c = claim();
        let skew = Duration::from_secs(30);
        assert!(c.is_live(WallTime::from_secs(1_700_000_620), skew));
        assert!(!c.is_live(WallTime::from_secs(1_700_000_630), skew));
        let garbage = Seen { instance: "i".into(), claim: Err("bad".into()) };
        assert!(garbage.occupies(WallTime::from_secs(i64::MAX / 2000), skew));
    }
}
