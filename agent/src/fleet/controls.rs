//! The one-word controls. Each is the ECS write an operator could make with the `aws` CLI (the
//! release makes two), preceded only by the reads that find the cluster and the instance; each
//! reports what it changed, what was there before, and the equivalent `aws` command lines.

use super::model::{read_instances, ViewSettings};
use super::render::age;
use super::source::{FleetApi, InstanceRecord};
use super::FleetError;
use crate::clock::WallTime;
use crate::cluster::ClusterError;
use crate::lease::{drained_by_others, Claim};
use crate::status::short_id;

/// A control and its argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Control {
    /// Tag the cluster `<prefix>.paused=true`.
    Pause,
    /// Remove the cluster tag `<prefix>.paused`.
    Resume,
    /// Tag the cluster `<prefix>.max-concurrent=N`.
    Limit(u32),
    /// Put `<prefix>.opt-out=true` on an instance.
    OptOut(String),
    /// Delete `<prefix>.opt-out` from an instance.
    OptIn(String),
    /// Put `<prefix>.update-now=true` on an instance.
    UpdateNow(String),
    /// Delete every failure marker that names a version, so hosts take it again.
    ResumeVersion(String),
    /// Set a host that will not come back ACTIVE and delete its marker and claim.
    Release {
        /// The instance.
        instance: String,
        /// Release even without the marker, or with a claim that has not lapsed.
        force: bool,
    },
}

/// What a control did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Change {
    /// What changed, one line each, with the value before.
    pub changed: Vec<String>,
    /// What it means for the fleet.
    pub note: String,
    /// The equivalent `aws` command lines, in order.
    pub aws: Vec<String>,
}

impl Change {
    /// The report printed to the operator.
    pub fn report(&self) -> String {
        let mut out = self.changed.join("\n");
        if !self.note.is_empty() {
            out.push_str(&format!("\n{}", self.note));
        }
        out.push_str("\nequivalent aws command line(s):");
        for line in &self.aws {
            out.push_str(&format!("\n  {line}"));
        }
        out.push('\n');
        out
    }
}

/// Finds an instance of `cluster` by EC2 instance id (`i-...`, through the listing), by
/// container-instance ARN or by container-instance id (one describe).
pub async fn resolve<A: FleetApi>(api: &A, cluster: &str, query: &str) -> Result<InstanceRecord, FleetError> {
    let unknown = || FleetError::UnknownInstance { query: query.to_owned(), cluster: cluster.to_owned() };
    if query.starts_with("i-") {
        let all = read_instances(api, cluster).await?;
        return all.into_iter().find(|r| r.ec2_instance_id.as_deref() == Some(query)).ok_or_else(unknown);
    }
    match api.describe_instances(cluster, &[query.to_owned()]).await {
        Ok(found) => found.into_iter().find(|r| r.arn == query || short_id(&r.arn) == query).ok_or_else(unknown),
        // ECS refuses a string that is neither an ARN nor an id rather than calling it missing.
        Err(FleetError::Ecs(ClusterError::Rejected { code, .. })) if code == "InvalidParameterException" => Err(unknown()),
        Err(e) => Err(e),
    }
}

/// How an instance is named in reports: its EC2 id and its container-instance id.
fn named(r: &InstanceRecord) -> String {
    match &r.ec2_instance_id {
        Some(id) => format!("{id} (container instance {})", short_id(&r.arn)),
        None => format!("container instance {}", short_id(&r.arn)),
    }
}

fn before(v: Option<&Option<String>>) -> String {
    match v {
        None => "absent".into(),
        Some(None) => "present without a value".into(),
        Some(Some(v)) => format!("`{v}`"),
    }
}

