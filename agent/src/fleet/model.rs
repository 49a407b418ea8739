//! The cluster read into a typed view: one [`Host`] per container instance, and the fleet-wide
//! figures (limit in force, pause, slots held, versions, hosts behind).
//!
//! One read is DescribeClusters (with tags), ListContainerInstances (every page of 100) and
//! DescribeContainerInstances (chunks of 100), which carries every instance's status and
//! attributes: about `2 * ceil(instances / 100) + 1` calls. The slots are counted from those
//! attributes and statuses by the agent's own rule ([`Census::from_listings`]), so the view
//! counts exactly what a waiting agent counts.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::time::Duration;

use super::source::{ClusterInfo, FleetApi, InstanceRecord, DESCRIBE_CHUNK};
use super::tags::FleetTags;
use super::FleetError;
use crate::clock::WallTime;
use crate::cluster::Attribute;
use crate::lease::{Census, Claim, ClaimPhase, Names, OutOfService};
use crate::status::Status;

/// The built-in attribute that names an instance's availability zone.
const AZ_ATTRIBUTE: &str = "ecs.availability-zone";
/// Pages of ListContainerInstances read before giving up: 100,000 instances, far beyond ECS's
/// per-cluster quota, so a service handing out tokens forever cannot keep the command busy.
const MAX_PAGES: usize = 1000;

/// What a view counts with; the defaults are the agent's own config defaults.
#[derive(Clone, Debug)]
pub struct ViewSettings {
    /// The attribute and tag names.
    pub names: Names,
    /// N when no cluster tag sets it.
    pub default_limit: u32,
    /// Allowed clock skew: a claim counts until its expiry plus this.
    pub skew: Duration,
    /// Whether DRAINING instances that no agent drained take a slot.
    pub foreign_draining: bool,
}

impl ViewSettings {
    /// The agent's defaults under `prefix`.
    pub fn defaults(prefix: &str) -> ViewSettings {
        let c = crate::config::Config::default().cluster;
        ViewSettings {
            names: Names::new(prefix),
            default_limit: c.max_concurrent,
            skew: c.clock_skew,
            foreign_draining: c.count_foreign_draining,
        }
    }
}

/// What a host's agent published in its status attribute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Report {
    /// A readable status (`v1`, `v2` or `v3`).
    Published {
        /// The status.
        status: Status,
        /// `v1`, `v2` or `v3`.
        format: &'static str,
        /// The value as stored.
        raw: String,
    },
    /// No status attribute: no agent runs there, or one too old to publish.
    Missing,
    /// A value in none of the formats, kept as found.
    Unreadable(String),
}

/// Why a host takes one of the N slots (the agent's reasons).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SlotReason {
    /// A live claim in this phase.
    Claim(ClaimPhase),
    /// A claim that cannot be read (counts as live).
    UnreadableClaim,
    /// An agent's drained marker, with no live claim.
    DrainedByAgent,
    /// DRAINING without a marker: someone else drained it.
    DrainingByOthers,
}

impl SlotReason {
    /// The stable word for JSON and the table.
    pub fn word(&self) -> &'static str {
        match self {
            SlotReason::Claim(_) => "claim",
            SlotReason::UnreadableClaim => "unreadable-claim",
            SlotReason::DrainedByAgent => "drained-by-agent",
            SlotReason::DrainingByOthers => "draining-not-by-agent",
        }
    }
}

/// Who drained a DRAINING instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DrainedBy {
    /// Its agent (the drained marker is present).
    Agent,
    /// An operator, ECS managed draining, anything but the agent.
    Other,
}

impl DrainedBy {
    /// `agent` or `other`.
    pub fn word(self) -> &'static str {
        match self {
            DrainedBy::Agent => "agent",
            DrainedBy::Other => "other",
        }
    }
}

