//! `br-update-agent fleet ...` run as a process against the patched moto server, with the AWS
//! settings an operator's shell would have (endpoint, region and static credentials in the
//! environment): the status of a fleet seeded in every state (table, JSON and a golden JSON
//! shape), the ECS calls one read costs, each control's real effect, the refusals, and a watch
//! that marks changed rows and ends with exit 0 on Ctrl-C.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_ecs::types::{Attribute, ContainerInstanceStatus, TargetType};
use serde_json::Value;
use testkit::moto::{MotoServer, REGION};
use testkit::process::{run_agent_with_env, CommandProcess, Finished};

const CLUSTER: &str = "prod";
/// How long one `fleet` command may take (a loaded box is slow to start processes).
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

fn moto() -> MotoServer {
    MotoServer::start().unwrap_or_else(|e| panic!("{e}"))
}


/// Runs `br-update-agent fleet <args>` to its end.
fn fleet(moto: &MotoServer, args: &[&str]) -> Finished {
    let mut all = vec!["fleet"];
    all.extend_from_slice(args);
    run_agent_with_env(&all, &moto.operator_env(), RUN_TIMEOUT).unwrap_or_else(|e| panic!("fleet {args:?}: {e}"))
}

/// Runs a command that must succeed; its stdout.
fn fleet_ok(moto: &MotoServer, args: &[&str]) -> String {
    let f = fleet(moto, args);
    assert!(f.status.success(), "fleet {args:?} failed ({:?}):\n{}\n{}", f.status, f.stdout, f.stderr);
    f.stdout
}

/// Runs a command that must fail; its exit code and stderr.
fn fleet_refused(moto: &MotoServer, args: &[&str]) -> (i32, String) {
    let f = fleet(moto, args);
    assert!(!f.status.success(), "fleet {args:?} should fail:\n{}", f.stdout);
    (f.status.code().unwrap_or(-1), f.stderr)
}

fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or_default()
}

async fn put(moto: &MotoServer, arn: &str, attrs: &[(&str, String)]) {
    if attrs.is_empty() {
        return;
    }
    let sdk: Vec<Attribute> = attrs
        .iter()
        .map(|(n, v)| {
            Attribute::builder()
                .name(*n)
                .value(v)
                .target_type(TargetType::ContainerInstance)
                .target_id(arn)
                .build()
                .expect("an attribute with a name")
        })
        .collect();
    moto.ecs_client().put_attributes().cluster(CLUSTER).set_attributes(Some(sdk)).send().await.expect("PutAttributes");
}

async fn drain(moto: &MotoServer, arn: &str) {
    let out = moto
        .ecs_client()
        .update_container_instances_state()
        .cluster(CLUSTER)
        .container_instances(arn)
        .status(ContainerInstanceStatus::Draining)
        .send()
        .await
        .expect("UpdateContainerInstancesState");
    assert!(out.failures().is_empty(), "{:?}", out.failures());
}

/// One seeded host: what a test calls it, and the ids ECS gave it.
#[derive(Clone, Debug)]
struct Seeded {
    label: &'static str,
    arn: String,
    ec2: String,
}

impl Seeded {
    fn short(&self) -> &str {
        self.arn.rsplit('/').next().unwrap_or(&self.arn)
    }
}

/// Every state a host can be in, by label, at seed time `t` (offsets are whole minutes, so a
/// read a few seconds later rounds back to them).
const STATES: [&str; 13] = [
    "idle",
    "claiming",
    "draining-agent",
    "draining-other",
    "rebooting",
    "verifying",
    "held",
    "waiting",
    "opted-out",
    "update-now",
    "no-agent",
    "garbage",
    "stuck",
];

