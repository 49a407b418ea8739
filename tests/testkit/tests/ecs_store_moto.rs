//! `EcsStore` against the patched moto ECS server: every `ClusterStore` method, paging, limits,
//! error mapping and the drain (tasks still stopping included), counting the real ECS calls each
//! one makes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use agent::cluster::ecs::{EcsStore, EcsTimeouts};
use agent::cluster::{ClusterError, ClusterStore, InstanceStatus, SetStatus, TaskInfo};
use testkit::moto::{Faults, MotoServer, Seeded};

const LEASE: &str = "br-update.lease";

fn moto() -> MotoServer {
    MotoServer::start().unwrap_or_else(|e| panic!("{e}"))
}

fn seed(moto: &MotoServer, cluster: &str, instances: usize) -> Seeded {
    moto.seed(cluster, instances, &[]).unwrap_or_else(|e| panic!("seeding {cluster}: {e}"))
}

fn store(moto: &MotoServer, cluster: &str, instance: &str) -> EcsStore {
    EcsStore::new(moto.ecs_client(), cluster.to_owned(), instance.to_owned())
}

fn pair(name: &str, value: &str) -> (String, String) {
    (name.to_owned(), value.to_owned())
}

/// Calls of `op` since the last reset of the counts.
fn calls(moto: &MotoServer, op: &str) -> u64 {
    moto.calls().expect("call counts").of(op)
}

fn total_calls(moto: &MotoServer) -> u64 {
    moto.calls().expect("call counts").total
}

fn reset_calls(moto: &MotoServer) {
    moto.reset_calls().expect("reset call counts");
}

/// Put `LEASE = value-<i>` on each instance, each through its own store.
async fn put_leases(moto: &MotoServer, cluster: &str, instances: &[String]) {
    for (i, arn) in instances.iter().enumerate() {
        store(moto, cluster, arn).put_attributes(&[pair(LEASE, &format!("value-{i}"))]).await.expect("put lease");
    }
}

#[tokio::test]
async fn list_attribute_filters_by_name_and_cluster() {
    let moto = moto();
    let c1 = seed(&moto, "c1", 3);
    let c2 = seed(&moto, "c2", 2);
    put_leases(&moto, "c1", &c1.instances).await;
    put_leases(&moto, "c2", &c2.instances).await;
    store(&moto, "c1", &c1.instances[0]).put_attributes(&[pair("other", "x")]).await.expect("put other");
    reset_calls(&moto);

    let listed = store(&moto, "c1", &c1.instances[0]).list_attribute(LEASE).await.expect("list");

    let mut targets: Vec<_> = listed.iter().map(|a| a.target.clone()).collect();
    targets.sort();
    let mut expected = c1.instances.clone();
    expected.sort();
    assert_eq!(targets, expected, "exactly c1's instances, none of c2's");
    assert!(listed.iter().all(|a| a.name == LEASE), "{listed:?}");
    for a in &listed {
        let i = c1.instances.iter().position(|t| *t == a.target).expect("a c1 target");
        assert_eq!(a.value.as_deref(), Some(format!("value-{i}").as_str()));
    }
    assert_eq!(calls(&moto, "ListAttributes"), 1);
    let none = store(&moto, "c2", &c2.instances[0]).list_attribute("absent").await.expect("list absent");
    assert!(none.is_empty(), "{none:?}");
}

#[tokio::test]
async fn a_listing_by_value_stops_at_enough_and_the_instance_count_is_one_call() {
    let moto = moto();
    let seeded = seed(&moto, "marks", 30);
    for (i, arn) in seeded.instances.iter().enumerate() {
        let version = if i % 3 == 0 { "1.27.0" } else { "1.26.0" };
        store(&moto, "marks", arn).put_attributes(&[pair("br-update.updated", version)]).await.expect("put marker");
    }
    let me = &seeded.instances[1];

    reset_calls(&moto);
    let all = store(&moto, "marks", me).list_attribute_value("br-update.updated", "1.27.0", usize::MAX).await.expect("list by value");
    assert_eq!(all.len(), 10, "only the instances whose value matches: {all:?}");
    assert!(all.iter().all(|a| a.value.as_deref() == Some("1.27.0")));
    assert_eq!(calls(&moto, "ListAttributes"), 1);

    reset_calls(&moto);
    let some = store(&moto, "marks", me).with_page_size(3).list_attribute_value("br-update.updated", "1.27.0", 2).await.expect("enough");
    assert_eq!((some.len(), calls(&moto, "ListAttributes")), (3, 1), "one page of 3 already holds the 2 asked for");
    reset_calls(&moto);
    let every = store(&moto, "marks", me).with_page_size(3).list_attribute_value("br-update.updated", "1.27.0", 10).await.expect("all");
    assert_eq!((every.len(), calls(&moto, "ListAttributes")), (10, 4), "ceil(10 / 3) pages");

    reset_calls(&moto);
    assert_eq!(store(&moto, "marks", me).describe_cluster().await.expect("count").registered_instances, 30);
    assert_eq!(calls(&moto, "DescribeClusters"), 1);
}