/// Applies `control` to `cluster` at `now` (which decides whether a claim has lapsed).
pub async fn apply<A: FleetApi>(
    api: &A,
    cluster: &str,
    settings: &ViewSettings,
    control: &Control,
    now: WallTime,
) -> Result<Change, FleetError> {
    let names = &settings.names;
    let region = api.region().to_owned();
    let aws = |rest: String| format!("aws ecs {rest} --region {region}");
    let info = api.describe_cluster(cluster).await?;
    let tag_before = |key: &str| info.tags.get(key).map_or("absent".to_owned(), |v| format!("`{v}`"));
    let put_line = |arn: &str, name: &str, value: &str| {
        aws(format!("put-attributes --cluster {cluster} --attributes name={name},value={value},targetType=container-instance,targetId={arn}"))
    };
    let delete_line = |arn: &str, attrs: &[&str]| {
        let list: Vec<String> = attrs.iter().map(|n| format!("name={n},targetType=container-instance,targetId={arn}")).collect();
        aws(format!("delete-attributes --cluster {cluster} --attributes {}", list.join(" ")))
    };
    match control {
        Control::Pause => {
            let key = &names.paused_tag;
            api.tag_cluster(&info.arn, key, "true").await?;
            Ok(Change {
                changed: vec![format!("paused cluster {}: tag {key}=true (before: {})", info.name, tag_before(key))],
                note: "no host takes a new slot; hosts already mid-update finish their round".into(),
                aws: vec![aws(format!("tag-resource --resource-arn {} --tags key={key},value=true", info.arn))],
            })
        }
        Control::Resume => {
            let key = &names.paused_tag;
            api.untag_cluster(&info.arn, key).await?;
            Ok(Change {
                changed: vec![format!("resumed cluster {}: tag {key} removed (before: {})", info.name, tag_before(key))],
                note: "hosts take slots again at their next look".into(),
                aws: vec![aws(format!("untag-resource --resource-arn {} --tag-keys {key}", info.arn))],
            })
        }
        Control::Limit(n) => {
            let key = &names.max_concurrent_tag;
            api.tag_cluster(&info.arn, key, &n.to_string()).await?;
            Ok(Change {
                changed: vec![format!("limit of cluster {} set to {n}: tag {key}={n} (before: {})", info.name, tag_before(key))],
                note: format!("at most {n} host(s) out of service for an update at once; every host reads it before its next claim"),
                aws: vec![aws(format!("tag-resource --resource-arn {} --tags key={key},value={n}", info.arn))],
            })
        }
        Control::OptOut(query) => {
            let r = resolve(api, cluster, query).await?;
            let name = &names.opt_out;
            api.put_attribute(cluster, &r.arn, name, "true").await?;
            Ok(Change {
                changed: vec![format!("opted out {}: attribute {name}=true (before: {})", named(&r), before(r.attributes.get(name)))],
                note: "its agent leaves it out of updates until `fleet opt-in` (read at each round's start, and again before a claim by a host that has waited over 10 minutes; a host already updating finishes)".into(),
                aws: vec![put_line(&r.arn, name, "true")],
            })
        }
        Control::OptIn(query) => {
            let r = resolve(api, cluster, query).await?;
            let name = &names.opt_out;
            api.delete_attributes(cluster, &r.arn, &[name]).await?;
            Ok(Change {
                changed: vec![format!("opted in {}: attribute {name} removed (before: {})", named(&r), before(r.attributes.get(name)))],
                note: "its agent updates it again at its next slot".into(),
                aws: vec![delete_line(&r.arn, &[name])],
            })
        }
        Control::UpdateNow(query) => {
            let r = resolve(api, cluster, query).await?;
            let name = &names.update_now;
            api.put_attribute(cluster, &r.arn, name, "true").await?;
            Ok(Change {
                changed: vec![format!("asked {} to update now: attribute {name}=true (before: {})", named(&r), before(r.attributes.get(name)))],
                note: "its agent skips its slot and window (not the lease) at its next look and clears the attribute when it acts".into(),
                aws: vec![put_line(&r.arn, name, "true")],
            })
        }
        Control::ResumeVersion(version) => {
            let name = &names.failed;
            let records = crate::fleet::model::read_instances(api, cluster).await?;
            let failed: Vec<&InstanceRecord> = records
                .iter()
                .filter(|r| r.value(name).and_then(crate::halt::FailureMarker::parse).is_some_and(|m| &m.version == version))
                .collect();
            if failed.is_empty() {
                return Err(FleetError::NothingToResume { version: version.clone(), cluster: cluster.to_owned() });
            }
            let mut change = Change {
                note: format!("hosts take {version} again at their next look (each failure marker named it)"),
                ..Change::default()
            };
            for r in failed {
                api.delete_attributes(cluster, &r.arn, &[name]).await?;
                change.changed.push(format!("cleared {} on {}: (before: {})", name, named(r), before(r.attributes.get(name))));
                change.aws.push(delete_line(&r.arn, &[name]));
            }
            Ok(change)
        }
        Control::Release { instance, force } => {
            let r = resolve(api, cluster, instance).await?;
            let (marker, lease) = (&names.drained, &names.lease);
            if !force {
                if let Some(why) = release_refusal(&r, settings, now) {
                    return Err(FleetError::ReleaseRefused { instance: named(&r), why });
                }
            }
            // Someone else drained it before its agent did: theirs to set ACTIVE, not ours.
            let others = r.value(marker).is_some_and(drained_by_others);
            let mut change = Change::default();
            if others {
                change.changed.push(format!("released {}: status left {} (drained by someone else before its agent)", named(&r), r.status));
                change.note = "its slot is free; its status is left to whoever drained it".into();
            } else {
                api.set_active(cluster, &r.arn).await?;
                change.changed.push(format!("released {}: status set ACTIVE (before: {})", named(&r), r.status));
                change.note = "its slot is free; ECS places tasks on it again".into();
                change.aws.push(aws(format!(
                    "update-container-instances-state --cluster {cluster} --container-instances {} --status ACTIVE",
                    r.arn
                )));
            }
            api.delete_attributes(cluster, &r.arn, &[marker, lease]).await?;
            change.changed.push(format!("  attribute {marker} removed (before: {})", before(r.attributes.get(marker))));
            change.changed.push(format!("  attribute {lease} removed (before: {})", before(r.attributes.get(lease))));
            change.aws.push(delete_line(&r.arn, &[marker, lease]));
            Ok(change)
        }
    }
}

