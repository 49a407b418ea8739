//! One agent's ECS calls spaced out in time.
//!
//! ECS throttles per account and region, with buckets shared by deployments, the console and
//! every ECS agent. An updater is a background job: the few calls of one step (a claim and its
//! count, the start of a drain) need not reach ECS within the same few milliseconds, and when
//! they do, several hosts stepping at once make the fleet's busiest second. [`Paced`] starts each
//! call of this agent at least `spacing` after the previous one started. The wait is capped, so
//! a renewal is never held back by more than [`MAX_WAIT_SPACINGS`] spacings (the configuration's
//! renewal margin counts them).

use std::cell::Cell;
use std::time::Duration;

use crate::clock::{Clock, WallTime};
use crate::cluster::{Attribute, ClusterError, ClusterSummary, ClusterStore, Desired, InstanceInfo, ListedTask, LocalTasks, SetStatus, TaskInfo};

/// The longest one call waits for its turn, in spacings: calls queued behind more (the agent
/// runs at most a renewal beside its main step) go out sooner rather than wait longer.
pub const MAX_WAIT_SPACINGS: u32 = 2;

/// A store whose calls start at least `spacing` apart.
pub struct Paced<S, K> {
    inner: S,
    clock: K,
    spacing: Duration,
    /// When the next call may start.
    next: Cell<WallTime>,
    /// Whether the next call goes out at once (it still books its turn).
    at_once: Cell<bool>,
}

impl<S, K: Clock> Paced<S, K> {
    /// `inner` with its calls spaced `spacing` apart on `clock` (zero: not spaced).
    pub fn new(inner: S, clock: K, spacing: Duration) -> Paced<S, K> {
        Paced { inner, clock, spacing, next: Cell::new(WallTime(i64::MIN)), at_once: Cell::new(false) }
    }

    /// The store underneath.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Waits for this call's turn. The turn is booked before the wait, so calls made meanwhile
    /// (a renewal beside a drain check) queue behind it; a clock set back cannot make a wait
    /// longer than the cap.
    async fn turn(&self) {
        if self.spacing.is_zero() {
            return;
        }
        let now = self.clock.now();
        let mut wait = self.next.get().since(now).min(self.spacing * MAX_WAIT_SPACINGS);
        if self.at_once.take() {
            wait = Duration::ZERO;
        }
        self.next.set(now.plus(wait).plus(self.spacing).max(self.next.get()));
        if !wait.is_zero() {
            self.clock.sleep(wait).await;
        }
    }
}

impl<S: ClusterStore, K: Clock> ClusterStore for Paced<S, K> {
    fn instance_arn(&self) -> &str {
        self.inner.instance_arn()
    }
    async fn list_attribute(&self, name: &str) -> Result<Vec<Attribute>, ClusterError> {
        self.turn().await;
        self.inner.list_attribute(name).await
    }
    async fn list_attribute_value(&self, name: &str, value: &str, enough: usize) -> Result<Vec<Attribute>, ClusterError> {
        self.turn().await;
        self.inner.list_attribute_value(name, value, enough).await
    }
    async fn put_attributes(&self, attrs: &[(String, String)]) -> Result<(), ClusterError> {
        self.turn().await;
        self.inner.put_attributes(attrs).await
    }
    async fn delete_attributes(&self, names: &[String]) -> Result<(), ClusterError> {
        self.turn().await;
        self.inner.delete_attributes(names).await
    }
    async fn describe_self(&self) -> Result<InstanceInfo, ClusterError> {
        self.turn().await;
        self.inner.describe_self().await
    }
    async fn set_status(&self, status: SetStatus) -> Result<(), ClusterError> {
        self.turn().await;
        self.inner.set_status(status).await
    }
    async fn task_arns(&self, desired: Desired) -> Result<Vec<String>, ClusterError> {
        self.turn().await;
        self.inner.task_arns(desired).await
    }
    async fn describe_tasks(&self, listed: &[ListedTask]) -> Result<Vec<TaskInfo>, ClusterError> {
        self.turn().await;
        self.inner.describe_tasks(listed).await
    }
    async fn draining_instances(&self) -> Result<Vec<String>, ClusterError> {
        self.turn().await;
        self.inner.draining_instances().await
    }
    async fn describe_cluster(&self) -> Result<ClusterSummary, ClusterError> {
        self.turn().await;
        self.inner.describe_cluster().await
    }
    // The ECS agent's local view costs ECS nothing: not spaced.
    async fn local_tasks(&self) -> LocalTasks {
        self.inner.local_tasks().await
    }
    fn next_call_at_once(&self) {
        self.at_once.set(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::VirtualClock;
    use std::cell::RefCell;

    /// A store that records when each call reached it.
    struct Stamps<'a> {
        clock: &'a VirtualClock,
        at: RefCell<Vec<i64>>,
    }

    impl ClusterStore for Stamps<'_> {
        fn instance_arn(&self) -> &str {
            "arn"
        }
        async fn list_attribute(&self, _: &str) -> Result<Vec<Attribute>, ClusterError> {
            self.at.borrow_mut().push(self.clock.now().0);
            Ok(vec![])
        }
        async fn list_attribute_value(&self, _: &str, _: &str, _: usize) -> Result<Vec<Attribute>, ClusterError> {
            unimplemented!("not called")
        }
        async fn put_attributes(&self, _: &[(String, String)]) -> Result<(), ClusterError> {
            self.at.borrow_mut().push(self.clock.now().0);
            Ok(())
        }
        async fn delete_attributes(&self, _: &[String]) -> Result<(), ClusterError> {
            unimplemented!("not called")
        }
        async fn describe_self(&self) -> Result<InstanceInfo, ClusterError> {
            unimplemented!("not called")
        }
        async fn set_status(&self, _: SetStatus) -> Result<(), ClusterError> {
            unimplemented!("not called")
        }
        async fn task_arns(&self, desired: Desired) -> Result<Vec<String>, ClusterError> {
            self.at.borrow_mut().push(self.clock.now().0);
            Ok(vec![format!("{desired:?}")])
        }
        async fn describe_tasks(&self, listed: &[ListedTask]) -> Result<Vec<TaskInfo>, ClusterError> {
            self.at.borrow_mut().push(self.clock.now().0);
            let task = |l: &ListedTask| TaskInfo { arn: l.arn.clone(), stopping: l.desired_stopped, started_by: None, group: None, family: None };
            Ok(listed.iter().map(task).collect())
        }
        async fn draining_instances(&self) -> Result<Vec<String>, ClusterError> {
            unimplemented!("not called")
        }
        async fn describe_cluster(&self) -> Result<ClusterSummary, ClusterError> {
            unimplemented!("not called")
        }
    }

