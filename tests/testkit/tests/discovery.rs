//! Discovery against a fake ECS agent introspection endpoint that comes up late.

use std::time::Duration;

use agent::backoff::{Backoff, Jitter};
use agent::clock::{Clock, SystemClock, VirtualClock, WallTime};
use agent::discovery::{discover, Discovered, DiscoveryError};
use testkit::introspection::{Answer, FakeIntrospection};

const CLUSTER: &str = "prod";
const ARN: &str = "arn:aws:ecs:eu-central-1:123456789012:container-instance/prod/5f1e0c2b9d8a4c6e";

fn expected() -> Discovered {
    Discovered { cluster: CLUSTER.into(), instance_arn: ARN.into(), region: Some("eu-central-1".into()) }
}

fn virtual_clock() -> VirtualClock {
    VirtualClock::new(WallTime::from_secs(1_700_000_000), 0)
}

/// Wait on `clock` until the fake has answered `n` requests.
async fn answered<C: Clock>(clock: &C, fake: &FakeIntrospection, n: usize) {
    for _ in 0..100_000 {
        if fake.requests() >= n {
            return;
        }
        clock.sleep(Duration::from_millis(50)).await;
    }
    panic!("the fake endpoint never saw {n} requests (saw {})", fake.requests());
}

#[tokio::test(start_paused = true)]
async fn refused_then_unregistered_then_registered_on_paused_time() {
    let fake = FakeIntrospection::start(Answer::Refuse);
    let clock = virtual_clock();
    let start = clock.now();
    let jitter = Jitter::seeded(11);
    let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(8));
    let script = async {
        // The ECS agent starts 20 s late, then takes two polls to register.
        clock.sleep(Duration::from_secs(20)).await;
        assert_eq!(fake.requests(), 0, "nothing can reach a closed port");
        fake.set(Answer::unregistered(CLUSTER));
        answered(&clock, &fake, 2).await;
        fake.set(Answer::registered(CLUSTER, ARN));
    };
    let url = fake.url();
    let (found, ()) = tokio::join!(discover(&clock, &jitter, &url, backoff, Some(Duration::from_secs(600))), script);
    assert_eq!(found, Ok(expected()));
    assert!(fake.requests() >= 3, "two null-ARN answers and a good one, saw {}", fake.requests());
    assert!(clock.now().since(start) >= Duration::from_secs(20), "found before the agent was up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_then_unregistered_then_registered_on_real_time() {
    let fake = std::sync::Arc::new(FakeIntrospection::start(Answer::Refuse));
    let url = fake.url();
    let script = {
        let fake = fake.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            fake.set(Answer::unregistered(CLUSTER));
            let give_up = std::time::Instant::now() + Duration::from_secs(60);
            while fake.requests() < 2 && std::time::Instant::now() < give_up {
                std::thread::sleep(Duration::from_millis(5));
            }
            fake.set(Answer::registered(CLUSTER, ARN));
        })
    };
    let jitter = Jitter::seeded(5);
    let backoff = Backoff::new(Duration::from_millis(20), Duration::from_millis(200));
    // The deadline is only a safety net against a hang.
    let found = discover(&SystemClock, &jitter, &url, backoff, Some(Duration::from_secs(120))).await;
    script.join().expect("script thread");
    assert_eq!(found, Ok(expected()));
    assert!(fake.requests() >= 3, "saw {}", fake.requests());
}

#[tokio::test(start_paused = true)]
async fn a_deadline_ends_in_gave_up_with_the_last_reason() {
    let fake = FakeIntrospection::start(Answer::Refuse);
    let clock = virtual_clock();
    let start = clock.now();
    let jitter = Jitter::seeded(3);
    let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(4));
    let result = discover(&clock, &jitter, &fake.url(), backoff, Some(Duration::from_secs(30))).await;
    let elapsed = clock.now().since(start);
    match result {
        Err(DiscoveryError::GaveUp { attempts, last }) => {
            // Delays of 0.5-4 s over 30 s: at least 8 attempts, and the last one at the deadline.
            assert!(attempts >= 8, "only {attempts} attempts");
            assert!(last.contains("unreachable"), "last reason: {last}");
        }
        other => panic!("expected GaveUp, got {other:?}"),
    }
    assert!(elapsed >= Duration::from_secs(30), "gave up early, after {elapsed:?}");
    assert!(elapsed <= Duration::from_secs(31), "slept past the deadline: {elapsed:?}");
}

#[tokio::test(start_paused = true)]
async fn an_agent_that_never_registers_is_given_up_on() {
    let fake = FakeIntrospection::start(Answer::unregistered(CLUSTER));
    let clock = virtual_clock();
    let jitter = Jitter::seeded(4);
    let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(2));
    let result = discover(&clock, &jitter, &fake.url(), backoff, Some(Duration::from_secs(10))).await;
    match result {
        Err(DiscoveryError::GaveUp { attempts, last }) => {
            assert_eq!(attempts as usize, fake.requests(), "every attempt reached the endpoint");
            assert!(last.contains("not registered"), "last reason: {last}");
        }
        other => panic!("expected GaveUp, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_malformed_body_is_retried() {
    let fake = FakeIntrospection::start(Answer::Malformed);
    let clock = virtual_clock();
    let jitter = Jitter::seeded(8);
    let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(4));
    let script = async {
        answered(&clock, &fake, 3).await;
        fake.set(Answer::registered(CLUSTER, ARN));
    };
    let url = fake.url();
    let (found, ()) = tokio::join!(discover(&clock, &jitter, &url, backoff, Some(Duration::from_secs(300))), script);
    assert_eq!(found, Ok(expected()));
    assert!(fake.requests() >= 4, "three malformed answers and a good one, saw {}", fake.requests());
}