#[tokio::test]
async fn list_attribute_follows_every_page() {
    let moto = moto();
    let seeded = seed(&moto, "big", 130);
    put_leases(&moto, "big", &seeded.instances).await;
    let me = &seeded.instances[0];

    reset_calls(&moto);
    let all = store(&moto, "big", me).list_attribute(LEASE).await.expect("list at the default page size");
    assert_eq!(all.len(), 130);
    assert_eq!(calls(&moto, "ListAttributes"), 2, "100 + 30");

    reset_calls(&moto);
    let small = store(&moto, "big", me).with_page_size(7).list_attribute(LEASE).await.expect("list by 7");
    assert_eq!(small.len(), 130);
    assert_eq!(calls(&moto, "ListAttributes"), 19, "ceil(130 / 7) pages");
    let mut distinct: Vec<_> = small.iter().map(|a| a.target.clone()).collect();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 130, "no page repeated or skipped");

    reset_calls(&moto);
    let capped = store(&moto, "big", me).with_page_size(5).with_max_pages(2).list_attribute(LEASE).await;
    match capped {
        Err(e @ ClusterError::Incomplete { op: "ListAttributes", .. }) => assert!(!e.is_retryable()),
        other => panic!("a listing cut at the page cap must be Incomplete, not short: {other:?}"),
    }
    assert_eq!(calls(&moto, "ListAttributes"), 2, "no page beyond the cap");
}

#[tokio::test]
async fn put_overwrites_and_a_value_less_delete_really_deletes() {
    let moto = moto();
    let seeded = seed(&moto, "c1", 2);
    let me = store(&moto, "c1", &seeded.instances[0]);

    me.put_attributes(&[pair(LEASE, "holder-a:1")]).await.expect("first put");
    me.put_attributes(&[pair(LEASE, "holder-b:2")]).await.expect("overwrite");
    let listed = me.list_attribute(LEASE).await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].target, seeded.instances[0], "written to the store's own instance only");
    assert_eq!(listed[0].value.as_deref(), Some("holder-b:2"));
    let own = me.describe_self().await.expect("describe");
    assert_eq!(own.attributes.get(LEASE).map(String::as_str), Some("holder-b:2"));

    reset_calls(&moto);
    me.delete_attributes(&[LEASE.to_owned()]).await.expect("delete");
    assert_eq!(calls(&moto, "DeleteAttributes"), 1);
    assert!(me.list_attribute(LEASE).await.expect("list after delete").is_empty());
    assert!(!me.describe_self().await.expect("describe").attributes.contains_key(LEASE));
    me.delete_attributes(&[LEASE.to_owned()]).await.expect("deleting a missing attribute is no error");
}

#[tokio::test]
async fn writes_go_in_chunks_of_ten_and_the_eleventh_attribute_is_refused() {
    let moto = moto();
    let seeded = seed(&moto, "c1", 1);
    let me = store(&moto, "c1", &seeded.instances[0]);
    let ten: Vec<_> = (0..10).map(|i| pair(&format!("a{i}"), "v")).collect();

    reset_calls(&moto);
    me.put_attributes(&ten).await.expect("ten custom attributes fit");
    assert_eq!(calls(&moto, "PutAttributes"), 1);
    me.put_attributes(&[pair("a3", "overwritten")]).await.expect("overwriting at the limit is allowed");

    let refused = me.put_attributes(&[pair("a10", "v")]).await;
    match refused {
        Err(ClusterError::Rejected { code, .. }) => assert_eq!(code, "AttributeLimitExceededException"),
        other => panic!("expected the attribute limit, got {other:?}"),
    }

    let names: Vec<String> = (0..12).map(|i| format!("a{i}")).collect();
    reset_calls(&moto);
    me.delete_attributes(&names).await.expect("delete twelve, two of them missing");
    assert_eq!(calls(&moto, "DeleteAttributes"), 2, "10 + 2");
    let twelve: Vec<_> = (0..12).map(|i| pair(&format!("b{i}"), "v")).collect();
    reset_calls(&moto);
    let over = me.put_attributes(&twelve).await;
    assert!(
        matches!(&over, Err(ClusterError::Rejected { code, .. }) if code == "AttributeLimitExceededException"),
        "{over:?}"
    );
    assert_eq!(calls(&moto, "PutAttributes"), 2, "the first ten went through, the rest were refused");
    assert_eq!(
        me.describe_self().await.expect("describe").attributes.keys().filter(|k| k.starts_with('b')).count(),
        10
    );
}

