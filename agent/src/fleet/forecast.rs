//! `fleet status --forecast`: when each host behind the newest target will update, and when the
//! rollout will finish, from what the hosts publish (their wave seeds and how long their last
//! update held a slot), the fleet's limit and pause, and the schedule the fleet's agents run
//! (check interval, jitter, maintenance windows, canary bake: the config given, else the
//! agent's defaults).
//!
//! The model is the agent's own behaviour, simplified: a host that is idle checks at its seed's
//! next slot (`slot::plan`, plus half the jitter on average) and then asks for a slot; a waiting
//! host asks now; slots are handed out first come first served, N at a time (1 until the
//! canaries finished, while no host runs the target yet), each held for one slot time: the
//! median of the durations the hosts recorded (a default when none did). A host that would
//! start where its update no longer fits in the window moves to its slot in the next one.
//! Nothing here reads a clock or ECS: the same view gives the same forecast.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::Duration;

use super::model::{compare_versions, FleetView, Host, SlotReason};
use crate::clock::WallTime;
use crate::config::Config;
use crate::slot::{plan, Schedule};
use crate::window::Windows;

/// The slot time assumed when no host has recorded one: a drain, a reboot and the checks after
/// it on a typical host.
pub const DEFAULT_SLOT_TIME: Duration = Duration::from_secs(15 * 60);
/// The smallest uncertainty quoted, as a share of the time left: the model leaves out the
/// random order in which waiting hosts find a free slot and the spread of drain times.
const MIN_ERROR_SHARE: f64 = 0.10;
/// How often one host may be moved to a later window before the forecast gives up on it.
const MAX_WINDOW_MOVES: usize = 64;

/// What the forecast assumes about the fleet's agents (their config is not in ECS).
#[derive(Clone, Debug, PartialEq)]
pub struct Assumptions {
    /// `check-interval`.
    pub interval: Duration,
    /// `check-jitter` (half of it is added on average).
    pub jitter: Duration,
    /// `maintenance.windows`.
    pub windows: Windows,
    /// `maintenance.expected-duration`: an update starts only if this fits in the window.
    pub expected: Duration,
    /// `cluster.canary-hosts`.
    pub canary_hosts: u32,
    /// How much longer a canary holds its slot (`canary-bake-time` over `bake-time`).
    pub canary_extra: Duration,
    /// How long a download takes between the check and asking for a slot.
    pub download: Duration,
    /// The slot time when no host recorded one.
    pub default_slot: Duration,
}

impl Assumptions {
    /// What a fleet running `cfg` does.
    pub fn from_config(cfg: &Config) -> Assumptions {
        Assumptions {
            interval: cfg.check_interval,
            jitter: cfg.check_jitter,
            windows: cfg.maintenance.windows.clone(),
            expected: cfg.maintenance.expected_duration,
            canary_hosts: cfg.cluster.canary_hosts,
            canary_extra: cfg.health.canary_bake_time.saturating_sub(cfg.health.bake_time),
            download: Duration::from_secs(3 * 60),
            default_slot: DEFAULT_SLOT_TIME,
        }
    }
}

/// Where one host stands in the forecast.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EtaState {
    /// It runs the target already.
    Done,
    /// It holds a slot for the target now; it finishes at the ETA.
    InProgress,
    /// It will take a slot; it finishes at the ETA.
    Queued,
    /// Not coming: opted out.
    OptedOut,
    /// Not coming: the target failed somewhere and the fleet halted it.
    Halted,
    /// Holds a slot without progress (`held`, a lapsed claim with the drained marker): it keeps
    /// the slot until someone looks.
    Stuck,
    /// The fleet is paused: no new slot is taken until it is resumed.
    Paused,
    /// No readable status, or a window that never fits: no estimate.
    Unknown,
}

impl EtaState {
    /// The stable word for JSON and the table.
    pub fn word(self) -> &'static str {
        match self {
            EtaState::Done => "done",
            EtaState::InProgress => "in-progress",
            EtaState::Queued => "queued",
            EtaState::OptedOut => "opted-out",
            EtaState::Halted => "halted",
            EtaState::Stuck => "stuck",
            EtaState::Paused => "paused",
            EtaState::Unknown => "unknown",
        }
    }
}

/// One host's forecast.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Eta {
    /// Where it stands.
    pub state: EtaState,
    /// When it is back in service on the target (in progress or queued only).
    pub at: Option<WallTime>,
}