/// One container instance, read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    /// The container-instance ARN.
    pub arn: String,
    /// The EC2 instance id, when ECS reports one.
    pub instance_id: Option<String>,
    /// From `ecs.availability-zone`.
    pub az: Option<String>,
    /// `ACTIVE`, `DRAINING`, ...
    pub ecs_status: String,
    /// Whether the ECS agent is connected.
    pub agent_connected: bool,
    /// The agent's drained marker is present.
    pub drained_marker: bool,
    /// The marker says someone else had drained it before its agent's drain (`by-other:`).
    pub drained_by_others: bool,
    /// The status attribute.
    pub report: Report,
    /// The claim attribute, read or as found.
    pub claim: Option<Result<Claim, String>>,
    /// The claim attribute as stored.
    pub claim_raw: Option<String>,
    /// Whether others count the claim now (unreadable claims count).
    pub claim_live: bool,
    /// `<prefix>.opt-out` is `true` (any case), as the agent reads it.
    pub opted_out: bool,
    /// `<prefix>.update-now` is present.
    pub update_now: bool,
    /// Why it takes a slot, if it does.
    pub slot: Option<SlotReason>,
}

impl Host {
    /// The id an operator knows it by: the EC2 instance id, else the container-instance id.
    pub fn label(&self) -> &str {
        self.instance_id.as_deref().unwrap_or_else(|| crate::status::short_id(&self.arn))
    }

    /// Who drained it, when it is DRAINING.
    pub fn drained_by(&self) -> Option<DrainedBy> {
        let agent = self.drained_marker && !self.drained_by_others;
        (self.ecs_status == "DRAINING").then_some(if agent { DrainedBy::Agent } else { DrainedBy::Other })
    }

    /// The readable status, if any.
    pub fn status(&self) -> Option<&Status> {
        match &self.report {
            Report::Published { status, .. } => Some(status),
            _ => None,
        }
    }

    /// What it waits for (the status detail), while it waits.
    pub fn waiting_for(&self) -> Option<&str> {
        self.status().filter(|s| s.phase == "waiting" && !s.detail.is_empty()).map(|s| s.detail.as_str())
    }

    /// Everything shown about it except times relative to now, so two reads differ only when
    /// the host changed (the `--watch` highlight).
    pub fn signature(&self) -> String {
        format!("{:?}", (&self.ecs_status, self.agent_connected, self.drained_marker, &self.report, &self.claim, self.claim_live,
            self.opted_out, self.update_now, &self.slot))
    }
}

/// The fleet, read at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetView {
    /// The cluster's name.
    pub cluster: String,
    /// The cluster's ARN.
    pub cluster_arn: String,
    /// When it was read.
    pub observed_at: WallTime,
    /// Pause and limit from the cluster's tags.
    pub tags: FleetTags,
    /// The attribute and tag names it was read with.
    pub names: Names,
    /// The raw `<prefix>.max-concurrent` tag, if set.
    pub limit_tag: Option<String>,
    /// How many hosts take a slot now, by the agent's rule.
    pub slots_held: usize,
    /// Hosts by running version (`unknown` for hosts without a readable status).
    pub versions: BTreeMap<String, usize>,
    /// The newest version any host moves or moved to.
    pub newest_target: Option<String>,
    /// Hosts whose running version is older than `newest_target`.
    pub behind: usize,
    /// Versions that failed, with the hosts (by label) whose failure marker names them.
    pub failures: BTreeMap<String, Vec<String>>,
    /// The hosts, by label.
    pub hosts: Vec<Host>,
}

/// The key of hosts without a readable status in [`FleetView::versions`].
pub const UNKNOWN_VERSION: &str = "unknown";