#[tokio::test(start_paused = true)]
async fn a_body_that_stays_malformed_says_so() {
    let fake = FakeIntrospection::start(Answer::Malformed);
    let clock = virtual_clock();
    let jitter = Jitter::seeded(9);
    let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(2));
    match discover(&clock, &jitter, &fake.url(), backoff, Some(Duration::from_secs(5))).await {
        Err(DiscoveryError::GaveUp { last, .. }) => assert!(last.contains("malformed"), "last reason: {last}"),
        other => panic!("expected GaveUp, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn error_statuses_are_retried_and_an_arn_cluster_is_kept_as_given() {
    let fake = FakeIntrospection::start(Answer::Raw { status: 503, body: "starting".into() });
    let clock = virtual_clock();
    let jitter = Jitter::seeded(10);
    let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(4));
    let cluster_arn = "arn:aws:ecs:eu-central-1:123456789012:cluster/prod";
    let script = async {
        answered(&clock, &fake, 2).await;
        fake.set(Answer::registered(cluster_arn, ARN));
    };
    let url = fake.url();
    let (found, ()) = tokio::join!(discover(&clock, &jitter, &url, backoff, Some(Duration::from_secs(300))), script);
    let found = found.expect("discovered after the 503s");
    assert_eq!(found.cluster, cluster_arn);
    assert_eq!(agent::discovery::cluster_name(&found.cluster), CLUSTER);
    assert_eq!(found.region.as_deref(), Some("eu-central-1"));
}

#[tokio::test]
async fn without_a_deadline_it_waits_for_the_agent() {
    let fake = FakeIntrospection::start(Answer::registered(CLUSTER, ARN));
    let jitter = Jitter::seeded(1);
    let backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(10));
    let found = discover(&SystemClock, &jitter, &fake.url(), backoff, None).await;
    assert_eq!(found, Ok(expected()));
    assert_eq!(fake.requests(), 1, "a ready agent is asked once");
}

#[tokio::test]
async fn an_invalid_url_is_not_retried() {
    let jitter = Jitter::seeded(1);
    let backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(10));
    let result = discover(&SystemClock, &jitter, "https://127.0.0.1:1/v1/metadata", backoff, None).await;
    assert!(matches!(result, Err(DiscoveryError::InvalidUrl { .. })), "{result:?}");
}

/// A store that never calls ECS here: only its view of the ECS agent's task list is used.
fn store_with_view(url: Option<&str>) -> agent::cluster::ecs::EcsStore {
    use aws_sdk_ecs::config::{BehaviorVersion, Region};
    let conf = aws_sdk_ecs::Config::builder().behavior_version(BehaviorVersion::latest()).region(Region::new("eu-central-1")).build();
    agent::cluster::ecs::EcsStore::new(aws_sdk_ecs::Client::from_conf(conf), CLUSTER.into(), ARN.into())
        .with_local_tasks(url.and_then(agent::discovery::tasks_url))
}

#[tokio::test]
async fn the_ecs_agents_task_list_is_read_beside_its_metadata() {
    use agent::cluster::{ClusterStore, LocalTasks};
    let listing = r#"{"Tasks":[
        {"Arn":"a","DesiredStatus":"STOPPED","KnownStatus":"RUNNING","Family":"web","Version":"3","Containers":[]},
        {"Arn":"b","DesiredStatus":"STOPPED","KnownStatus":"STOPPED","Family":"web","Version":"3","Containers":[]}]}"#;
    let source: testkit::introspection::TasksSource = std::sync::Arc::new(move || (200, listing.to_owned()));
    let fake = FakeIntrospection::start_with_tasks(Answer::registered(CLUSTER, ARN), Some(source));
    let store = store_with_view(Some(&fake.url()));
    assert_eq!(store.local_tasks().await, LocalTasks::Unstopped(1), "the stopped task is not counted");

    // An ECS agent without the list answers, but not with it: ECS is asked instead.
    let bare = FakeIntrospection::start(Answer::registered(CLUSTER, ARN));
    assert_eq!(store_with_view(Some(&bare.url())).local_tasks().await, LocalTasks::Unreadable);
    // Nothing listening: the ECS agent is down.
    bare.set(Answer::Refuse);
    assert_eq!(store_with_view(Some(&bare.url())).local_tasks().await, LocalTasks::Down);
    // No metadata URL of the usual shape, no view.
    assert_eq!(store_with_view(Some("http://127.0.0.1:1/somewhere")).local_tasks().await, LocalTasks::NoView);
    assert_eq!(store_with_view(None).local_tasks().await, LocalTasks::NoView);
}