/// One host's seed: its label, whether it is DRAINING, and its attributes.
type Seed<'a> = (&'a str, bool, Vec<(&'a str, String)>);

/// Seeds `CLUSTER` with one host per state (limit tag 8), through PutAttributes and
/// UpdateContainerInstancesState; returns the hosts by label and the seed time.
async fn seed_every_state(moto: &MotoServer) -> (BTreeMap<&'static str, Seeded>, i64) {
    let seeded = moto.seed(CLUSTER, STATES.len(), &[("br-update.max-concurrent", "8")]).expect("seed");
    let described = moto
        .ecs_client()
        .describe_container_instances()
        .cluster(CLUSTER)
        .set_container_instances(Some(seeded.instances.clone()))
        .send()
        .await
        .expect("DescribeContainerInstances");
    let ec2: BTreeMap<String, String> = described
        .container_instances()
        .iter()
        .map(|ci| (ci.container_instance_arn().unwrap_or_default().to_owned(), ci.ec2_instance_id().unwrap_or_default().to_owned()))
        .collect();
    let hosts: BTreeMap<&str, Seeded> = STATES
        .iter()
        .zip(&seeded.instances)
        .map(|(label, arn)| (*label, Seeded { label, arn: arn.clone(), ec2: ec2[arn].clone() }))
        .collect();
    let t = now_secs();
    let at = |off: i64| (t + off).to_string();
    let status = |phase: &str, running: &str, target: &str, result: &str, since: i64, detail: &str| {
        format!("v2:{phase}:{running}:{target}:{result}:{}:{detail}", at(since))
    };
    let claim = |phase: &str, claimed: i64, expires: i64, token: &str| format!("v1:{phase}:{}:{}:{token}:1.27.0", at(claimed), at(expires));
    let (st, lease, marker) = ("br-update.status", "br-update.lease", "br-update.drained");
    // As the agent words it; one holder, so the value stays within ECS's 128 characters.
    let waiting_detail = format!("slots held by {} claim-d", hosts["draining-agent"].short());
    let seeds: Vec<Seed> = vec![
        // The current format, with the seed and how long the last update held its slot.
        ("idle", false, vec![(st, format!("v3:idle:1.27.0:-:updated:{}:1024:540:", at(-7200)))]),
        ("claiming", false, vec![(st, status("idle", "1.26.0", "-", "up-to-date", -3000, "")), (lease, claim("c", -60, 540, "a1a1a1a1"))]),
        (
            "draining-agent",
            true,
            vec![
                (st, status("draining", "1.26.0", "1.27.0", "in-progress", -120, "")),
                (lease, claim("d", -180, 480, "b2b2b2b2")),
                (marker, "by-agent:b2b2b2b2".into()),
            ],
        ),
        ("draining-other", true, vec![(st, "v1:idle:1.26.0:-:up-to-date".into())]),
        (
            "rebooting",
            true,
            vec![
                (st, status("rebooting", "1.26.0", "1.27.0", "rebooting", -60, "")),
                (lease, claim("r", -900, 1200, "c3c3c3c3")),
                (marker, "by-agent:c3c3c3c3".into()),
            ],
        ),
        (
            "verifying",
            true,
            vec![
                (st, status("verifying", "1.27.0", "1.27.0", "in-progress", -60, "")),
                (lease, claim("v", -1500, 300, "d4d4d4d4")),
                (marker, "by-agent:d4d4d4d4".into()),
            ],
        ),
        (
            "held",
            true,
            vec![
                (st, status("held", "1.27.0", "1.27.0", "held-ecs-agent", -1800, "ecs agent not connected after 10m")),
                (lease, claim("v", -3000, 600, "e5e5e5e5")),
                (marker, "by-agent:e5e5e5e5".into()),
            ],
        ),
        ("waiting", false, vec![(st, status("waiting", "1.26.0", "1.27.0", "waiting-for-slot", -300, &waiting_detail))]),
        ("opted-out", false, vec![(st, status("idle", "1.26.0", "-", "opted-out", -86400, "")), ("br-update.opt-out", "true".into())]),
        (
            "update-now",
            false,
            vec![(st, status("idle", "1.26.0", "-", "skipped-outside-window", -420, "")), ("br-update.update-now", "true".into())],
        ),
        ("no-agent", false, vec![]),
        ("garbage", false, vec![(st, "not a status".into()), (lease, "junk".into())]),
        (
            "stuck",
            true,
            vec![
                (st, status("draining", "1.26.0", "1.27.0", "in-progress", -7140, "")),
                (lease, claim("d", -7200, -3600, "f6f6f6f6")),
                (marker, "by-agent:f6f6f6f6".into()),
            ],
        ),
    ];
    for (label, draining, attrs) in &seeds {
        let h = &hosts[label];
        put(moto, &h.arn, attrs).await;
        if *draining {
            drain(moto, &h.arn).await;
        }
    }
    (hosts, t)
}

/// The table row of `host` (the line starting with its EC2 id).
fn row<'a>(table: &'a str, host: &Seeded) -> &'a str {
    table.lines().find(|l| l.starts_with(&host.ec2)).unwrap_or_else(|| panic!("no row for {} ({}) in\n{table}", host.label, host.ec2))
}