#[tokio::test]
async fn an_invalid_value_is_rejected_and_nothing_is_written() {
    let moto = moto();
    let seeded = seed(&moto, "c1", 1);
    let me = store(&moto, "c1", &seeded.instances[0]);
    for bad in ["a=b", " leading", "{\"json\":1}", &"x".repeat(129)] {
        match me.put_attributes(&[pair(LEASE, bad)]).await {
            Err(ClusterError::Rejected { code, op, .. }) => {
                assert_eq!(code, "InvalidParameterException", "value {bad:?}");
                assert_eq!(op, "PutAttributes");
            }
            other => panic!("value {bad:?}: expected a rejection, got {other:?}"),
        }
    }
    assert!(me.list_attribute(LEASE).await.expect("list").is_empty());
}

#[tokio::test]
async fn describe_self_reports_status_agent_tasks_and_attributes() {
    let moto = moto();
    let seeded = seed(&moto, "c1", 2);
    let arn = &seeded.instances[0];
    moto.add_tasks("c1", arn, Some("ecs-svc/1234567890"), 2).expect("tasks");
    moto.add_tasks("c1", &seeded.instances[1], None, 1).expect("tasks elsewhere");
    let me = store(&moto, "c1", arn);

    reset_calls(&moto);
    let info = me.describe_self().await.expect("describe");
    assert_eq!(calls(&moto, "DescribeContainerInstances"), 1);
    assert_eq!(&info.arn, arn);
    assert_eq!(info.status, InstanceStatus::Active);
    assert!(info.agent_connected);
    assert_eq!(info.running_tasks, 2, "only this instance's tasks");
    assert_eq!(info.attributes.get("ecs.os-type").map(String::as_str), Some("linux"));

    moto.set_instance_status("c1", arn, "REGISTERING").expect("force status");
    assert_eq!(me.describe_self().await.expect("describe").status, InstanceStatus::Other("REGISTERING".into()));
    match me.set_status(SetStatus::Draining).await {
        Err(ClusterError::Rejected { code, op, .. }) => {
            assert_eq!(code, "INVALID_STATUS");
            assert_eq!(op, "UpdateContainerInstancesState");
        }
        other => panic!("a REGISTERING instance cannot drain, got {other:?}"),
    }

    let gone = arn.rsplit_once('/').map(|(head, _)| format!("{head}/00000000000000000000000000000000"));
    let ghost = store(&moto, "c1", &gone.expect("an ARN with an id"));
    match ghost.describe_self().await {
        Err(ClusterError::Rejected { code, .. }) => assert_eq!(code, "MISSING"),
        other => panic!("expected MISSING, got {other:?}"),
    }
}

