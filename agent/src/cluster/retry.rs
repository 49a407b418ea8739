//! Retrying ECS calls that failed for a reason that passes (throttling, 5xx, timeouts).

use std::future::Future;
use std::time::Duration;

use crate::backoff::{Backoff, Jitter};
use crate::clock::Clock;
use crate::cluster::ClusterError;

/// How long, and how far apart, one call is retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Give up once this much time has passed since the first try.
    pub budget: Duration,
    /// Delays between tries.
    pub backoff: Backoff,
}

/// Runs `op` until it succeeds, fails for good, or the budget is spent; `what` names it in logs.
pub async fn with_retry<T, F, Fut, K>(
    clock: &K,
    jitter: &Jitter,
    policy: &RetryPolicy,
    what: &str,
    mut op: F,
) -> Result<T, ClusterError>
where
    K: Clock,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ClusterError>>,
{
    let start = clock.now();
    let mut attempt = 0;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_retryable() => {
                let delay = policy.backoff.delay(attempt, jitter);
                if clock.now().since(start) + delay > policy.budget {
                    tracing::warn!(call = what, attempts = attempt + 1, error = %e, "giving up: retry budget spent");
                    return Err(e);
                }
                tracing::info!(call = what, attempt = attempt + 1, delay_ms = delay.as_millis() as u64, error = %e, "retrying ECS call");
                clock.sleep(delay).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{VirtualClock, WallTime};
    use std::cell::Cell;

    fn policy() -> RetryPolicy {
        RetryPolicy { budget: Duration::from_secs(60), backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(8)) }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_throttling_then_succeeds() {
        let clock = VirtualClock::new(WallTime::from_secs(0), 0);
        let calls = Cell::new(0);
        let r = with_retry(&clock, &Jitter::seeded(1), &policy(), "test", || {
            calls.set(calls.get() + 1);
            let n = calls.get();
            async move {
                if n < 4 {
                    Err(ClusterError::Throttled { op: "ListAttributes", message: "Rate exceeded".into() })
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(r, Ok(4));
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_when_the_budget_is_spent_and_never_retries_rejections() {
        let clock = VirtualClock::new(WallTime::from_secs(0), 0);
        let calls = Cell::new(0u32);
        let r: Result<(), _> = with_retry(&clock, &Jitter::seeded(1), &policy(), "test", || {
            calls.set(calls.get() + 1);
            async { Err(ClusterError::Unavailable { op: "PutAttributes", message: "503".into() }) }
        })
        .await;
        assert!(matches!(r, Err(ClusterError::Unavailable { .. })));
        assert!(clock.now().since(WallTime::from_secs(0)) <= Duration::from_secs(60));
        assert!(calls.get() > 3, "retried {} times", calls.get());
        calls.set(0);
        let r: Result<(), _> = with_retry(&clock, &Jitter::seeded(1), &policy(), "test", || {
            calls.set(calls.get() + 1);
            async { Err(ClusterError::Rejected { op: "PutAttributes", code: "InvalidParameterException".into(), message: "x".into() }) }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls.get(), 1);
    }
}