    #[tokio::test(start_paused = true)]
    async fn calls_start_a_spacing_apart_and_a_quiet_agent_calls_at_once() {
        let clock = VirtualClock::new(WallTime(1_000_000), 0);
        let paced = Paced::new(Stamps { clock: &clock, at: RefCell::default() }, clock.clone(), Duration::from_millis(500));
        for _ in 0..3 {
            paced.list_attribute("x").await.expect("listed");
        }
        clock.sleep(Duration::from_secs(10)).await;
        paced.put_attributes(&[]).await.expect("put");
        assert_eq!(*paced.inner().at.borrow(), [1_000_000, 1_000_500, 1_001_000, 1_011_000]);
    }

    #[tokio::test(start_paused = true)]
    async fn calls_made_together_queue_and_no_wait_exceeds_the_cap() {
        let clock = VirtualClock::new(WallTime(0), 0);
        let paced = Paced::new(Stamps { clock: &clock, at: RefCell::default() }, clock.clone(), Duration::from_millis(500));
        let five = (0..5).map(|_| paced.list_attribute("x"));
        futures_util::future::join_all(five).await;
        // Booked 0, 500, 1000; the fourth and fifth would wait 1.5 s and 2 s: capped at 1 s.
        assert_eq!(*paced.inner().at.borrow(), [0, 500, 1_000, 1_000, 1_000]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_asked_at_once_skips_its_wait_and_the_next_waits_a_spacing_after_it() {
        let clock = VirtualClock::new(WallTime(0), 0);
        let paced = Paced::new(Stamps { clock: &clock, at: RefCell::default() }, clock.clone(), Duration::from_millis(500));
        paced.list_attribute("x").await.expect("listed");
        paced.next_call_at_once();
        paced.put_attributes(&[]).await.expect("put");
        paced.list_attribute("x").await.expect("listed");
        assert_eq!(*paced.inner().at.borrow(), [0, 0, 500]);
    }

    #[tokio::test(start_paused = true)]
    async fn each_call_of_a_task_listing_waits_its_turn() {
        let clock = VirtualClock::new(WallTime(0), 0);
        let paced = Paced::new(Stamps { clock: &clock, at: RefCell::default() }, clock.clone(), Duration::from_millis(500));
        let tasks = paced.running_tasks().await.expect("listed");
        let arns: Vec<(&str, bool)> = tasks.iter().map(|t| (t.arn.as_str(), t.stopping)).collect();
        assert_eq!(arns, [("Running", false), ("Stopped", true)]);
        paced.kept_running_tasks().await.expect("listed");
        // ListTasks RUNNING, ListTasks STOPPED, DescribeTasks; then ListTasks RUNNING, DescribeTasks.
        assert_eq!(*paced.inner().at.borrow(), [0, 500, 1_000, 1_500, 2_000]);
    }

    #[tokio::test(start_paused = true)]
    async fn zero_spacing_never_waits() {
        let clock = VirtualClock::new(WallTime(0), 0);
        let paced = Paced::new(Stamps { clock: &clock, at: RefCell::default() }, clock.clone(), Duration::ZERO);
        for _ in 0..3 {
            paced.list_attribute("x").await.expect("listed");
        }
        assert_eq!(*paced.inner().at.borrow(), [0, 0, 0]);
    }
}