#[tokio::test]
async fn status_table_says_what_each_host_does() {
    let moto = moto();
    let (hosts, _) = seed_every_state(&moto).await;
    let table = fleet_ok(&moto, &["status", "--cluster", CLUSTER]);
    assert!(!table.contains('\x1b'), "no colour off a terminal:\n{table}");
    assert!(table.contains("limit 8 (from cluster tag br-update.max-concurrent)"), "{table}");
    assert!(table.contains("paused: no"), "{table}");
    assert!(table.contains("slots held now: 8 of 8"), "{table}");
    assert!(table.contains("1.26.0 x8, 1.27.0 x3, unknown x2"), "{table}");
    assert!(table.contains("newest target 1.27.0: 8 host(s) behind"), "{table}");
    let expect: [(&str, &[&str]); 13] = [
        ("idle", &["ACTIVE", "1.27.0", " idle ", "updated 2h00m ago"]),
        ("claiming", &["ACTIVE", "claiming expires in 9m", "slot:claim"]),
        ("draining-agent", &["DRAINING (agent)", " draining ", "draining expires in 8m", "slot:claim"]),
        ("draining-other", &["DRAINING (other)", "up-to-date", "slot:draining-not-by-agent"]),
        ("rebooting", &["DRAINING (agent)", " rebooting ", "rebooting expires in 20m", "slot:claim"]),
        ("verifying", &["DRAINING (agent)", " verifying ", "verifying expires in 5m", "slot:claim"]),
        ("held", &["DRAINING (agent)", " held ", "held-ecs-agent 30m ago", "verifying expires in 10m", "ecs agent not connected after 10m"]),
        ("waiting", &["ACTIVE", " waiting ", "waiting-for-slot 5m ago", "slots held by"]),
        ("opted-out", &["opted-out 1d00h ago", "opted-out"]),
        ("update-now", &["skipped-outside-window 7m ago", "update-now"]),
        ("no-agent", &["ACTIVE", "no agent (or too old)"]),
        ("garbage", &["unreadable status", "unreadable \"junk\" (counts as live)", "slot:unreadable-claim", "garbage attribute \"not a status\""]),
        ("stuck", &["DRAINING (agent)", "draining lapsed 60m ago", "slot:drained-by-agent"]),
    ];
    for (label, wants) in expect {
        let r = row(&table, &hosts[label]);
        for want in wants {
            assert!(r.contains(want), "{label}: {want:?} not in\n{r}");
        }
    }
    // Its agent names the holder by container-instance id; the table by EC2 id.
    let w = row(&table, &hosts["waiting"]);
    assert!(w.ends_with(&format!("slots held by {} claim-d", hosts["draining-agent"].ec2)), "{w}");
    // Hosts without a slot say so by having none.
    for label in ["idle", "waiting", "opted-out", "update-now", "no-agent"] {
        assert!(!row(&table, &hosts[label]).contains("slot:"), "{label}");
    }
}

fn json_status(moto: &MotoServer) -> Value {
    let out = fleet_ok(moto, &["status", "--cluster", CLUSTER, "--json"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"))
}

fn instance<'a>(json: &'a Value, host: &Seeded) -> &'a Value {
    json["instances"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["container_instance_arn"] == host.arn.as_str()))
        .unwrap_or_else(|| panic!("no instance {} in {json:#}", host.label))
}