#[tokio::test]
async fn describe_self_reads_the_instance_health_and_the_failing_checks_reason() {
    let moto = moto();
    let seeded = seed(&moto, "c1", 2);
    let arn = &seeded.instances[0];
    let me = store(&moto, "c1", arn);

    let healthy = me.describe_self().await.expect("describe").health.expect("health, asked for with include");
    assert_eq!(healthy.overall, "OK");
    assert!(!healthy.is_impaired() && !healthy.is_initializing());
    assert!(healthy.reasons.is_empty(), "a passing check is no reason: {healthy:?}");

    moto.set_instance_health("c1", arn, "IMPAIRED", "CONTAINER_RUNTIME", Some("docker not responding"))
        .expect("impair");
    reset_calls(&moto);
    let impaired = me.describe_self().await.expect("describe").health.expect("health");
    assert_eq!(calls(&moto, "DescribeContainerInstances"), 1, "the health comes with the one describe");
    assert!(impaired.is_impaired(), "{impaired:?}");
    assert_eq!(impaired.reasons, ["CONTAINER_RUNTIME IMPAIRED: docker not responding"]);
    let other = store(&moto, "c1", &seeded.instances[1]).describe_self().await.expect("describe other");
    assert_eq!(other.health.map(|h| h.overall).as_deref(), Some("OK"), "only the instance named");

    moto.set_instance_health("c1", arn, "INITIALIZING", "AGENT_CONNECTIVITY", None).expect("initializing");
    let waiting = me.describe_self().await.expect("describe").health.expect("health");
    assert!(waiting.is_initializing(), "{waiting:?}");
    assert!(
        waiting.reasons.len() == 1 && waiting.reasons[0].starts_with("AGENT_CONNECTIVITY INITIALIZING"),
        "{waiting:?}"
    );

    moto.set_instance_health("c1", arn, "OK", "CONTAINER_RUNTIME", None).expect("clear");
    let cleared = me.describe_self().await.expect("describe").health.expect("health");
    assert_eq!((cleared.overall.as_str(), cleared.reasons.len()), ("OK", 0));
}