/// Where the slot time comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotSource {
    /// The median of this many hosts' recorded durations.
    Recorded(usize),
    /// No host recorded one: [`Assumptions::default_slot`].
    Default,
}

/// The forecast for the newest target.
#[derive(Clone, Debug, PartialEq)]
pub struct Forecast {
    /// The version the hosts move to.
    pub target: String,
    /// When the last host is back in service; `None` when some host cannot be placed (paused,
    /// halted, a slot held for good with no other).
    pub finish: Option<WallTime>,
    /// How far off the finish may be (half the spread between the quicker and slower recorded
    /// durations, at least a tenth of the time left).
    pub error: Duration,
    /// Hosts still to update (queued or in progress).
    pub to_go: usize,
    /// The slot time assumed per update.
    pub slot_time: Duration,
    /// Where it comes from.
    pub slot_source: SlotSource,
    /// Why there is no finish, when there is none.
    pub blocked: Option<String>,
    /// Per host, by ARN.
    pub hosts: BTreeMap<String, Eta>,
}

/// A host to place: when it asks for a slot, and its seed for later windows.
#[derive(Clone, Copy, Debug)]
struct Job {
    ready: WallTime,
    seed: Option<u32>,
}

/// The forecast for `view`'s newest target; `None` when no host names one.
pub fn forecast(view: &FleetView, a: &Assumptions) -> Option<Forecast> {
    let target = view.newest_target.clone()?;
    let now = view.observed_at;
    let (slot_time, quick, slow, slot_source) = slot_times(view, a);
    let hosts_of = |slot: Duration| place(view, a, &target, slot, now);
    let (hosts, blocked) = hosts_of(slot_time);
    let finish_with = |hosts: &BTreeMap<String, Eta>| hosts.values().filter_map(|e| e.at).max();
    let finish = if blocked.is_some() { None } else { finish_with(&hosts) };
    let spread = match (finish_with(&hosts_of(quick).0), finish_with(&hosts_of(slow).0)) {
        (Some(q), Some(s)) => s.since(q) / 2,
        _ => Duration::ZERO,
    };
    let left = finish.map_or(Duration::ZERO, |f| f.since(now));
    let error = spread.max(left.mul_f64(MIN_ERROR_SHARE)).max(a.jitter / 2);
    let to_go = hosts.values().filter(|e| matches!(e.state, EtaState::Queued | EtaState::InProgress)).count();
    Some(Forecast { target, finish, error, to_go, slot_time, slot_source, blocked, hosts })
}

/// The slot time (median of the recorded ones), a quicker and a slower one (the quartiles) for
/// the error, and where they come from.
fn slot_times(view: &FleetView, a: &Assumptions) -> (Duration, Duration, Duration, SlotSource) {
    let mut took: Vec<u64> = view.hosts.iter().filter_map(|h| h.status().and_then(|s| s.took)).collect();
    if took.is_empty() {
        let d = a.default_slot;
        return (d, d.mul_f64(0.75), d.mul_f64(1.25), SlotSource::Default);
    }
    took.sort_unstable();
    let at = |q: f64| Duration::from_secs(took[((took.len() - 1) as f64 * q).round() as usize]);
    (at(0.5), at(0.25), at(0.75), SlotSource::Recorded(took.len()))
}

/// Every host's ETA with `slot` per update, and why no finish can be given, if so.
fn place(view: &FleetView, a: &Assumptions, target: &str, slot: Duration, now: WallTime) -> (BTreeMap<String, Eta>, Option<String>) {
    let halted = view.failures.contains_key(target);
    let mut etas = BTreeMap::new();
    let mut busy: Vec<WallTime> = vec![];
    let mut jobs: Vec<(String, Job)> = vec![];
    for h in &view.hosts {
        let (eta, job) = classify(h, a, target, slot, now, halted, view.tags.paused);
        if let Some(at) = eta.at.filter(|_| eta.state == EtaState::InProgress) {
            busy.push(at);
        } else if eta.state == EtaState::Stuck || (h.slot.is_some() && eta.state != EtaState::InProgress) {
            // A slot nobody will give back within the forecast.
            busy.push(WallTime(i64::MAX));
        }
        if let Some(j) = job {
            jobs.push((h.arn.clone(), j));
        }
        etas.insert(h.arn.clone(), eta);
    }
    let canary = view.hosts.iter().all(|h| h.status().is_none_or(|s| s.running != target)) && a.canary_hosts > 0;
    let limit = view.tags.limit.max(1) as usize;
    let placed = schedule(jobs, busy, limit, canary, a, slot, now);
    let mut blocked = None;
    for (arn, at) in placed {
        let eta = Eta { state: if at.is_some() { EtaState::Queued } else { EtaState::Unknown }, at };
        if at.is_none() && blocked.is_none() {
            blocked = Some(if etas.values().any(|e| e.state == EtaState::Stuck) {
                "every slot is held by a host that is stuck".to_owned()
            } else {
                "a host's update never fits in a maintenance window".to_owned()
            });
        }
        etas.insert(arn, eta);
    }
    if view.tags.paused && etas.values().any(|e| e.state == EtaState::Paused) {
        blocked = Some("the fleet is paused: resume it to go on".to_owned());
    } else if halted && etas.values().any(|e| e.state == EtaState::Halted) {
        blocked = Some(format!("version {target} failed and is halted (fleet resume-version {target})"));
    }
    (etas, blocked)
}