#[tokio::test]
async fn status_json_says_what_each_host_does() {
    let moto = moto();
    let (hosts, _) = seed_every_state(&moto).await;
    let j = json_status(&moto);
    assert_eq!((j["cluster"].as_str(), j["limit"].as_u64(), j["limit_source"].as_str()), (Some(CLUSTER), Some(8), Some("tag")));
    assert_eq!((j["paused"].as_bool(), j["slots_held"].as_u64(), j["behind"].as_u64()), (Some(false), Some(8), Some(8)));
    assert_eq!(j["versions"], serde_json::json!({"1.26.0": 8, "1.27.0": 3, "unknown": 2}));
    // label: (report, phase, ecs_status, drained_by, claim phase, slot, opted_out, update_now)
    type Row = (&'static str, Option<&'static str>, &'static str, Option<&'static str>, Option<&'static str>, Option<&'static str>, bool, bool);
    let expect: [(&str, Row); 13] = [
        ("idle", ("v3", Some("idle"), "ACTIVE", None, None, None, false, false)),
        ("claiming", ("v2", Some("idle"), "ACTIVE", None, Some("claiming"), Some("claim"), false, false)),
        ("draining-agent", ("v2", Some("draining"), "DRAINING", Some("agent"), Some("draining"), Some("claim"), false, false)),
        ("draining-other", ("v1", Some("idle"), "DRAINING", Some("other"), None, Some("draining-not-by-agent"), false, false)),
        ("rebooting", ("v2", Some("rebooting"), "DRAINING", Some("agent"), Some("rebooting"), Some("claim"), false, false)),
        ("verifying", ("v2", Some("verifying"), "DRAINING", Some("agent"), Some("verifying"), Some("claim"), false, false)),
        ("held", ("v2", Some("held"), "DRAINING", Some("agent"), Some("verifying"), Some("claim"), false, false)),
        ("waiting", ("v2", Some("waiting"), "ACTIVE", None, None, None, false, false)),
        ("opted-out", ("v2", Some("idle"), "ACTIVE", None, None, None, true, false)),
        ("update-now", ("v2", Some("idle"), "ACTIVE", None, None, None, false, true)),
        ("no-agent", ("none", None, "ACTIVE", None, None, None, false, false)),
        ("garbage", ("unreadable", None, "ACTIVE", None, None, Some("unreadable-claim"), false, false)),
        ("stuck", ("v2", Some("draining"), "DRAINING", Some("agent"), Some("draining"), Some("drained-by-agent"), false, false)),
    ];
    for (label, (report, phase, ecs, drained_by, claim, slot, opted_out, update_now)) in expect {
        let i = instance(&j, &hosts[label]);
        let got = (
            i["report"].as_str(),
            i["phase"].as_str(),
            i["ecs_status"].as_str(),
            i["drained_by"].as_str(),
            i["claim"]["phase"].as_str(),
            i["slot"].as_str(),
            i["opted_out"].as_bool(),
            i["update_now"].as_bool(),
        );
        assert_eq!(got, (Some(report), phase, Some(ecs), drained_by, claim, slot, Some(opted_out), Some(update_now)), "{label}: {i:#}");
        assert_eq!(i["instance_id"].as_str(), Some(hosts[label].ec2.as_str()), "{label}");
    }
    let waiting = instance(&j, &hosts["waiting"]);
    assert!(waiting["waiting_for"].as_str().is_some_and(|w| w.starts_with("slots held by")), "{waiting:#}");
    let garbage = instance(&j, &hosts["garbage"]);
    assert_eq!((garbage["status_raw"].as_str(), garbage["claim"]["raw"].as_str()), (Some("not a status"), Some("junk")));
    assert_eq!((garbage["claim"]["readable"].as_bool(), garbage["claim"]["live"].as_bool()), (Some(false), Some(true)));
    let stuck = instance(&j, &hosts["stuck"]);
    assert_eq!((stuck["claim"]["live"].as_bool(), stuck["drained_marker"].as_bool()), (Some(false), Some(true)));
    assert!(stuck["claim"]["expires_in_s"].as_i64().is_some_and(|s| s <= -3600), "{stuck:#}");
    assert_eq!(instance(&j, &hosts["no-agent"])["claim"], Value::Null);
}

// ------------------------------------------------------------------ forecast

