//! Jittered, growing delays, drawn from a seeded generator so a simulation replays exactly.

use std::cell::RefCell;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// The agent's source of randomness: seeded once (from the OS in production, from the run's
/// seed in a simulation) and passed by reference to whatever needs jitter.
#[derive(Debug)]
pub struct Jitter(RefCell<SmallRng>);

impl Jitter {
    /// A generator that replays the same sequence for the same seed.
    pub fn seeded(seed: u64) -> Jitter {
        Jitter(RefCell::new(SmallRng::seed_from_u64(seed)))
    }
    /// A generator seeded from the operating system.
    pub fn from_os() -> Jitter {
        Jitter(RefCell::new(SmallRng::from_os_rng()))
    }
    /// A uniformly random duration in `[lo, hi]`.
    pub fn between(&self, lo: Duration, hi: Duration) -> Duration {
        if hi <= lo {
            return lo;
        }
        let span = u64::try_from((hi - lo).as_millis()).unwrap_or(u64::MAX);
        lo.saturating_add(Duration::from_millis(self.0.borrow_mut().random_range(0..=span)))
    }
    /// A uniformly random duration in `[0, max]`.
    pub fn up_to(&self, max: Duration) -> Duration {
        self.between(Duration::ZERO, max)
    }
    /// A random 64-bit value (tokens).
    pub fn next_u64(&self) -> u64 {
        self.0.borrow_mut().random()
    }
}

/// Exponential back-off with "equal jitter": attempt `n` waits between half and all of
/// `min(base * 2^n, max)`, so retries spread out but never collapse to zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The first delay's ceiling.
    pub base: Duration,
    /// The largest delay.
    pub max: Duration,
}

impl Backoff {
    /// A back-off from `base` up to `max`.
    pub const fn new(base: Duration, max: Duration) -> Backoff {
        Backoff { base, max }
    }
    /// The ceiling of attempt `attempt` (0-based), before jitter.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(30)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }
    /// The jittered delay before retry number `attempt` (0-based).
    pub fn delay(&self, attempt: u32, jitter: &Jitter) -> Duration {
        let ceiling = self.ceiling(attempt);
        jitter.between(ceiling / 2, ceiling)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_and_stay_within_half_and_full() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let j = Jitter::seeded(7);
        assert_eq!(b.ceiling(0), Duration::from_secs(1));
        assert_eq!(b.ceiling(3), Duration::from_secs(8));
        assert_eq!(b.ceiling(40), Duration::from_secs(30));
        for attempt in 0..10 {
            let d = b.delay(attempt, &j);
            assert!(d >= b.ceiling(attempt) / 2 && d <= b.ceiling(attempt), "{attempt}: {d:?}");
        }
    }

    #[test]
    fn same_seed_same_sequence() {
        let (a, b) = (Jitter::seeded(42), Jitter::seeded(42));
        let s = Duration::from_secs(100);
        let xs: Vec<_> = (0..5).map(|_| a.up_to(s)).collect();
        let ys: Vec<_> = (0..5).map(|_| b.up_to(s)).collect();
        assert_eq!(xs, ys);
        assert!(xs.iter().any(|d| *d != xs[0]));
    }
}
