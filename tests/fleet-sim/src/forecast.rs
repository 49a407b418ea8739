//! How good `fleet status --forecast` is: the forecaster reads the simulated cluster as the
//! operator's command would at the moment the update is published, and its per-host ETAs and
//! finish are compared with what the simulated rollout then did.
//!
//! The fleet has updated once before (a first run of the same fleet on another seed): each
//! host's journal keeps how long that update held its slot, as the agent records it, and every
//! host has checked and published its status (seed and that duration) before publication.

use std::collections::BTreeMap;
use std::time::Duration;

use agent::clock::WallTime;
use agent::fleet::forecast::{forecast, Assumptions, Forecast};
use agent::fleet::model::{FleetView, ViewSettings};
use agent::fleet::source::ClusterInfo;
use agent::status::Status;

use crate::metrics::Stats;
use crate::scenario::{Scenario, TARGET_VERSION};
use crate::sim::{self, mix, SimError, EPOCH_SECS};

/// The forecast against the rollout it forecast.
#[derive(Clone, Debug, PartialEq)]
pub struct Accuracy {
    /// Hosts in the fleet.
    pub hosts: usize,
    /// N.
    pub n: u32,
    /// Publication to the last host back in service, forecast.
    pub forecast_makespan: Duration,
    /// The same, as simulated.
    pub actual_makespan: Duration,
    /// Absolute error of each host's ETA, seconds: mean, median, 95th percentile, max.
    pub per_host: Stats,
    /// The 90th percentile of the same.
    pub per_host_p90: f64,
    /// The error quoted with the forecast (`±`).
    pub quoted_error: Duration,
    /// Hosts compared (every host that updated and had an ETA).
    pub compared: usize,
    /// Wall-clock time of both simulations.
    pub wall: Duration,
}

impl Accuracy {
    /// (forecast − actual) / actual makespan.
    pub fn makespan_error(&self) -> f64 {
        (self.forecast_makespan.as_secs_f64() - self.actual_makespan.as_secs_f64()) / self.actual_makespan.as_secs_f64().max(1.0)
    }
}

/// Simulates `hosts` hosts at limit `n` (seed `seed`) twice: the previous update, then the one
/// forecast at its publication; compares.
pub fn measure(hosts: usize, n: u32, seed: u64) -> Result<Accuracy, SimError> {
    let base = Scenario::realistic(hosts, n, seed);
    let previous = sim::run(&Scenario { seed: mix(seed, 0xf0_7e), ..base.clone() })?;
    let previous_took = recorded_took(&previous);
    let sc = Scenario { warmup_intervals: 2, previous_took, ..base }.with_time_limit();
    let run = sim::run(&sc)?;
    let published = WallTime::from_secs(EPOCH_SECS).plus(Duration::from_millis(run.trace.published));
    let f = forecast_at_publication(&sc, &run, published).ok_or(SimError::NoForecast)?;
    let finished = finish_times(&run, published);
    let mut errors = vec![];
    for (arn, at) in &finished {
        if let Some(eta) = f.hosts.get(arn).and_then(|e| e.at) {
            errors.push((eta.as_secs() - at.as_secs()).abs() as f64);
        }
    }
    let actual_end = finished.values().max().copied().unwrap_or(published);
    let mut sorted = errors.clone();
    sorted.sort_by(f64::total_cmp);
    let p90 = sorted.get(((sorted.len().max(1) - 1) as f64 * 0.9).round() as usize).copied().unwrap_or(0.0);
    Ok(Accuracy {
        hosts,
        n,
        forecast_makespan: f.finish.map_or(Duration::MAX, |t| t.since(published)),
        actual_makespan: actual_end.since(published),
        per_host: Stats::of(&errors),
        per_host_p90: p90,
        quoted_error: f.error,
        compared: errors.len(),
        wall: previous.wall + run.wall,
    })
}

/// What each host's agent recorded of its update in `run` (its status's `took`), the median for
/// a host that recorded none.
fn recorded_took(run: &sim::Run) -> Vec<u64> {
    let took: Vec<Option<u64>> = run
        .trace
        .hosts
        .iter()
        .map(|h| h.end.status_attribute.as_deref().and_then(Status::parse).and_then(|s| s.took))
        .collect();
    let mut known: Vec<u64> = took.iter().flatten().copied().collect();
    known.sort_unstable();
    let median = known.get(known.len() / 2).copied().unwrap_or(600);
    took.into_iter().map(|t| t.unwrap_or(median)).collect()
}

/// The forecast from the cluster as read at publication, for the version being published (no
/// host names it yet: the operator knows what was released).
pub fn forecast_at_publication(sc: &Scenario, run: &sim::Run, published: WallTime) -> Option<Forecast> {
    let cluster = ClusterInfo { arn: "arn:aws:ecs:us-east-1:123456789012:cluster/fleet".into(), name: "fleet".into(), status: "ACTIVE".into(), tags: BTreeMap::new() };
    let cfg = sc.config();
    let settings = ViewSettings { default_limit: sc.max_concurrent, ..ViewSettings::defaults(&cfg.cluster.attribute_prefix) };
    let mut view = FleetView::build(&cluster, run.at_publication.clone(), &settings, published);
    view.newest_target = Some(TARGET_VERSION.to_owned());
    forecast(&view, &Assumptions::from_config(&cfg))
}

/// When each host that updated was back in service: the end of its last slot.
fn finish_times(run: &sim::Run, published: WallTime) -> BTreeMap<String, WallTime> {
    let base = WallTime::from_secs(EPOCH_SECS);
    let arns: Vec<String> = run.at_publication.iter().map(|r| r.arn.clone()).collect();
    run.trace
        .phases()
        .iter()
        .zip(&arns)
        .filter_map(|(p, arn)| {
            let end = p.slots.iter().map(|s| s.end).max()?;
            let at = base.plus(Duration::from_millis(end));
            (at > published).then(|| (arn.clone(), at))
        })
        .collect()
}