#[tokio::test]
async fn forecast_adds_the_finish_and_an_eta_per_host() {
    let moto = moto();
    let (hosts, _) = seed_every_state(&moto).await;
    let table = fleet_ok(&moto, &["status", "--cluster", CLUSTER, "--forecast"]);
    assert!(table.contains("rollout finishes ≈ ") && table.contains("median of 1 recorded update"), "{table}");
    assert!(table.lines().any(|l| l.starts_with("INSTANCE") && l.contains(" ETA ")), "{table}");
    assert!(row(&table, &hosts["waiting"]).contains("≈ "), "{table}");
    assert!(row(&table, &hosts["held"]).contains("stuck"), "{table}");
    let plain = fleet_ok(&moto, &["status", "--cluster", CLUSTER]);
    assert!(!plain.contains("rollout finishes") && !plain.contains(" ETA "), "only with --forecast:\n{plain}");
    let doc: Value = serde_json::from_str(&fleet_ok(&moto, &["status", "--cluster", CLUSTER, "--json", "--forecast"])).expect("JSON");
    assert!(doc["forecast"]["finishes_at"].is_i64() && doc["forecast"]["slot_time_s"] == 540, "{doc:#}");
    assert_eq!(instance(&doc, &hosts["waiting"])["eta_state"], "queued");
    assert!(instance(&doc, &hosts["waiting"])["eta_in_s"].as_i64().is_some_and(|s| s > 0), "{doc:#}");
    assert_eq!(instance(&doc, &hosts["idle"])["eta_state"], "done");
}

// ------------------------------------------------------------------ golden JSON shape

/// Replaces every 10-digit number within a week of `t` in `s` with `T+n` / `T-n`.
fn times_relative(s: &str, t: i64) -> String {
    let mut out = String::new();
    let mut digits = String::new();
    let flush = |digits: &mut String, out: &mut String| {
        match digits.parse::<i64>() {
            Ok(v) if digits.len() == 10 && (v - t).abs() < 7 * 86_400 => out.push_str(&format!("T{:+}", v - t)),
            _ => out.push_str(digits),
        }
        digits.clear();
    };
    for c in s.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
        } else {
            flush(&mut digits, &mut out);
            out.push(c);
        }
    }
    flush(&mut digits, &mut out);
    out
}

/// Makes a status document independent of the run: ids become labels, absolute times become
/// offsets from the seed time, relative times are rounded to whole minutes, instances sorted.
fn normalise(mut v: Value, t: i64) -> Value {
    fn walk(v: &mut Value, t: i64) {
        match v {
            Value::Object(map) => {
                for (k, x) in map.iter_mut() {
                    match (k.as_str(), x.as_i64()) {
                        ("observed_at", Some(_)) => *x = Value::String("<now>".into()),
                        ("since" | "claimed_at" | "expires_at", Some(n)) => *x = Value::String(format!("T{:+}", n - t)),
                        ("since_ago_s" | "expires_in_s", Some(n)) => *x = Value::from((n as f64 / 60.0).round() as i64 * 60),
                        _ => walk(x, t),
                    }
                }
            }
            Value::Array(a) => a.iter_mut().for_each(|x| walk(x, t)),
            Value::String(s) => *s = times_relative(s, t),
            _ => {}
        }
    }
    walk(&mut v, t);
    if let Some(a) = v["instances"].as_array_mut() {
        a.sort_by_key(|i| i["container_instance_arn"].as_str().unwrap_or_default().to_owned());
    }
    v
}

#[tokio::test]
async fn status_json_matches_the_golden_shape() {
    let moto = moto();
    let (hosts, t) = seed_every_state(&moto).await;
    let mut raw = fleet_ok(&moto, &["status", "--cluster", CLUSTER, "--json"]);
    // Ids are random per run: replace them by labels, longest first (the ARN holds the short id).
    for h in hosts.values() {
        raw = raw.replace(&h.arn, &format!("<ci:{}>", h.label)).replace(h.short(), &format!("<id:{}>", h.label)).replace(&h.ec2, &format!("<i:{}>", h.label));
    }
    let got = normalise(serde_json::from_str(&raw).unwrap_or_else(|e| panic!("not JSON ({e}):\n{raw}")), t);
    let got = format!("{:#}\n", got);
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/fleet_status.json");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &got).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    if got != want {
        let first = got.lines().zip(want.lines()).position(|(g, w)| g != w).unwrap_or(got.lines().count().min(want.lines().count()));
        panic!(
            "`fleet status --json` differs from {} from line {} on (UPDATE_GOLDEN=1 rewrites it after a deliberate change):\n--- got\n{got}",
            path.display(),
            first + 1
        );
    }
}

// ------------------------------------------------------------------ calls per read