#[tokio::test]
async fn draining_stops_only_the_service_tasks_after_the_delay() {
    let moto = moto();
    let seeded = seed(&moto, "c1", 1);
    let arn = &seeded.instances[0];
    let service = moto.add_tasks("c1", arn, Some("ecs-svc/9876543210"), 2).expect("service tasks");
    let standalone = moto.add_tasks("c1", arn, Some("nightly-batch"), 1).expect("standalone task");
    let drain_delay = Duration::from_millis(400);
    moto.set_faults(&Faults { drain_delay_ms: drain_delay.as_millis() as u64, ..Faults::default() })
        .expect("drain delay");
    let me = store(&moto, "c1", arn);

    let before = me.running_tasks().await.expect("tasks before");
    assert_eq!(before.len(), 3);
    assert_eq!(before.iter().filter(|t| t.is_service_task()).count(), 2, "{before:?}");
    for t in &before {
        assert_eq!(t.is_service_task(), service.contains(&t.arn), "{t:?}");
    }

    let drained_at = Instant::now();
    me.set_status(SetStatus::Draining).await.expect("drain");
    assert_eq!(me.describe_self().await.expect("describe").status, InstanceStatus::Draining);
    let remaining = loop {
        let tasks = me.running_tasks().await.expect("tasks while draining");
        if tasks.len() < 3 {
            break tasks;
        }
        assert!(drained_at.elapsed() < Duration::from_secs(60), "the service tasks never stopped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(drained_at.elapsed() >= drain_delay, "stopped before the drain delay");
    assert_eq!(remaining.len(), 1, "{remaining:?}");
    assert_eq!(remaining[0].arn, standalone[0]);
    assert_eq!(remaining[0].started_by.as_deref(), Some("nightly-batch"));
    assert!(!remaining[0].is_service_task());
    assert_eq!(me.describe_self().await.expect("describe").running_tasks, 1);

    me.set_status(SetStatus::Active).await.expect("reactivate");
    assert_eq!(me.describe_self().await.expect("describe").status, InstanceStatus::Active);
}

#[tokio::test]
async fn running_tasks_pages_through_list_tasks_and_describes_in_hundreds() {
    let moto = moto();
    let seeded = seed(&moto, "c1", 2);
    let arn = &seeded.instances[0];
    let mut started = moto.add_tasks("c1", arn, Some("ecs-svc/1"), 70).expect("service tasks");
    started.extend(moto.add_tasks("c1", arn, None, 60).expect("standalone tasks"));
    moto.add_tasks("c1", &seeded.instances[1], None, 5).expect("tasks elsewhere");

    reset_calls(&moto);
    let tasks = store(&moto, "c1", arn).running_tasks().await.expect("tasks");
    assert_eq!(calls(&moto, "ListTasks"), 3, "desired RUNNING: 100 + 30; desired STOPPED: one empty page");
    assert_eq!(calls(&moto, "DescribeTasks"), 2, "100 + 30");
    let mut got: Vec<_> = tasks.iter().map(|t| t.arn.clone()).collect();
    got.sort();
    started.sort();
    assert_eq!(got, started, "exactly this instance's tasks");
    assert_eq!(tasks.iter().filter(|t| t.is_service_task()).count(), 70);

    assert!(tasks.iter().all(|t| !t.stopping), "{tasks:?}");

    reset_calls(&moto);
    let small = store(&moto, "c1", arn).with_page_size(40).running_tasks().await.expect("tasks by 40");
    assert_eq!(small.len(), 130);
    assert_eq!(calls(&moto, "ListTasks"), 5, "4 pages desired RUNNING, 1 desired STOPPED");
}

#[tokio::test]
async fn a_stopping_task_counts_until_its_last_status_is_stopped() {
    let moto = moto();
    let seeded = seed(&moto, "c1", 1);
    let arn = &seeded.instances[0];
    let service = moto.add_tasks("c1", arn, Some("ecs-svc/1"), 2).expect("service tasks");
    let standalone = moto.add_tasks("c1", arn, None, 1).expect("standalone task");
    let me = store(&moto, "c1", arn);
    let by_arn = |tasks: &[TaskInfo]| -> BTreeMap<String, TaskInfo> {
        tasks.iter().map(|t| (t.arn.clone(), t.clone())).collect()
    };

    // The scheduler replaces one service task: desired STOPPED, still running (deregistration delay).
    moto.set_task_status("c1", &service[0], "RUNNING").expect("stopping");
    reset_calls(&moto);
    let tasks = by_arn(&me.running_tasks().await.expect("tasks"));
    assert_eq!((calls(&moto, "ListTasks"), calls(&moto, "DescribeTasks")), (2, 1));
    assert_eq!(tasks.len(), 3, "{tasks:?}");
    let stopping = &tasks[&service[0]];
    assert!(stopping.stopping && stopping.is_service_task(), "{stopping:?}");
    assert!(!tasks[&service[1]].stopping && !tasks[&standalone[0]].stopping, "{tasks:?}");
    assert!(!tasks[&standalone[0]].is_service_task());
    // What the drain check used to read said one task fewer: runningTasksCount and ListTasks
    // count desired RUNNING only.
    assert_eq!(me.describe_self().await.expect("describe").running_tasks, 2);
    let desired_running = moto
        .ecs_client()
        .list_tasks()
        .cluster("c1")
        .container_instance(arn)
        .send()
        .await
        .expect("ListTasks desired RUNNING");
    assert!(!desired_running.task_arns().contains(&service[0]), "{desired_running:?}");

    moto.set_task_status("c1", &service[0], "DEPROVISIONING").expect("still stopping");
    assert!(by_arn(&me.running_tasks().await.expect("tasks"))[&service[0]].stopping);

    moto.set_task_status("c1", &service[0], "STOPPED").expect("stopped");
    let tasks = by_arn(&me.running_tasks().await.expect("tasks"));
    assert_eq!(tasks.keys().cloned().collect::<Vec<_>>(), {
        let mut left = vec![service[1].clone(), standalone[0].clone()];
        left.sort();
        left
    });
}

#[tokio::test]
async fn a_drain_is_done_only_when_the_stopping_service_tasks_have_stopped() {
    let moto = moto();
    let seeded = seed(&moto, "c1", 1);
    let arn = &seeded.instances[0];
    let service = moto.add_tasks("c1", arn, Some("ecs-svc/1"), 2).expect("service tasks");
    let standalone = moto.add_tasks("c1", arn, Some("nightly-batch"), 1).expect("standalone task");
    let stop_delay = Duration::from_millis(1_500);
    moto.set_faults(&Faults { stop_delay_ms: stop_delay.as_millis() as u64, ..Faults::default() }).expect("faults");
    let me = store(&moto, "c1", arn);

    let drained_at = Instant::now();
    me.set_status(SetStatus::Draining).await.expect("drain");
    let first = me.running_tasks().await.expect("tasks right after the drain");
    if drained_at.elapsed() < stop_delay {
        assert_eq!(first.len(), 3, "the service tasks are still stopping: {first:?}");
        for t in &first {
            assert_eq!(t.stopping, service.contains(&t.arn), "{t:?}");
        }
        assert_eq!(me.describe_self().await.expect("describe").running_tasks, 1, "desired RUNNING only");
    }
    let remaining = loop {
        let tasks = me.running_tasks().await.expect("tasks while draining");
        if tasks.len() < 3 {
            break tasks;
        }
        assert!(drained_at.elapsed() < Duration::from_secs(60), "the service tasks never stopped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(drained_at.elapsed() >= stop_delay, "counted as stopped before the stop delay");
    assert_eq!(remaining.iter().map(|t| t.arn.clone()).collect::<Vec<_>>(), standalone, "{remaining:?}");
    assert!(!remaining[0].stopping);
}

#[tokio::test]
async fn draining_instances_lists_exactly_the_draining_ones_across_pages() {
    let moto = moto();
    let c1 = seed(&moto, "c1", 12);
    let c2 = seed(&moto, "c2", 2);
    let mut draining: Vec<String> = c1.instances.iter().step_by(2).take(5).cloned().collect();
    draining.extend(c1.instances[9..11].iter().cloned());
    for arn in &draining {
        store(&moto, "c1", arn).set_status(SetStatus::Draining).await.expect("drain");
    }
    moto.set_instance_status("c1", &c1.instances[11], "REGISTERING").expect("force status");
    store(&moto, "c2", &c2.instances[0]).set_status(SetStatus::Draining).await.expect("drain in c2");
    draining.sort();
    let me = &c1.instances[1];

    reset_calls(&moto);
    let mut by_three = store(&moto, "c1", me).with_page_size(3).draining_instances().await.expect("by 3");
    by_three.sort();
    assert_eq!(by_three, draining, "c1's seven DRAINING instances, none of c2's");
    assert_eq!(calls(&moto, "ListContainerInstances"), 3, "3 + 3 + 1");

    reset_calls(&moto);
    let mut whole = store(&moto, "c1", me).draining_instances().await.expect("default page");
    whole.sort();
    assert_eq!(whole, draining);
    assert_eq!(calls(&moto, "ListContainerInstances"), 1);

    store(&moto, "c1", &draining[0]).set_status(SetStatus::Active).await.expect("reactivate");
    let after = store(&moto, "c1", me).with_page_size(2).draining_instances().await.expect("by 2");
    assert_eq!(after.len(), 6);
    assert!(!after.contains(&draining[0]));
}

#[tokio::test]
async fn page_caps_make_every_listing_incomplete_rather_than_short() {
    let moto = moto();
    let seeded = seed(&moto, "c1", 4);
    let me = &seeded.instances[0];
    put_leases(&moto, "c1", &seeded.instances).await;
    moto.add_tasks("c1", me, Some("ecs-svc/1"), 3).expect("tasks");
    for arn in &seeded.instances[1..] {
        store(&moto, "c1", arn).set_status(SetStatus::Draining).await.expect("drain");
    }
    let capped = || store(&moto, "c1", me).with_page_size(2).with_max_pages(1);
    let incomplete = |what: &str, op: &str, got: Result<usize, ClusterError>| match got {
        Err(ClusterError::Incomplete { op: got_op, .. }) => assert_eq!(got_op, op, "{what}"),
        other => panic!("{what}: expected Incomplete, got {other:?}"),
    };

    reset_calls(&moto);
    incomplete("list_attribute", "ListAttributes", capped().list_attribute(LEASE).await.map(|v| v.len()));
    incomplete("running_tasks", "ListTasks", capped().running_tasks().await.map(|v| v.len()));
    incomplete("draining_instances", "ListContainerInstances", capped().draining_instances().await.map(|v| v.len()));
    assert_eq!(moto.calls().expect("calls").total, 3, "one page each, then give up");

    // A listing that fits the cap exactly is whole.
    let fits = store(&moto, "c1", me).with_page_size(3).with_max_pages(1);
    assert_eq!(fits.draining_instances().await.expect("three fit in one page").len(), 3);
    assert_eq!(fits.running_tasks().await.expect("three fit in one page").len(), 3);
}

/// The tags and the instance count come in one DescribeClusters, whether the store was given
/// the cluster's name or its ARN, and a change of the tags shows at the next read. An unknown
/// cluster (a MISSING failure in a successful answer) is refused, not read as untagged.
#[tokio::test]
async fn the_cluster_summary_is_one_describe_with_the_tags() {
    let moto = moto();
    let seeded = moto.seed("c1", 3, &[("br-update/max-parallel", "2"), ("team", "infra")]).expect("seed");
    let me = store(&moto, "c1", &seeded.instances[0]);

    reset_calls(&moto);
    let summary = me.describe_cluster().await.expect("summary");
    let expected: BTreeMap<String, String> = [("br-update/max-parallel", "2"), ("team", "infra")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!((summary.tags, summary.registered_instances), (expected, 3));
    moto.set_tags("c1", &[("br-update/max-parallel", "5")], &["team"]).expect("change tags");
    let by_arn = EcsStore::new(moto.ecs_client(), seeded.cluster_arn.clone(), seeded.instances[0].clone());
    let changed = by_arn.describe_cluster().await.expect("summary by ARN").tags;
    assert_eq!(changed.get("br-update/max-parallel").map(String::as_str), Some("5"));
    assert!(!changed.contains_key("team"));
    assert_eq!((calls(&moto, "DescribeClusters"), total_calls(&moto)), (2, 2), "one call each");

    let unknown = EcsStore::new(moto.ecs_client(), "nope".into(), seeded.instances[0].clone());
    let refused = unknown.describe_cluster().await.expect_err("an unknown cluster");
    assert!(matches!(&refused, ClusterError::Rejected { op: "DescribeClusters", code, .. } if code == "MISSING"), "{refused:?}");
}

#[tokio::test]
async fn throttling_is_throttled_and_the_sdk_does_not_retry() {
    let moto = moto();
    let seeded = seed(&moto, "c1", 1);
    let me = store(&moto, "c1", &seeded.instances[0]);
    moto.set_faults(&Faults { throttle_every: 2, ..Faults::default() }).expect("faults");
    reset_calls(&moto);

    me.list_attribute(LEASE).await.expect("the first call passes");
    let err = me.list_attribute(LEASE).await.expect_err("the second call is throttled");
    assert!(matches!(err, ClusterError::Throttled { op: "ListAttributes", .. }), "{err:?}");
    assert!(err.is_retryable());
    assert_eq!(moto.calls().expect("calls").total, 2, "one request per call: no SDK retries");
}

#[tokio::test]
async fn a_server_error_is_unavailable() {
    let moto = moto();
    let seeded = seed(&moto, "c1", 1);
    let me = store(&moto, "c1", &seeded.instances[0]);
    moto.set_faults(&Faults { unavailable: true, ..Faults::default() }).expect("faults");
    reset_calls(&moto);

    let err = me.describe_self().await.expect_err("ECS is down");
    assert!(matches!(err, ClusterError::Unavailable { op: "DescribeContainerInstances", .. }), "{err:?}");
    assert!(err.is_retryable());
    let err = me.put_attributes(&[pair(LEASE, "v")]).await.expect_err("ECS is down");
    assert!(matches!(err, ClusterError::Unavailable { .. }), "{err:?}");
    assert_eq!(moto.calls().expect("calls").total, 2, "no SDK retries");

    moto.set_faults(&Faults::default()).expect("clear faults");
    me.describe_self().await.expect("ECS is back");
}

#[tokio::test]
async fn a_slow_answer_times_out_as_unavailable() {
    let moto = moto();
    let seeded = seed(&moto, "c1", 1);
    moto.set_faults(&Faults { latency_ms: 3_000, ..Faults::default() }).expect("faults");
    let timeouts = EcsTimeouts { connect: Duration::from_secs(5), operation: Duration::from_millis(300) };
    let me = EcsStore::new(moto.ecs_client_with(timeouts), "c1".into(), seeded.instances[0].clone());
    let err = me.describe_self().await.expect_err("too slow");
    assert!(matches!(err, ClusterError::Unavailable { .. }), "{err:?}");
}

#[tokio::test]
async fn a_closed_port_is_unavailable() {
    let moto = moto();
    let seeded = seed(&moto, "c1", 1);
    let client = moto.ecs_client();
    let arn = seeded.instances[0].clone();
    drop(moto);
    let me = EcsStore::new(client, "c1".into(), arn);
    let err = me.list_attribute(LEASE).await.expect_err("nothing listens");
    assert!(matches!(err, ClusterError::Unavailable { .. }), "{err:?}");
}

#[tokio::test]
async fn an_unknown_cluster_is_rejected() {
    let moto = moto();
    let seeded = seed(&moto, "c1", 1);
    let me = store(&moto, "nope", &seeded.instances[0]);
    match me.list_attribute(LEASE).await {
        Err(ClusterError::Rejected { code, .. }) => assert_eq!(code, "ClusterNotFoundException"),
        other => panic!("expected ClusterNotFoundException, got {other:?}"),
    }
    assert!(!me.put_attributes(&[pair(LEASE, "v")]).await.expect_err("no such cluster").is_retryable());
}