impl FleetView {
    /// Builds the view from what ECS answered, counting slots by the agent's rule.
    pub fn build(cluster: &ClusterInfo, records: Vec<InstanceRecord>, settings: &ViewSettings, now: WallTime) -> FleetView {
        let names = &settings.names;
        let census = census_of(&records, settings, now);
        let mut slots: BTreeMap<&str, SlotReason> = BTreeMap::new();
        for seen in &census.occupied {
            let why = match &seen.claim {
                Ok(c) => SlotReason::Claim(c.phase),
                Err(_) => SlotReason::UnreadableClaim,
            };
            slots.insert(&seen.instance, why);
        }
        for o in &census.out_of_service {
            let why = match o.why {
                OutOfService::DrainedByAgent { .. } => SlotReason::DrainedByAgent,
                OutOfService::DrainingByOthers => SlotReason::DrainingByOthers,
            };
            slots.insert(&o.instance, why);
        }
        let mut hosts: Vec<Host> = records
            .iter()
            .map(|r| {
                // A value-less claim is unreadable, as the agent's census reads it.
                let claim_raw = r.attributes.get(&names.lease).map(|v| v.clone().unwrap_or_default());
                let claim = claim_raw.as_ref().map(|v| Claim::parse(v).map_err(|_| v.clone()));
                let claim_live = match &claim {
                    Some(Ok(c)) => c.is_live(now, settings.skew),
                    Some(Err(_)) => true,
                    None => false,
                };
                Host {
                    arn: r.arn.clone(),
                    instance_id: r.ec2_instance_id.clone(),
                    az: r.value(AZ_ATTRIBUTE).map(str::to_owned),
                    ecs_status: r.status.clone(),
                    agent_connected: r.agent_connected,
                    drained_marker: r.has(&names.drained),
                    drained_by_others: r.value(&names.drained).is_some_and(crate::lease::drained_by_others),
                    report: report_of(r.attributes.get(&names.status)),
                    claim,
                    claim_raw,
                    claim_live,
                    opted_out: r.value(&names.opt_out).is_some_and(|v| v.eq_ignore_ascii_case("true")),
                    update_now: r.has(&names.update_now),
                    slot: slots.get(r.arn.as_str()).cloned(),
                }
            })
            .collect();
        hosts.sort_by(|a, b| a.label().cmp(b.label()).then_with(|| a.arn.cmp(&b.arn)));

        let mut versions: BTreeMap<String, usize> = BTreeMap::new();
        for h in &hosts {
            let v = h.status().map(|s| s.running.as_str()).filter(|v| *v != "-").unwrap_or(UNKNOWN_VERSION);
            *versions.entry(v.to_owned()).or_default() += 1;
        }
        let targets = hosts.iter().flat_map(|h| {
            let status = h.status().map(|s| s.target.as_str());
            let claim = h.claim.as_ref().and_then(|c| c.as_ref().ok()).map(|c| c.target.as_str());
            status.into_iter().chain(claim)
        });
        let newest_target = targets.filter(|t| *t != "-" && !t.is_empty()).max_by(|a, b| compare_versions(a, b)).map(str::to_owned);
        let behind = match &newest_target {
            Some(newest) => hosts
                .iter()
                .filter_map(|h| h.status())
                .filter(|s| s.running != "-" && compare_versions(&s.running, newest) == Ordering::Less)
                .count(),
            None => 0,
        };
        let mut failures: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for r in &records {
            let marker = r.value(&names.failed).and_then(crate::halt::FailureMarker::parse);
            if let Some(m) = marker {
                let label = hosts.iter().find(|h| h.arn == r.arn).map_or(r.arn.clone(), |h| h.label().to_owned());
                failures.entry(m.version).or_default().push(label);
            }
        }
        FleetView {
            failures,
            cluster: cluster.name.clone(),
            cluster_arn: cluster.arn.clone(),
            observed_at: now,
            tags: FleetTags::read(&cluster.tags, names, settings.default_limit),
            limit_tag: cluster.tags.get(&names.max_concurrent_tag).cloned(),
            names: names.clone(),
            slots_held: census.taken(),
            versions,
            newest_target,
            behind,
            hosts,
        }
    }
}