/// One host: its ETA if it needs no slot of the schedule, else the job to place.
fn classify(h: &Host, a: &Assumptions, target: &str, slot: Duration, now: WallTime, halted: bool, paused: bool) -> (Eta, Option<Job>) {
    let none = |state| (Eta { state, at: None }, None);
    let Some(st) = h.status() else {
        return none(if h.slot.is_some() { EtaState::Stuck } else { EtaState::Unknown });
    };
    let claimed_for_target = match &h.claim {
        Some(Ok(c)) if h.claim_live => (c.target == target).then_some(c.claimed_at),
        _ => None,
    };
    if let Some(claimed) = claimed_for_target {
        if st.phase == "held" {
            return none(EtaState::Stuck);
        }
        let end = WallTime::from_secs(claimed).plus(slot).max(now.plus(Duration::from_secs(60)));
        return (Eta { state: EtaState::InProgress, at: Some(end) }, None);
    }
    if matches!(h.slot, Some(SlotReason::DrainedByAgent | SlotReason::UnreadableClaim)) || st.phase == "held" {
        return none(EtaState::Stuck);
    }
    if compare_versions(&st.running, target) != std::cmp::Ordering::Less {
        return none(EtaState::Done);
    }
    if h.opted_out || st.result == "opted-out" {
        return none(EtaState::OptedOut);
    }
    if halted {
        return none(EtaState::Halted);
    }
    if paused {
        return none(EtaState::Paused);
    }
    let ready = if st.phase == "waiting" {
        now
    } else {
        next_check(a, st.seed, now).plus(a.download)
    };
    (Eta { state: EtaState::Queued, at: None }, Some(Job { ready, seed: st.seed }))
}

/// When a host with `seed` next checks after `now` (a host that did not publish its seed: half
/// an interval from now, the mean over seeds), plus half the jitter.
fn next_check(a: &Assumptions, seed: Option<u32>, now: WallTime) -> WallTime {
    let at = match seed {
        Some(seed) => plan(&Schedule { seed, interval: a.interval }, &a.windows, a.expected, now).at,
        None if a.windows.is_restricted() => plan(&Schedule { seed: 1024, interval: a.interval }, &a.windows, a.expected, now).at,
        None => now.plus(a.interval / 2),
    };
    at.plus(a.jitter / 2)
}

