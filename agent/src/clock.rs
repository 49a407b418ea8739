//! Time, behind a trait, so the same protocol code runs on the real clock and on virtual time.
//!
//! Wall time is what hosts write into ECS (claim expiries) and compare across the fleet, so it is
//! whole milliseconds since the Unix epoch. Waiting goes through [`Clock::sleep`], never through
//! `tokio::time::sleep` directly, so a simulation can skew one host's clock without touching the
//! others'.

use std::future::Future;
use std::time::Duration;

/// Milliseconds since the Unix epoch, as this host's clock reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct WallTime(pub i64);

impl WallTime {
    /// The instant `d` after this one.
    pub fn plus(self, d: Duration) -> WallTime {
        WallTime(self.0.saturating_add(d.as_millis().min(i64::MAX as u128) as i64))
    }
    /// The instant `d` before this one.
    pub fn minus(self, d: Duration) -> WallTime {
        WallTime(self.0.saturating_sub(d.as_millis().min(i64::MAX as u128) as i64))
    }
    /// How long from `earlier` to this instant; zero when `earlier` is later.
    pub fn since(self, earlier: WallTime) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0).max(0) as u64)
    }
    /// Whole seconds since the epoch (the resolution claims are written with).
    pub fn as_secs(self) -> i64 {
        self.0.div_euclid(1000)
    }
    /// The instant at `secs` whole seconds since the epoch.
    pub fn from_secs(secs: i64) -> WallTime {
        WallTime(secs.saturating_mul(1000))
    }
    /// RFC 3339 text, for logs and status output.
    pub fn to_rfc3339(self) -> String {
        chrono::DateTime::from_timestamp_millis(self.0)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_else(|| format!("{}ms", self.0))
    }
}

impl std::fmt::Display for WallTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

/// The source of time for everything that decides or waits.
pub trait Clock {
    /// The current wall time on this host.
    fn now(&self) -> WallTime;
    /// Wait for `d` to pass.
    fn sleep(&self, d: Duration) -> impl Future<Output = ()>;
}

/// The host's real clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> WallTime {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        WallTime(i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
    }
    fn sleep(&self, d: Duration) -> impl Future<Output = ()> {
        tokio::time::sleep(d)
    }
}

/// A clock that reads tokio's (possibly paused) time, offset from a fixed epoch by a per-host skew.
///
/// Under `tokio::time::pause` every host of a simulation shares one virtual timeline and idle time
/// costs nothing; the skew models hosts whose clocks disagree.
#[derive(Clone, Debug)]
pub struct VirtualClock {
    epoch: WallTime,
    start: tokio::time::Instant,
    skew_ms: i64,
}

impl VirtualClock {
    /// A clock reading `epoch` now, plus `skew_ms` on this host.
    pub fn new(epoch: WallTime, skew_ms: i64) -> VirtualClock {
        VirtualClock { epoch, start: tokio::time::Instant::now(), skew_ms }
    }
    /// The same timeline as `self`, read by a host whose clock is off by `skew_ms`.
    pub fn with_skew(&self, skew_ms: i64) -> VirtualClock {
        VirtualClock { skew_ms, ..self.clone() }
    }
}

impl Clock for VirtualClock {
    fn now(&self) -> WallTime {
        let elapsed = tokio::time::Instant::now().duration_since(self.start);
        WallTime(self.epoch.plus(elapsed).0.saturating_add(self.skew_ms))
    }
    fn sleep(&self, d: Duration) -> impl Future<Output = ()> {
        tokio::time::sleep(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_and_never_goes_negative() {
        let t = WallTime::from_secs(100);
        assert_eq!(t.plus(Duration::from_secs(5)).as_secs(), 105);
        assert_eq!(t.minus(Duration::from_secs(5)).as_secs(), 95);
        assert_eq!(t.since(WallTime::from_secs(90)), Duration::from_secs(10));
        assert_eq!(WallTime::from_secs(90).since(t), Duration::ZERO);
        assert_eq!(WallTime(i64::MAX).plus(Duration::from_secs(1)), WallTime(i64::MAX));
    }

    #[tokio::test(start_paused = true)]
    async fn virtual_clock_follows_paused_time_with_skew() {
        let base = VirtualClock::new(WallTime::from_secs(1_000), 0);
        let skewed = base.with_skew(-2_000);
        base.sleep(Duration::from_secs(60)).await;
        assert_eq!(base.now().as_secs(), 1_060);
        assert_eq!(skewed.now().as_secs(), 1_058);
    }
}