/// The agent's census over the described instances: the claims, markers and DRAINING
/// statuses it would list, sorted by its own rule (as seen by no instance in particular).
fn census_of(records: &[InstanceRecord], settings: &ViewSettings, now: WallTime) -> Census {
    let names = &settings.names;
    let attribute = |r: &InstanceRecord, name: &str| {
        r.attributes.get(name).map(|v| Attribute { target: r.arn.clone(), name: name.to_owned(), value: v.clone() })
    };
    let claims = records.iter().filter_map(|r| attribute(r, &names.lease)).collect();
    let markers = records.iter().filter_map(|r| attribute(r, &names.drained)).collect();
    let draining = if settings.foreign_draining {
        records.iter().filter(|r| r.status == "DRAINING").map(|r| r.arn.clone()).collect()
    } else {
        vec![]
    };
    Census::from_listings("", claims, markers, draining, now, settings.skew)
}

fn report_of(value: Option<&Option<String>>) -> Report {
    match value {
        None => Report::Missing,
        Some(v) => {
            let raw = v.clone().unwrap_or_default();
            match Status::parse(&raw) {
                Some(status) => Report::Published { format: Status::format_of(&raw), status, raw },
                None => Report::Unreadable(raw),
            }
        }
    }
}

/// Orders Bottlerocket version strings: numeric parts as numbers (`1.9.0` < `1.10.0`), any
/// other part as text, and a version that is a prefix of another before it.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let parts = |s: &str| s.split(['.', '-', '+']).map(str::to_owned).collect::<Vec<_>>();
    let (pa, pb) = (parts(a), parts(b));
    for (x, y) in pa.iter().zip(&pb) {
        let o = match (x.parse::<u64>(), y.parse::<u64>()) {
            (Ok(m), Ok(n)) => m.cmp(&n),
            _ => x.cmp(y),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    pa.len().cmp(&pb.len())
}

/// Every container instance of `cluster`: ListContainerInstances to its last page, then
/// DescribeContainerInstances in chunks of 100. Instances that vanish between the two are left
/// out.
pub async fn read_instances<A: FleetApi>(api: &A, cluster: &str) -> Result<Vec<InstanceRecord>, FleetError> {
    let mut arns = Vec::new();
    let mut token = None;
    for page in 0.. {
        if page == MAX_PAGES {
            return Err(FleetError::Ecs(crate::cluster::ClusterError::Incomplete {
                op: "ListContainerInstances",
                message: format!("still more after {MAX_PAGES} pages ({} instances read)", arns.len()),
            }));
        }
        let (items, next) = api.list_instances(cluster, token).await?;
        arns.extend(items);
        match next {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    let mut records = Vec::with_capacity(arns.len());
    for chunk in arns.chunks(DESCRIBE_CHUNK) {
        records.extend(api.describe_instances(cluster, chunk).await?);
    }
    Ok(records)
}

/// Reads the whole fleet once.
pub async fn read_fleet<A: FleetApi>(
    api: &A,
    cluster: &str,
    settings: &ViewSettings,
    now: impl Fn() -> WallTime,
) -> Result<FleetView, FleetError> {
    let info = api.describe_cluster(cluster).await?;
    let records = read_instances(api, cluster).await?;
    Ok(FleetView::build(&info, records, settings, now()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::fleet::source::CallCounts;
    use std::cell::RefCell;

    const NOW: i64 = 1_800_000_000;

    pub(crate) fn cluster(tags: &[(&str, &str)]) -> ClusterInfo {
        ClusterInfo {
            arn: "arn:aws:ecs:us-east-1:123456789012:cluster/prod".into(),
            name: "prod".into(),
            status: "ACTIVE".into(),
            tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    pub(crate) fn record(n: usize, status: &str, attrs: &[(&str, Option<&str>)]) -> InstanceRecord {
        let mut attributes: BTreeMap<String, Option<String>> =
            attrs.iter().map(|(k, v)| (k.to_string(), v.map(str::to_owned))).collect();
        attributes.insert(AZ_ATTRIBUTE.into(), Some(format!("us-east-1{}", ['a', 'b', 'c'][n % 3])));
        InstanceRecord {
            arn: format!("arn:aws:ecs:us-east-1:123456789012:container-instance/prod/{n:032x}"),
            ec2_instance_id: Some(format!("i-{n:017x}")),
            status: status.into(),
            agent_connected: true,
            attributes,
        }
    }

    fn claim(phase: &str, expires_in: i64) -> String {
        format!("v1:{phase}:{}:{}:0badf00d:1.27.0", NOW - 100, NOW + expires_in)
    }

    fn view(records: Vec<InstanceRecord>, tags: &[(&str, &str)]) -> FleetView {
        FleetView::build(&cluster(tags), records, &ViewSettings::defaults("br-update"), WallTime::from_secs(NOW))
    }

    #[test]
    fn slots_are_counted_as_the_agent_counts_them() {
        let lease = "br-update.lease";
        let marker = "br-update.drained";
        let records = vec![
            record(0, "ACTIVE", &[]),
            record(1, "ACTIVE", &[(lease, Some(&claim("c", 300)))]),
            record(2, "DRAINING", &[(lease, Some(&claim("d", 300))), (marker, Some("1"))]),
            record(3, "DRAINING", &[]),
            record(4, "DRAINING", &[(lease, Some(&claim("d", -3600))), (marker, Some("1"))]),
            record(5, "ACTIVE", &[(lease, Some("nonsense"))]),
            // Lapsed claim, no marker, ACTIVE: nothing holds a slot.
            record(6, "ACTIVE", &[(lease, Some(&claim("h", -3600)))]),
            // Drained by an operator before its agent's drain: the marker holds the slot.
            record(7, "DRAINING", &[(lease, Some(&claim("r", -60))), (marker, Some("by-other:0badf00d"))]),
        ];
        let v = view(records, &[]);
        let slots: Vec<Option<&str>> = v.hosts.iter().map(|h| h.slot.as_ref().map(SlotReason::word)).collect();
        assert_eq!(
            slots,
            [
                None,
                Some("claim"),
                Some("claim"),
                Some("draining-not-by-agent"),
                Some("drained-by-agent"),
                Some("unreadable-claim"),
                None,
                Some("drained-by-agent")
            ]
        );
        assert_eq!(v.slots_held, 6);
        assert_eq!(v.hosts[7].drained_by(), Some(DrainedBy::Other), "its agent holds the slot, an operator drained it");
        assert_eq!(v.hosts[2].drained_by(), Some(DrainedBy::Agent));
        assert_eq!(v.hosts[3].drained_by(), Some(DrainedBy::Other));
        assert_eq!(v.hosts[0].drained_by(), None);
        assert!(v.hosts[5].claim_live && !v.hosts[4].claim_live && !v.hosts[6].claim_live);
    }

    #[test]
    fn foreign_draining_is_left_out_when_the_setting_says_so() {
        let mut settings = ViewSettings::defaults("br-update");
        settings.foreign_draining = false;
        let v = FleetView::build(&cluster(&[]), vec![record(0, "DRAINING", &[])], &settings, WallTime::from_secs(NOW));
        assert_eq!((v.slots_held, v.hosts[0].slot.clone()), (0, None));
    }

    #[test]
    fn statuses_versions_and_hosts_behind() {
        let status = "br-update.status";
        let records = vec![
            record(0, "ACTIVE", &[(status, Some("v2:idle:1.27.0:-:updated:1799999000:"))]),
            record(1, "ACTIVE", &[(status, Some("v2:waiting:1.26.0:1.27.0:waiting-for-slot:1799999900:slots held by ab12 claim-d"))]),
            record(2, "ACTIVE", &[(status, Some("v1:idle:1.26.0:-:up-to-date"))]),
            record(3, "ACTIVE", &[]),
            record(4, "ACTIVE", &[(status, Some("garbage"))]),
            record(5, "ACTIVE", &[(status, None)]),
        ];
        let v = view(records, &[]);
        assert_eq!(v.newest_target.as_deref(), Some("1.27.0"));
        assert_eq!(v.behind, 2);
        let versions: Vec<(&str, usize)> = v.versions.iter().map(|(k, n)| (k.as_str(), *n)).collect();
        assert_eq!(versions, [("1.26.0", 2), ("1.27.0", 1), (UNKNOWN_VERSION, 3)]);
        assert_eq!(v.hosts[1].waiting_for(), Some("slots held by ab12 claim-d"));
        assert!(matches!(v.hosts[2].report, Report::Published { format: "v1", .. }));
        assert_eq!(v.hosts[3].report, Report::Missing);
        assert_eq!(v.hosts[4].report, Report::Unreadable("garbage".into()));
        assert_eq!(v.hosts[5].report, Report::Unreadable(String::new()), "a value-less status is not readable");
        assert_eq!(v.hosts[0].waiting_for(), None);
    }

    #[test]
    fn flags_are_read_as_the_agent_reads_them() {
        let records = vec![
            record(0, "ACTIVE", &[("br-update.opt-out", Some("TRUE")), ("br-update.update-now", None)]),
            record(1, "ACTIVE", &[("br-update.opt-out", Some("no")), ("other.update-now", Some("true"))]),
        ];
        let v = view(records, &[("br-update.paused", "true"), ("br-update.max-concurrent", "4")]);
        assert!(v.hosts[0].opted_out && v.hosts[0].update_now);
        assert!(!v.hosts[1].opted_out && !v.hosts[1].update_now);
        assert!(v.tags.paused);
        assert_eq!((v.tags.limit, v.limit_tag.as_deref()), (4, Some("4")));
    }

    #[test]
    fn versions_order_numerically() {
        assert_eq!(compare_versions("1.9.0", "1.10.0"), Ordering::Less);
        assert_eq!(compare_versions("1.27.0", "1.27.0"), Ordering::Equal);
        assert_eq!(compare_versions("1.27", "1.27.0"), Ordering::Less);
        assert_eq!(compare_versions("2.0.0", "1.99.99"), Ordering::Greater);
        assert_eq!(compare_versions("1.0.0-rc1", "1.0.0-rc2"), Ordering::Less);
    }

    /// A cluster of `n` instances served in ECS's page and chunk sizes, counting every call and
    /// refusing requests ECS would refuse.
    pub(crate) struct FakeFleet {
        pub records: Vec<InstanceRecord>,
        pub calls: RefCell<CallCounts>,
        pub writes: RefCell<Vec<String>>,
    }

    impl FakeFleet {
        pub(crate) fn new(records: Vec<InstanceRecord>) -> FakeFleet {
            FakeFleet { records, calls: Default::default(), writes: Default::default() }
        }
    }

    impl FleetApi for FakeFleet {
        fn region(&self) -> &str {
            "us-east-1"
        }
        async fn describe_cluster(&self, cluster: &str) -> Result<ClusterInfo, FleetError> {
            self.calls.borrow_mut().add("DescribeClusters");
            if cluster != "prod" {
                return Err(FleetError::ClusterNotFound { cluster: cluster.into(), region: "us-east-1".into() });
            }
            Ok(self::cluster(&[]))
        }
        async fn list_instances(&self, _: &str, token: Option<String>) -> Result<(Vec<String>, Option<String>), FleetError> {
            self.calls.borrow_mut().add("ListContainerInstances");
            let start: usize = token.map_or(0, |t| t.parse().expect("a token this fake handed out"));
            let end = (start + crate::fleet::source::LIST_PAGE).min(self.records.len());
            let page = self.records[start..end].iter().map(|r| r.arn.clone()).collect();
            Ok((page, (end < self.records.len()).then(|| end.to_string())))
        }
        async fn describe_instances(&self, _: &str, instances: &[String]) -> Result<Vec<InstanceRecord>, FleetError> {
            self.calls.borrow_mut().add("DescribeContainerInstances");
            assert!((1..=DESCRIBE_CHUNK).contains(&instances.len()), "ECS refuses {} instances in one call", instances.len());
            Ok(self
                .records
                .iter()
                .filter(|r| instances.iter().any(|i| *i == r.arn || *i == crate::status::short_id(&r.arn)))
                .cloned()
                .collect())
        }
        async fn tag_cluster(&self, _: &str, key: &str, value: &str) -> Result<(), FleetError> {
            self.calls.borrow_mut().add("TagResource");
            self.writes.borrow_mut().push(format!("tag {key}={value}"));
            Ok(())
        }
        async fn untag_cluster(&self, _: &str, key: &str) -> Result<(), FleetError> {
            self.calls.borrow_mut().add("UntagResource");
            self.writes.borrow_mut().push(format!("untag {key}"));
            Ok(())
        }
        async fn put_attribute(&self, _: &str, instance: &str, name: &str, value: &str) -> Result<(), FleetError> {
            self.calls.borrow_mut().add("PutAttributes");
            self.writes.borrow_mut().push(format!("put {} {name}={value}", crate::status::short_id(instance)));
            Ok(())
        }
        async fn delete_attributes(&self, _: &str, instance: &str, names: &[&str]) -> Result<(), FleetError> {
            self.calls.borrow_mut().add("DeleteAttributes");
            self.writes.borrow_mut().push(format!("delete {} {}", crate::status::short_id(instance), names.join(",")));
            Ok(())
        }
        async fn set_active(&self, _: &str, instance: &str) -> Result<(), FleetError> {
            self.calls.borrow_mut().add("UpdateContainerInstancesState");
            self.writes.borrow_mut().push(format!("active {}", crate::status::short_id(instance)));
            Ok(())
        }
        fn take_calls(&self) -> CallCounts {
            std::mem::take(&mut *self.calls.borrow_mut())
        }
    }

    async fn calls_for(n: usize) -> CallCounts {
        let fake = FakeFleet::new((0..n).map(|i| record(i, "ACTIVE", &[])).collect());
        let v = read_fleet(&fake, "prod", &ViewSettings::defaults("br-update"), || WallTime::from_secs(NOW)).await.expect("read");
        assert_eq!(v.hosts.len(), n, "every instance read");
        fake.take_calls()
    }

    #[tokio::test]
    async fn one_refresh_of_5000_instances_costs_101_calls() {
        let c = calls_for(5000).await;
        assert_eq!(
            (c.of("DescribeClusters"), c.of("ListContainerInstances"), c.of("DescribeContainerInstances"), c.total()),
            (1, 50, 50, 101),
            "{c}"
        );
        let c = calls_for(100).await;
        assert_eq!(c.total(), 3, "{c}");
        let c = calls_for(101).await;
        assert_eq!((c.of("ListContainerInstances"), c.of("DescribeContainerInstances")), (2, 2), "{c}");
        let c = calls_for(0).await;
        assert_eq!((c.of("ListContainerInstances"), c.of("DescribeContainerInstances")), (1, 0), "{c}");
    }

    #[tokio::test]
    async fn an_unknown_cluster_is_named_with_its_region() {
        let fake = FakeFleet::new(vec![]);
        let err = read_fleet(&fake, "nope", &ViewSettings::defaults("br-update"), || WallTime::from_secs(NOW)).await;
        assert_eq!(err.map(|_| ()).map_err(|e| e.to_string()), Err("cluster nope not found in us-east-1".to_owned()));
    }
}
