//! When this host looks for updates: a fixed phase inside each check interval, from its wave seed.
//!
//! Bottlerocket gives each host a seed in 0..2048 (`settings.updates.seed`), uniformly at random.
//! Placing each host at `seed / 2048` of the interval spreads a fleet evenly over it, so hosts never
//! refresh or contend for the lease all at once; a little random jitter on top breaks ties between
//! equal seeds. The phase is anchored to the Unix epoch, so it is the same on every restart.

use std::time::Duration;

use crate::clock::WallTime;
use crate::window::{Opening, Windows};

/// The number of distinct wave seeds.
pub const SEED_SPACE: u32 = 2048;

/// A host's schedule of checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// The wave seed (taken modulo 2048: the model does not bound it).
    pub seed: u32,
    /// The length of one round.
    pub interval: Duration,
}

impl Schedule {
    /// This host's offset into every interval.
    pub fn offset(&self) -> Duration {
        let frac = f64::from(self.seed % SEED_SPACE) / f64::from(SEED_SPACE);
        Duration::from_millis((self.interval.as_millis() as f64 * frac) as u64)
    }

    /// The first slot strictly after `now` (before jitter); at the end of time, the end of time.
    pub fn next_after(&self, now: WallTime) -> WallTime {
        let interval = i64::try_from(self.interval.as_millis()).unwrap_or(i64::MAX).max(1);
        let offset = i64::try_from(self.offset().as_millis()).unwrap_or(i64::MAX);
        // Saturating: the round of an instant near i64::MIN starts below it.
        let round_start = now.0.div_euclid(interval).saturating_mul(interval);
        let mut slot = round_start.saturating_add(offset);
        if slot <= now.0 {
            slot = slot.saturating_add(interval);
        }
        WallTime(slot)
    }
}

/// When the next check is, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Planned {
    /// The slot (before jitter).
    pub at: WallTime,
    /// The window it lies in, when windows are configured.
    pub window: Option<Opening>,
    /// How far into the interval or window the seed puts it.
    pub offset: Duration,
}

/// The share of a window's usable part (in which an update still fits) that slots are planned
/// over. The round does work before it starts the update (the download, a wait for a slot):
/// a seed planned at the very end of the usable part would be past it by then, in every window,
/// and never update. The last tenth is that work's room.
const PLANNED_SHARE: f64 = 0.9;

/// The part of window `o` that slots are planned over, for an update taking `expected`.
fn planned_part(o: &Opening, expected: Duration) -> Duration {
    o.length().saturating_sub(expected).mul_f64(PLANNED_SHARE)
}

/// The next slot after `now`. Without windows: the seed's phase of the check interval. With
/// windows: the seed's fraction of the planned part of the next window in which an update
/// taking `expected` still fits (so high seeds are not pushed out of every window).
pub fn plan(schedule: &Schedule, windows: &Windows, expected: Duration, now: WallTime) -> Planned {
    if !windows.is_restricted() {
        return Planned { at: schedule.next_after(now), window: None, offset: schedule.offset() };
    }
    let frac = f64::from(schedule.seed % SEED_SPACE) / f64::from(SEED_SPACE);
    let mut opening = windows.current_or_next(now);
    for _ in 0..64 {
        let Some(o) = opening else { break };
        let offset = Duration::from_millis((planned_part(&o, expected).as_millis() as f64 * frac) as u64);
        let at = o.start.plus(offset);
        if at > now {
            return Planned { at, window: Some(o), offset };
        }
        opening = windows.next_start_after(o.start);
    }
    // Unreachable with valid windows (every week has one); fall back to the plain schedule.
    Planned { at: schedule.next_after(now), window: None, offset: schedule.offset() }
}

/// The next `count` slots from `from`, each with its reason, for the `next` subcommand.
pub fn upcoming(schedule: &Schedule, windows: &Windows, expected: Duration, from: WallTime, count: usize) -> Vec<Planned> {
    let mut out = Vec::with_capacity(count);
    let mut t = from;
    for _ in 0..count {
        let p = plan(schedule, windows, expected, t);
        t = p.at;
        out.push(p);
    }
    out
}