/// Why a release would be unsafe or wrong, if it would be: only an agent's drained host whose
/// claim has lapsed (or is gone) is released without `--force`.
fn release_refusal(r: &InstanceRecord, settings: &ViewSettings, now: WallTime) -> Option<String> {
    let names = &settings.names;
    if !r.has(&names.drained) {
        return Some(format!(
            "it carries no {} marker, so no agent drained it and it holds no agent's slot (status {})",
            names.drained, r.status
        ));
    }
    let raw = r.attributes.get(&names.lease)?.clone().unwrap_or_default();
    match Claim::parse(&raw) {
        Err(_) => Some(format!("its claim `{raw}` cannot be read, and an unreadable claim counts as live")),
        Ok(c) if c.is_live(now, settings.skew) => Some(format!(
            "its claim is live ({}, expires in {}, plus {} of allowed clock skew): its agent may still be at work",
            c.phase.name(),
            age(c.expires_at.saturating_sub(now.as_secs())),
            age(settings.skew.as_secs() as i64)
        )),
        Ok(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::model::tests::{record, FakeFleet};

    const NOW: i64 = 1_800_000_000;

    fn fleet() -> FakeFleet {
        let claim = |phase: &str, expires: i64| format!("v1:{phase}:{}:{expires}:0badf00d:1.27.0", NOW - 900);
        FakeFleet::new(vec![
            record(0, "ACTIVE", &[]),
            // Drained by its agent, claim lapsed an hour ago: the host that never came back.
            record(1, "DRAINING", &[("br-update.drained", Some("1")), ("br-update.lease", Some(&claim("d", NOW - 3600)))]),
            // Drained by its agent, claim still live.
            record(2, "DRAINING", &[("br-update.drained", Some("1")), ("br-update.lease", Some(&claim("r", NOW + 600)))]),
            // Drained by someone else.
            record(3, "DRAINING", &[]),
            // Marker, claim unreadable.
            record(4, "DRAINING", &[("br-update.drained", Some("1")), ("br-update.lease", Some("junk"))]),
            // Marker, no claim.
            record(5, "DRAINING", &[("br-update.drained", Some("1"))]),
            // Drained by an operator before its agent's drain, back ACTIVE by their hand, claim lapsed.
            record(6, "ACTIVE", &[("br-update.drained", Some("by-other:0badf00d")), ("br-update.lease", Some(&claim("r", NOW - 60)))]),
        ])
    }

    async fn run(f: &FakeFleet, control: Control) -> Result<Change, FleetError> {
        apply(f, "prod", &ViewSettings::defaults("br-update"), &control, WallTime::from_secs(NOW)).await
    }

    fn id(n: usize) -> String {
        format!("i-{n:017x}")
    }

    #[tokio::test]
    async fn resume_version_clears_only_the_markers_that_name_it() {
        let f = FakeFleet::new(vec![
            record(0, "ACTIVE", &[("br-update.failed", Some("v1:1.27.0:1800000000:rolled-back"))]),
            record(1, "ACTIVE", &[("br-update.failed", Some("v1:1.26.5:1800000000:rolled-back"))]),
            record(2, "DRAINING", &[("br-update.failed", Some("v1:1.27.0:1800000000:instance-impaired"))]),
        ]);
        let c = run(&f, Control::ResumeVersion("1.27.0".into())).await.expect("resume");
        assert_eq!(c.aws.len(), 2, "{c:?}");
        let writes = f.writes.borrow().clone();
        let cleared: Vec<String> = [0, 2].iter().map(|i| format!("delete {} br-update.failed", short_id(&f.records[*i].arn))).collect();
        assert_eq!(writes, cleared);
        assert!(matches!(run(&f, Control::ResumeVersion("9.9.9".into())).await, Err(FleetError::NothingToResume { .. })));
    }

    #[tokio::test]
    async fn each_control_is_one_write_with_its_aws_line() {
        let f = fleet();
        let c = run(&f, Control::Pause).await.expect("pause");
        assert_eq!(c.aws, ["aws ecs tag-resource --resource-arn arn:aws:ecs:us-east-1:123456789012:cluster/prod --tags key=br-update.paused,value=true --region us-east-1"]);
        run(&f, Control::Resume).await.expect("resume");
        run(&f, Control::Limit(3)).await.expect("limit");
        let c = run(&f, Control::OptOut(id(0))).await.expect("opt-out");
        assert!(c.changed[0].contains("br-update.opt-out=true (before: absent)"), "{c:?}");
        assert!(c.aws[0].starts_with("aws ecs put-attributes --cluster prod --attributes name=br-update.opt-out,value=true,targetType=container-instance,targetId=arn:"), "{c:?}");
        run(&f, Control::OptIn(id(0))).await.expect("opt-in");
        run(&f, Control::UpdateNow(f.records[0].arn.clone())).await.expect("update-now by ARN");
        let short = short_id(&f.records[0].arn).to_owned();
        run(&f, Control::OptOut(short.clone())).await.expect("opt-out by container-instance id");
        let writes = f.writes.borrow().clone();
        assert_eq!(
            writes,
            [
                "tag br-update.paused=true".to_owned(),
                "untag br-update.paused".into(),
                "tag br-update.max-concurrent=3".into(),
                format!("put {short} br-update.opt-out=true"),
                format!("delete {short} br-update.opt-out"),
                format!("put {short} br-update.update-now=true"),
                format!("put {short} br-update.opt-out=true"),
            ]
        );
    }

    #[tokio::test]
    async fn unknown_instances_are_refused_before_any_write() {
        let f = fleet();
        for q in ["i-0000000000000dead", "arn:aws:ecs:us-east-1:123456789012:container-instance/prod/dead", "dead"] {
            let e = run(&f, Control::OptOut(q.into())).await.expect_err(q);
            assert_eq!(e.to_string().split(" (").next(), Some(format!("no container instance `{q}` in cluster prod").as_str()));
        }
        assert!(f.writes.borrow().is_empty());
    }

    #[tokio::test]
    async fn release_only_frees_an_agents_drained_host_with_no_live_claim() {
        let f = fleet();
        let c = run(&f, Control::Release { instance: id(1), force: false }).await.expect("release the lapsed host");
        assert_eq!(c.aws.len(), 2);
        assert!(c.aws[0].contains("update-container-instances-state --cluster prod --container-instances arn:"), "{c:?}");
        assert!(c.aws[1].contains("name=br-update.drained,") && c.aws[1].contains("name=br-update.lease,"), "{c:?}");
        run(&f, Control::Release { instance: id(5), force: false }).await.expect("marker without a claim");
        for (n, why) in [(2, "its claim is live (rebooting"), (3, "carries no br-update.drained marker"), (4, "cannot be read"), (0, "carries no")] {
            match run(&f, Control::Release { instance: id(n), force: false }).await {
                Err(FleetError::ReleaseRefused { why: w, .. }) => assert!(w.contains(why), "{n}: {w}"),
                other => panic!("{n}: expected a refusal, got {other:?}"),
            }
        }
        run(&f, Control::Release { instance: id(2), force: true }).await.expect("forced");
        let s = |n: usize| short_id(&f.records[n].arn).to_owned();
        let c = run(&f, Control::Release { instance: id(6), force: false }).await.expect("a marker written over someone else's drain");
        assert_eq!(c.aws.len(), 1, "no ACTIVE for an instance its agent did not drain: {c:?}");
        let writes = f.writes.borrow().clone();
        let mut expected: Vec<String> = [1, 5, 2]
            .iter()
            .flat_map(|n| [format!("active {}", s(*n)), format!("delete {} br-update.drained,br-update.lease", s(*n))])
            .collect();
        expected.push(format!("delete {} br-update.drained,br-update.lease", s(6)));
        assert_eq!(writes, expected, "ACTIVE first (only where its agent drained), then the marker and claim, for each released host only");
    }
}
