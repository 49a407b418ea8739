//! When a published version becomes visible to a host, by its seed: updog's waves.
//!
//! A release's manifest maps starting seeds to start times. A host finds the wave whose start
//! seed is the greatest one below its own seed and the next one at or above it, and waits until
//! a time interpolated between the two starts. The interpolation multiplies by the host's
//! absolute seed (not its offset inside the wave), so a host high in a wave waits until close to
//! the wave's end; that is how updog computes it, and the fake does the same.

use chrono::{DateTime, Utc};

/// One wave start of a release: hosts with seeds from `seed` on start at `at`.
pub type WaveStart = (u32, DateTime<Utc>);

/// Whether a release with `waves` is offered to a host with `seed` at `now` (no waves: at once).
pub fn update_ready(waves: &[WaveStart], seed: u32, now: DateTime<Utc>) -> bool {
    let start = waves.iter().filter(|(s, _)| *s < seed).max_by_key(|(s, _)| *s);
    let end = waves.iter().filter(|(s, _)| *s >= seed).min_by_key(|(s, _)| *s);
    match (start, end) {
        (None, _) => true,
        (Some((_, start_at)), None) => now >= *start_at,
        (Some((start_seed, start_at)), Some((end_seed, end_at))) => {
            if now >= *end_at {
                return true;
            }
            if now < *start_at {
                return false;
            }
            let span = end_at.signed_duration_since(*start_at);
            let per_seed = span / (end_seed - start_seed).max(1).min(i32::MAX as u32) as i32;
            let offset = per_seed.checked_mul(seed.min(i32::MAX as u32) as i32);
            let target = offset.and_then(|o| start_at.checked_add_signed(o)).unwrap_or(*end_at);
            now >= target
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(h: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + h * 3600, 0).expect("valid")
    }

    #[test]
    fn no_waves_or_a_seed_below_the_first_is_ready_at_once() {
        assert!(update_ready(&[], 1000, at(0)));
        assert!(update_ready(&[(0, at(5)), (500, at(10))], 0, at(0)), "initial wave");
    }

    #[test]
    fn a_seed_waits_for_its_interpolated_time_and_is_ready_after_the_wave_ends() {
        let waves = [(0, at(0)), (1024, at(10)), (2048, at(20))];
        assert!(!update_ready(&waves, 1500, at(9)), "before the wave starts");
        assert!(update_ready(&waves, 1500, at(20)), "the wave has passed");
        // Absolute seed: per seed 10h/1024; 1500 seeds after the start is past the wave's end.
        assert!(!update_ready(&waves, 1500, at(19)));
        assert!(update_ready(&waves, 100, at(1)), "early in the first general wave");
    }

    #[test]
    fn the_last_wave_starts_at_its_time() {
        let waves = [(0, at(0)), (100, at(10))];
        assert!(!update_ready(&waves, 200, at(9)));
        assert!(update_ready(&waves, 200, at(10)));
    }
}
