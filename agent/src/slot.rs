//! When this host looks for updates: a fixed phase inside each check interval, from its wave seed.
//!
//! Bottlerocket gives each host a seed in 0..2048 (`settings.updates.seed`), uniformly at random.
//! Placing each host at `seed / 2048` of the interval spreads a fleet evenly over it, so hosts never
//! refresh or contend for the lease all at once; a little random jitter on top breaks ties between
//! equal seeds. The phase is anchored to the Unix epoch, so it is the same on every restart.

use std::time::Duration;

use crate::clock::WallTime;

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

    /// The first slot strictly after `now` (before jitter).
    pub fn next_after(&self, now: WallTime) -> WallTime {
        let interval = self.interval.as_millis().max(1) as i64;
        let offset = self.offset().as_millis() as i64;
        let round_start = now.0.div_euclid(interval) * interval;
        let mut slot = round_start + offset;
        if slot <= now.0 {
            slot += interval;
        }
        WallTime(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn out_of_range_seed_wraps() {
        let a = Schedule { seed: 5, interval: HOUR };
        let b = Schedule { seed: 5 + SEED_SPACE, interval: HOUR };
        assert_eq!(a.offset(), b.offset());
    }
}