fn read_counting(moto: &MotoServer, instances: usize) -> (String, testkit::moto::Calls) {
    moto.seed(CLUSTER, instances, &[]).expect("seed");
    moto.reset_calls().expect("reset calls");
    let f = fleet(moto, &["status", "--cluster", CLUSTER, "--verbose"]);
    assert!(f.status.success(), "{}", f.stderr);
    let rows = f.stdout.lines().filter(|l| l.starts_with("i-")).count();
    assert_eq!(rows, instances, "a row per instance");
    (f.stderr, moto.calls().expect("call counts"))
}

#[test]
fn one_read_of_100_instances_is_3_calls_and_250_is_7() {
    let moto = moto();
    let (said, calls) = read_counting(&moto, 100);
    assert!(said.contains("ECS calls for this read: DescribeClusters 1, DescribeContainerInstances 1, ListContainerInstances 1, 3 in all"), "{said}");
    assert_eq!(calls.total, 3, "what moto answered: {calls:?}");
    moto.reset().expect("reset");
    let (said, calls) = read_counting(&moto, 250);
    assert!(said.contains("DescribeClusters 1, DescribeContainerInstances 3, ListContainerInstances 3, 7 in all"), "{said}");
    assert_eq!((calls.of("ListContainerInstances"), calls.of("DescribeContainerInstances"), calls.total), (3, 3, 7), "{calls:?}");
}

// ------------------------------------------------------------------ controls

async fn cluster_tags(moto: &MotoServer) -> BTreeMap<String, String> {
    let arn = format!("arn:aws:ecs:{REGION}:123456789012:cluster/{CLUSTER}");
    let out = moto.ecs_client().list_tags_for_resource().resource_arn(arn).send().await.expect("ListTagsForResource");
    out.tags().iter().filter_map(|t| Some((t.key()?.to_owned(), t.value().unwrap_or_default().to_owned()))).collect()
}

/// `(status, custom attributes)` of one instance, from the harness's view of moto.
fn instance_state(moto: &MotoServer, arn: &str) -> (String, BTreeMap<String, Option<String>>) {
    let state = moto.state(CLUSTER).expect("state");
    let i = state["instances"].as_array().and_then(|a| a.iter().find(|i| i["arn"] == arn)).expect("instance in state");
    let attrs = i["attributes"]
        .as_object()
        .map(|m| m.iter().filter(|(k, _)| !k.starts_with("ecs.")).map(|(k, v)| (k.clone(), v.as_str().map(str::to_owned))).collect())
        .unwrap_or_default();
    (i["status"].as_str().unwrap_or_default().to_owned(), attrs)
}

#[tokio::test]
async fn pause_resume_and_limit_change_the_cluster_tags() {
    let moto = moto();
    let (_hosts, _) = seed_every_state(&moto).await;
    let out = fleet_ok(&moto, &["pause", "--cluster", CLUSTER]);
    assert!(out.contains("paused cluster prod: tag br-update.paused=true (before: absent)"), "{out}");
    assert!(out.contains("aws ecs tag-resource --resource-arn arn:aws:ecs:us-east-1:123456789012:cluster/prod --tags key=br-update.paused,value=true --region us-east-1"), "{out}");
    assert_eq!(cluster_tags(&moto).await.get("br-update.paused").map(String::as_str), Some("true"));
    assert!(fleet_ok(&moto, &["status", "--cluster", CLUSTER]).contains("paused: PAUSED"));

    let out = fleet_ok(&moto, &["resume", "--cluster", CLUSTER]);
    assert!(out.contains("tag br-update.paused removed (before: `true`)"), "{out}");
    assert!(out.contains("aws ecs untag-resource --resource-arn arn:aws:ecs:us-east-1:123456789012:cluster/prod --tag-keys br-update.paused"), "{out}");
    assert_eq!(cluster_tags(&moto).await.get("br-update.paused"), None);

    let out = fleet_ok(&moto, &["limit", "3", "--cluster", CLUSTER]);
    assert!(out.contains("tag br-update.max-concurrent=3 (before: `8`)"), "{out}");
    assert_eq!(cluster_tags(&moto).await.get("br-update.max-concurrent").map(String::as_str), Some("3"));
    let j = json_status(&moto);
    assert_eq!((j["limit"].as_u64(), j["limit_source"].as_str(), j["paused"].as_bool()), (Some(3), Some("tag"), Some(false)));
}

