//! Shutdown as a value: SIGTERM/SIGINT in production, a call in tests.
//!
//! Long waits select on [`Shutdown::wait`] so a signal stops the agent at a safe point: between
//! steps, never in the middle of writing a record.

use tokio::sync::watch;

/// Fires the shutdown.
#[derive(Debug)]
pub struct Trigger(watch::Sender<bool>);

impl Trigger {
    /// Asks every holder of the matching [`Shutdown`] to stop.
    pub fn fire(&self) {
        self.0.send_replace(true);
    }
}

/// Observes the shutdown; cheap to clone.
#[derive(Clone, Debug)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// A new trigger and its observer.
    pub fn new() -> (Trigger, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (Trigger(tx), Shutdown(rx))
    }
    /// A shutdown that never fires.
    pub fn never() -> Shutdown {
        let (tx, rx) = watch::channel(false);
        // Keep the sender alive for the life of the process so `wait` pends instead of ending.
        std::mem::forget(tx);
        Shutdown(rx)
    }
    /// Whether shutdown was asked for.
    pub fn requested(&self) -> bool {
        *self.0.borrow()
    }
    /// Resolves once shutdown is asked for (or its trigger is gone).
    pub async fn wait(&self) {
        let mut rx = self.0.clone();
        let _ = rx.wait_for(|fired| *fired).await;
    }
}

/// SIGTERM and SIGINT, caught from the moment this returns (so none is lost at start-up).
pub fn install() -> std::io::Result<signal_hook_tokio::Signals> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    signal_hook_tokio::Signals::new([SIGTERM, SIGINT])
}

/// Fires `trigger` on the first signal caught by `signals`, logging which one.
pub async fn forward(mut signals: signal_hook_tokio::Signals, trigger: Trigger) {
    use futures_util::StreamExt;
    if let Some(sig) = signals.next().await {
        let name = if sig == signal_hook::consts::SIGTERM { "SIGTERM" } else { "SIGINT" };
        tracing::info!(signal = name, "shutdown requested");
        trigger.fire();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fires_once_for_every_observer() {
        let (t, s) = Shutdown::new();
        let s2 = s.clone();
        assert!(!s.requested());
        t.fire();
        s.wait().await;
        s2.wait().await;
        assert!(s2.requested());
    }
}