/// Hands out slots first come first served; `busy` are the slots taken now (when each frees).
/// Returns each job's finish, or `None` when it cannot be placed.
fn schedule(
    jobs: Vec<(String, Job)>,
    busy: Vec<WallTime>,
    limit: usize,
    canary: bool,
    a: &Assumptions,
    slot: Duration,
    now: WallTime,
) -> Vec<(String, Option<WallTime>)> {
    // Free times of the N slots; slots beyond N in use now free up only as the holders leave.
    let mut busy = busy;
    busy.sort();
    let mut free: BinaryHeap<Reverse<WallTime>> = BinaryHeap::new();
    let holders_beyond = busy.len().saturating_sub(limit);
    for t in busy.iter().skip(holders_beyond) {
        free.push(Reverse(*t));
    }
    while free.len() < limit {
        free.push(Reverse(now));
    }
    let mut queue: BinaryHeap<Reverse<(WallTime, usize, usize)>> =
        jobs.iter().enumerate().map(|(i, (_, j))| Reverse((j.ready, i, 0))).collect();
    let mut out: Vec<Option<WallTime>> = vec![None; jobs.len()];
    let mut canaries_left = if canary { a.canary_hosts as usize } else { 0 };
    // While canaries are left the limit is 1: the next host starts after every slot is free.
    let mut all_free_at = busy.iter().copied().max().unwrap_or(now).max(now);
    while let Some(Reverse((ready, i, moves))) = queue.pop() {
        let Some(Reverse(slot_free)) = free.pop() else { break };
        if slot_free == WallTime(i64::MAX) {
            free.push(Reverse(slot_free));
            continue;
        }
        let earliest = if canaries_left > 0 { all_free_at } else { slot_free };
        let start = ready.max(earliest);
        if let Some(later) = window_move(a, jobs[i].1.seed, start) {
            free.push(Reverse(slot_free));
            if moves < MAX_WINDOW_MOVES {
                queue.push(Reverse((later.plus(a.download), i, moves + 1)));
            }
            continue;
        }
        let held = if canaries_left > 0 { slot + a.canary_extra } else { slot };
        let end = start.plus(held);
        out[i] = Some(end);
        if canaries_left > 0 {
            canaries_left -= 1;
            all_free_at = end;
            // Every slot frees no earlier than the canary's end: the rest wait for it.
            let n = free.len();
            free = (0..=n).map(|_| Reverse(end)).collect();
        } else {
            free.push(Reverse(end));
        }
        all_free_at = all_free_at.max(end);
    }
    jobs.into_iter().zip(out).map(|((arn, _), at)| (arn, at)).collect()
}