#[tokio::test]
async fn instance_controls_change_the_attributes_whatever_the_instance_is_called() {
    let moto = moto();
    let (hosts, _) = seed_every_state(&moto).await;
    let h = &hosts["idle"];
    // By EC2 instance id.
    let out = fleet_ok(&moto, &["opt-out", &h.ec2, "--cluster", CLUSTER]);
    assert!(out.contains(&format!("opted out {} (container instance {})", h.ec2, h.short())), "{out}");
    assert!(out.contains("again before a claim by a host that has waited over 10 minutes; a host already updating finishes"), "{out}");
    assert!(out.contains(&format!("aws ecs put-attributes --cluster prod --attributes name=br-update.opt-out,value=true,targetType=container-instance,targetId={}", h.arn)), "{out}");
    assert_eq!(instance_state(&moto, &h.arn).1.get("br-update.opt-out"), Some(&Some("true".to_owned())));
    // By container-instance ARN.
    let out = fleet_ok(&moto, &["opt-in", &h.arn, "--cluster", CLUSTER]);
    assert!(out.contains("attribute br-update.opt-out removed (before: `true`)"), "{out}");
    assert!(out.contains(&format!("aws ecs delete-attributes --cluster prod --attributes name=br-update.opt-out,targetType=container-instance,targetId={}", h.arn)), "{out}");
    assert_eq!(instance_state(&moto, &h.arn).1.get("br-update.opt-out"), None);
    // By container-instance id.
    let out = fleet_ok(&moto, &["update-now", h.short(), "--cluster", CLUSTER]);
    assert!(out.contains("attribute br-update.update-now=true (before: absent)"), "{out}");
    assert_eq!(instance_state(&moto, &h.arn).1.get("br-update.update-now"), Some(&Some("true".to_owned())));
    let j = json_status(&moto);
    assert_eq!(instance(&j, h)["update_now"].as_bool(), Some(true));
    // Nothing else moved.
    assert_eq!(instance_state(&moto, &hosts["no-agent"].arn).1, BTreeMap::new());
}

#[tokio::test]
async fn release_frees_only_a_lapsed_agent_drained_host_unless_forced() {
    let moto = moto();
    let (hosts, _) = seed_every_state(&moto).await;
    let stuck = &hosts["stuck"];
    let out = fleet_ok(&moto, &["release", &stuck.ec2, "--cluster", CLUSTER]);
    assert!(out.contains("status set ACTIVE (before: DRAINING)"), "{out}");
    assert!(out.contains("attribute br-update.drained removed (before: `by-agent:f6f6f6f6`)"), "{out}");
    assert!(out.contains(&format!("aws ecs update-container-instances-state --cluster prod --container-instances {} --status ACTIVE", stuck.arn)), "{out}");
    assert!(out.contains(&format!("name=br-update.drained,targetType=container-instance,targetId={0} name=br-update.lease,targetType=container-instance,targetId={0}", stuck.arn)), "{out}");
    let (status, attrs) = instance_state(&moto, &stuck.arn);
    assert_eq!(status, "ACTIVE");
    assert!(!attrs.contains_key("br-update.drained") && !attrs.contains_key("br-update.lease"), "{attrs:?}");
    assert!(attrs.contains_key("br-update.status"), "only the marker and the claim go");

    // A live claim, a host drained by someone else, an unreadable claim: refused, untouched.
    for (label, why) in [
        ("draining-agent", "its claim is live (draining"),
        ("draining-other", "carries no br-update.drained marker"),
        ("garbage", "carries no br-update.drained marker"),
    ] {
        let h = &hosts[label];
        let before = instance_state(&moto, &h.arn);
        let (code, err) = fleet_refused(&moto, &["release", &h.ec2, "--cluster", CLUSTER]);
        assert_eq!(code, 1, "{label}: {err}");
        assert!(err.contains("refusing to release") && err.contains(why) && err.contains("--force"), "{label}: {err}");
        assert_eq!(instance_state(&moto, &h.arn), before, "{label} untouched");
    }
    let h = &hosts["draining-agent"];
    fleet_ok(&moto, &["release", &h.ec2, "--force", "--cluster", CLUSTER]);
    let (status, attrs) = instance_state(&moto, &h.arn);
    assert_eq!((status.as_str(), attrs.contains_key("br-update.lease")), ("ACTIVE", false));

    // An agent that found its instance drained by someone else marks it so: the slot is freed,
    // the status left to whoever drained it.
    let h = &hosts["draining-other"];
    let lapsed = format!("v1:r:{}:{}:a7a7a7a7:1.27.0", now_secs() - 7200, now_secs() - 3600);
    put(&moto, &h.arn, &[("br-update.drained", "by-other:a7a7a7a7".into()), ("br-update.lease", lapsed)]).await;
    let out = fleet_ok(&moto, &["release", &h.ec2, "--cluster", CLUSTER]);
    assert!(out.contains("status left DRAINING (drained by someone else before its agent)") && !out.contains("--status ACTIVE"), "{out}");
    let (status, attrs) = instance_state(&moto, &h.arn);
    assert_eq!(status, "DRAINING");
    assert!(!attrs.contains_key("br-update.drained") && !attrs.contains_key("br-update.lease"), "{attrs:?}");
}