/// One line saying when and why, e.g. for operators checking a config before rolling it out.
pub fn describe(p: &Planned, schedule: &Schedule, expected: Duration) -> String {
    let frac = f64::from(schedule.seed % SEED_SPACE) / f64::from(SEED_SPACE);
    match p.window {
        Some(w) => format!(
            "{}  window {} .. {}; seed {} puts it {:.1}% into the {} min in which a {} min update still fits (+{} min)",
            p.at,
            w.start,
            w.end,
            schedule.seed,
            frac * 100.0,
            planned_part(&w, expected).as_secs() / 60,
            expected.as_secs() / 60,
            p.offset.as_secs() / 60
        ),
        None => format!(
            "{}  no windows: seed {} puts it {:.1}% into each {} min check interval (+{} min)",
            p.at,
            schedule.seed,
            frac * 100.0,
            schedule.interval.as_secs() / 60,
            p.offset.as_secs() / 60
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::{parse_time, Window};

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn slot_is_the_seed_fraction_of_the_interval() {
        let s = Schedule { seed: 1024, interval: HOUR };
        assert_eq!(s.offset(), Duration::from_secs(1800));
        let now = WallTime::from_secs(10 * 3600 + 60);
        assert_eq!(s.next_after(now), WallTime::from_secs(10 * 3600 + 1800));
        let later = WallTime::from_secs(10 * 3600 + 1800);
        assert_eq!(s.next_after(later), WallTime::from_secs(11 * 3600 + 1800), "strictly after");
    }

    #[test]
    fn seeds_spread_evenly_over_the_interval() {
        let now = WallTime::from_secs(5 * 3600);
        let mut per_quarter = [0u32; 4];
        for seed in 0..SEED_SPACE {
            let slot = Schedule { seed, interval: HOUR }.next_after(now);
            let into = slot.since(now);
            assert!(into <= HOUR, "seed {seed} waits {into:?}");
            per_quarter[(into.as_secs() * 4 / 3601) as usize] += 1;
        }
        assert!(per_quarter.iter().all(|&n| n == 512), "{per_quarter:?}");
    }

    #[test]
    fn slots_at_the_ends_of_time_saturate() {
        let longest = Schedule { seed: 2047, interval: Duration::MAX };
        assert_eq!(longest.next_after(WallTime(i64::MAX)), WallTime(i64::MAX));
        assert!(longest.next_after(WallTime(0)) > WallTime(0));
        let s = Schedule { seed: 0, interval: Duration::from_secs(10) };
        // The round of i64::MIN + 1 starts below i64::MIN.
        assert!(s.next_after(WallTime(i64::MIN + 1)) > WallTime(i64::MIN + 1));
        assert_eq!(s.next_after(WallTime(i64::MAX - 1)), WallTime(i64::MAX));
    }

    #[test]
    fn out_of_range_seed_wraps() {
        let a = Schedule { seed: 5, interval: HOUR };
        let b = Schedule { seed: 5 + SEED_SPACE, interval: HOUR };
        assert_eq!(a.offset(), b.offset());
    }

    fn sat_window(hours: u64) -> Windows {
        Windows {
            zone: chrono_tz::UTC,
            windows: vec![Window {
                days: vec![chrono::Weekday::Sat],
                start: parse_time("00:00").expect("time"),
                length: Duration::from_secs(hours * 3600),
            }],
        }
    }

    #[test]
    fn slots_spread_over_the_usable_part_of_the_window() {
        // 2026-11-21 is a Saturday; start looking on the Friday before.
        let fri = WallTime::from_secs(1_795_219_200 - 86_400);
        let w = sat_window(4);
        let expected = Duration::from_secs(3600);
        let mut latest = Duration::ZERO;
        for seed in [0, 512, 1024, 2047] {
            let p = plan(&Schedule { seed, interval: HOUR }, &w, expected, fri);
            let o = p.window.expect("in a window");
            assert_eq!(o.start, WallTime::from_secs(1_795_219_200));
            assert!(p.at.plus(expected) <= o.end, "seed {seed}: update must fit");
            latest = latest.max(p.offset);
        }
        // 4 h less the 1 h update leaves 3 h; slots are planned over nine tenths of them.
        assert!(latest > Duration::from_secs(2 * 3600 + 2400), "high seeds go late: {latest:?}");
        assert!(latest <= Duration::from_secs(3 * 3600 * 9 / 10), "the highest seed leaves a tenth for the round's own work: {latest:?}");
    }

    #[test]
    fn a_passed_slot_moves_to_the_next_window() {
        let w = sat_window(4);
        let inside_late = WallTime::from_secs(1_795_219_200 + 3 * 3600);
        let p = plan(&Schedule { seed: 0, interval: HOUR }, &w, Duration::from_secs(600), inside_late);
        assert_eq!(p.at, WallTime::from_secs(1_795_219_200 + 7 * 86_400));
    }

    #[test]
    fn upcoming_slots_advance_and_explain_themselves() {
        let s = Schedule { seed: 1024, interval: HOUR };
        let w = sat_window(4);
        let slots = upcoming(&s, &w, Duration::from_secs(3600), WallTime::from_secs(1_795_219_200 - 86_400), 3);
        assert_eq!(slots.len(), 3);
        assert!(slots.windows(2).all(|p| p[1].at.since(p[0].at) == Duration::from_secs(7 * 86_400)));
        let line = describe(&slots[0], &s, Duration::from_secs(3600));
        assert!(line.contains("50.0%") && line.contains("window"), "{line}");
        let plain = upcoming(&s, &Windows::default(), Duration::ZERO, WallTime::from_secs(0), 2);
        assert_eq!(plain[1].at.since(plain[0].at), HOUR);
        assert!(describe(&plain[0], &s, Duration::ZERO).contains("no windows"));
    }
}