/// When the update of a host starting at `start` does not fit in a window: its slot in the next
/// one.
fn window_move(a: &Assumptions, seed: Option<u32>, start: WallTime) -> Option<WallTime> {
    if !a.windows.is_restricted() {
        return None;
    }
    let fits = a.windows.open_at(start).is_some_and(|o| start.plus(a.expected) <= o.end);
    if fits {
        return None;
    }
    let seed = seed.unwrap_or(1024);
    Some(plan(&Schedule { seed, interval: a.interval }, &a.windows, a.expected, start).at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::model::tests::{cluster, record};
    use crate::fleet::model::ViewSettings;
    use crate::window::{parse_time, Window};

    const NOW: i64 = 1_800_000_000;
    const MIN: u64 = 60;

    fn idle(seed: u32, took: Option<u64>) -> String {
        format!("v3:idle:1.26.0:-:up-to-date:{}:{seed}:{}:", NOW - 600, took.map_or("-".into(), |t| t.to_string()))
    }

    fn view(records: Vec<crate::fleet::source::InstanceRecord>, tags: &[(&str, &str)]) -> FleetView {
        FleetView::build(&cluster(tags), records, &ViewSettings::defaults("br-update"), WallTime::from_secs(NOW))
    }

    /// One host on the target (so the target is known and the canary is done) and `seeds` idle.
    fn fleet(seeds: &[u32], took: u64, limit: &str) -> FleetView {
        let mut records = vec![record(0, "ACTIVE", &[("br-update.status", Some(&format!("v3:idle:1.27.0:-:updated:{NOW}:0:{took}:")))])];
        for (i, s) in seeds.iter().enumerate() {
            records.push(record(i + 1, "ACTIVE", &[("br-update.status", Some(&idle(*s, None)))]));
        }
        // The target is named by a claim of a host that is waiting.
        records.push(record(99, "ACTIVE", &[("br-update.status", Some(&format!("v3:waiting:1.26.0:1.27.0:waiting-for-slot:{NOW}:7:-:")))]));
        view(records, &[("br-update.max-concurrent", limit)])
    }

    fn hourly() -> Assumptions {
        Assumptions {
            interval: Duration::from_secs(3600),
            jitter: Duration::ZERO,
            windows: Windows::default(),
            expected: Duration::from_secs(45 * MIN),
            canary_hosts: 1,
            canary_extra: Duration::from_secs(10 * MIN),
            download: Duration::ZERO,
            default_slot: DEFAULT_SLOT_TIME,
        }
    }

    fn eta_min(f: &Forecast, v: &FleetView, i: usize) -> Option<i64> {
        f.hosts[&v.hosts[i].arn].at.map(|t| (t.as_secs() - NOW) / 60)
    }

    #[test]
    fn idle_hosts_update_at_their_slot_when_slots_are_free() {
        // NOW is 1_800_000_000 = 08:00:00 UTC: seed 1024 checks at 08:30, 512 at 08:15.
        let v = fleet(&[1024, 512], 600, "5");
        let f = forecast(&v, &hourly()).expect("a target");
        assert_eq!(f.slot_source, SlotSource::Recorded(1));
        assert_eq!(f.slot_time, Duration::from_secs(600));
        assert_eq!((eta_min(&f, &v, 1), eta_min(&f, &v, 2), eta_min(&f, &v, 3)), (Some(40), Some(25), Some(10)));
        assert_eq!(f.finish, Some(WallTime::from_secs(NOW + 40 * 60)));
        assert_eq!(f.to_go, 3);
        assert_eq!(f.hosts[&v.hosts[0].arn].state, EtaState::Done);
    }

    #[test]
    fn one_slot_serialises_hosts_that_are_ready_together() {
        let v = fleet(&[0, 0, 0, 0], 600, "1");
        let f = forecast(&v, &hourly()).expect("a target");
        // The waiting host goes first (now), the four at 09:00 then one after another.
        let mut ends: Vec<i64> = (1..=5).filter_map(|i| eta_min(&f, &v, i)).collect();
        ends.sort_unstable();
        assert_eq!(ends, [10, 70, 80, 90, 100]);
        assert_eq!(f.finish, Some(WallTime::from_secs(NOW + 100 * 60)));
        let f2 = forecast(&fleet(&[0, 0, 0, 0], 600, "2"), &hourly()).expect("a target");
        assert_eq!(f2.finish, Some(WallTime::from_secs(NOW + 80 * 60)), "two at a time");
    }

    #[test]
    fn the_canary_goes_alone_and_bakes_longer_before_the_rest() {
        let records = vec![
            record(1, "ACTIVE", &[("br-update.status", Some(&format!("v3:waiting:1.26.0:1.27.0:waiting-for-slot:{NOW}:7:-:")))]),
            record(2, "ACTIVE", &[("br-update.status", Some(&format!("v3:waiting:1.26.0:1.27.0:waiting-for-slot:{NOW}:9:-:")))]),
            record(3, "ACTIVE", &[("br-update.status", Some(&format!("v3:waiting:1.26.0:1.27.0:waiting-for-slot:{NOW}:9:-:")))]),
        ];
        let v = view(records, &[("br-update.max-concurrent", "5")]);
        let f = forecast(&v, &hourly()).expect("a target");
        assert_eq!(f.slot_source, SlotSource::Default);
        let mut ends: Vec<i64> = (0..3).filter_map(|i| eta_min(&f, &v, i)).collect();
        ends.sort_unstable();
        assert_eq!(ends, [25, 40, 40], "15 min slot, canary +10 min, then both together");
    }

    #[test]
    fn a_host_in_progress_finishes_one_slot_after_its_claim_and_holds_its_slot() {
        let claim = format!("v1:d:{}:{}:0badf00d:1.27.0", NOW - 300, NOW + 300);
        let busy = record(5, "DRAINING", &[
            ("br-update.status", Some(&format!("v3:draining:1.26.0:1.27.0:in-progress:{NOW}:3:-:"))),
            ("br-update.lease", Some(&claim)),
            ("br-update.drained", Some("by-agent:0badf00d")),
        ]);
        let records = vec![
            record(0, "ACTIVE", &[("br-update.status", Some(&format!("v3:idle:1.27.0:-:updated:{NOW}:0:600:")))]),
            busy,
            record(99, "ACTIVE", &[("br-update.status", Some(&format!("v3:waiting:1.26.0:1.27.0:waiting-for-slot:{NOW}:7:-:")))]),
        ];
        let v = view(records, &[("br-update.max-concurrent", "1")]);
        let f = forecast(&v, &hourly()).expect("a target");
        assert_eq!(f.hosts[&v.hosts[1].arn].state, EtaState::InProgress);
        assert_eq!(eta_min(&f, &v, 1), Some(5), "claimed 5 min ago, 10 min slot");
        assert_eq!(eta_min(&f, &v, 2), Some(15), "the waiting host follows it");
    }

    #[test]
    fn paused_halted_opted_out_and_stuck_hosts_get_no_eta() {
        let paused = view(
            vec![
                record(0, "ACTIVE", &[("br-update.status", Some(&format!("v3:idle:1.27.0:-:updated:{NOW}:0:600:")))]),
                record(1, "ACTIVE", &[("br-update.status", Some(&idle(5, None))), ("br-update.opt-out", Some("true"))]),
                record(2, "ACTIVE", &[("br-update.status", Some(&format!("v3:waiting:1.26.0:1.27.0:paused:{NOW}:7:-:fleet paused")))]),
            ],
            &[("br-update.paused", "true")],
        );
        let f = forecast(&paused, &hourly()).expect("a target");
        assert_eq!(f.finish, None);
        assert!(f.blocked.as_deref().is_some_and(|b| b.contains("paused")), "{:?}", f.blocked);
        assert_eq!(f.hosts[&paused.hosts[1].arn].state, EtaState::OptedOut);
        assert_eq!(f.hosts[&paused.hosts[2].arn].state, EtaState::Paused);

        let stuck = view(
            vec![
                record(0, "ACTIVE", &[("br-update.status", Some(&idle(5, None)))]),
                record(1, "DRAINING", &[
                    ("br-update.status", Some(&format!("v3:held:1.27.0:1.27.0:held-health:{NOW}:3:-:impaired"))),
                    ("br-update.lease", Some(&format!("v1:v:{}:{}:0badf00d:1.27.0", NOW - 300, NOW + 300))),
                    ("br-update.drained", Some("by-agent:0badf00d")),
                ]),
            ],
            &[("br-update.max-concurrent", "1")],
        );
        let f = forecast(&stuck, &hourly()).expect("a target");
        assert_eq!(f.hosts[&stuck.hosts[1].arn].state, EtaState::Stuck);
        assert_eq!(f.finish, None, "the only slot is held for good");
        assert!(f.blocked.as_deref().is_some_and(|b| b.contains("stuck")), "{:?}", f.blocked);
    }

    #[test]
    fn a_host_whose_start_misses_the_window_moves_to_the_next_one() {
        // A daily two-hour window from 08:00 UTC (NOW); 45 min must fit.
        let windows = Windows {
            zone: chrono_tz::UTC,
            windows: vec![Window {
                days: [chrono::Weekday::Mon, chrono::Weekday::Tue, chrono::Weekday::Wed, chrono::Weekday::Thu, chrono::Weekday::Fri, chrono::Weekday::Sat, chrono::Weekday::Sun].to_vec(),
                start: parse_time("08:00").expect("time"),
                length: Duration::from_secs(2 * 3600),
            }],
        };
        let a = Assumptions { windows, ..hourly() };
        // Seven hosts waiting, one slot of 30 min: 4 fit before 09:15, the rest go the next day.
        let records: Vec<_> = (0..7)
            .map(|i| record(i, "ACTIVE", &[("br-update.status", Some(&format!("v3:waiting:1.26.0:1.27.0:waiting-for-slot:{NOW}:{}:1800:", i * 100)))]))
            .collect();
        let v = view(records, &[("br-update.max-concurrent", "1")]);
        let f = forecast(&v, &Assumptions { canary_hosts: 0, ..a }).expect("a target");
        let ends: Vec<i64> = (0..7).filter_map(|i| eta_min(&f, &v, i)).collect();
        assert_eq!(ends.len(), 7, "{f:?}");
        assert_eq!(ends.iter().filter(|&&m| m <= 120).count(), 3, "{ends:?}");
        assert!(ends.iter().filter(|&&m| m > 120).all(|&m| m >= 24 * 60), "the others the next day: {ends:?}");
    }

    #[test]
    fn the_error_grows_with_the_spread_of_recorded_durations() {
        let narrow = forecast(&fleet(&[0; 20], 600, "1"), &hourly()).expect("a target");
        let mut records: Vec<_> = (0..20).map(|i| record(i, "ACTIVE", &[("br-update.status", Some(&idle(0, Some(300 + 60 * i as u64))))])).collect();
        records.push(record(98, "ACTIVE", &[("br-update.status", Some(&format!("v3:idle:1.27.0:-:updated:{NOW}:0:600:")))]));
        records.push(record(99, "ACTIVE", &[("br-update.status", Some(&format!("v3:waiting:1.26.0:1.27.0:waiting-for-slot:{NOW}:7:-:")))]));
        let wide = forecast(&view(records, &[("br-update.max-concurrent", "1")]), &hourly()).expect("a target");
        assert!(wide.error > narrow.error, "{:?} vs {:?}", wide.error, narrow.error);
        let left = narrow.finish.expect("finish").since(WallTime::from_secs(NOW));
        assert!(narrow.error >= left.mul_f64(MIN_ERROR_SHARE), "at least a tenth of the time left");
    }

    #[test]
    fn no_target_no_forecast() {
        let v = view(vec![record(0, "ACTIVE", &[("br-update.status", Some(&idle(0, None)))])], &[]);
        assert_eq!(forecast(&v, &hourly()), None);
    }
}