#[tokio::test]
async fn refusals_exit_non_zero_with_the_reason() {
    let moto = moto();
    let (hosts, _) = seed_every_state(&moto).await;
    let tags = cluster_tags(&moto).await;
    for n in ["0", "abc", "-2", "1001"] {
        let (code, err) = fleet_refused(&moto, &["limit", n, "--cluster", CLUSTER]);
        assert_eq!(code, 64, "{err}");
        assert!(err.contains(&format!("limit must be a whole number from 1 to 1000, not `{n}`")), "{err}");
    }
    assert_eq!(cluster_tags(&moto).await, tags, "a refused limit writes nothing");
    for q in ["i-0123456789abcdef0", "arn:aws:ecs:us-east-1:123456789012:container-instance/prod/00000000-0000-0000-0000-000000000000", "not-an-instance"] {
        let (code, err) = fleet_refused(&moto, &["opt-out", q, "--cluster", CLUSTER]);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains(&format!("no container instance `{q}` in cluster prod")), "{err}");
    }
    for args in [&["status", "--cluster", "nope"][..], &["pause", "--cluster", "nope"], &["opt-out", &hosts["idle"].ec2, "--cluster", "nope"]] {
        let (code, err) = fleet_refused(&moto, args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(err.contains("cluster nope not found in us-east-1"), "{args:?}: {err}");
    }
    let (code, err) = fleet_refused(&moto, &["status"]);
    assert_eq!(code, 64);
    assert!(err.contains("--cluster NAME is required"), "{err}");
}

// ------------------------------------------------------------------ watch

#[tokio::test]
async fn watch_marks_changed_rows_and_ends_with_exit_0_on_ctrl_c() {
    let moto = moto();
    let (hosts, _) = seed_every_state(&moto).await;
    let args = ["fleet", "status", "--cluster", CLUSTER, "--watch", "--interval", "1"];
    let mut watch = CommandProcess::start(&args, &moto.operator_env()).unwrap_or_else(|e| panic!("{e}"));
    let footer = "refreshing every 1s";
    watch.stdout().wait_for(footer, RUN_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    let first = watch.stdout().text();
    assert!(!first.contains('\x1b'), "no clearing or colour off a terminal:\n{first}");
    assert!(!first.lines().any(|l| l.starts_with("* ")), "nothing changed before the first read:\n{first}");

    let h = &hosts["no-agent"];
    let mark = watch.stdout().mark();
    put(&moto, &h.arn, &[("br-update.opt-out", "true".into())]).await;
    let marked = format!("* {}", h.ec2);
    watch.stdout().wait_for_from(mark, &marked, RUN_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    let text = watch.stdout().text();
    let frame = &text[mark..];
    let changed: Vec<&str> = frame.lines().filter(|l| l.starts_with("* ")).collect();
    assert_eq!(changed.len(), 1, "only the host that changed is marked:\n{frame}");
    assert!(changed[0].contains("opted-out"), "{}", changed[0]);

    watch.signal("INT").unwrap_or_else(|e| panic!("{e}"));
    let status = watch.wait_exit(RUN_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status.code(), Some(0), "Ctrl-C ends a watch cleanly; stderr:\n{}", watch.stderr().text());
}
