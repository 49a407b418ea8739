//! A [`FleetView`] as a table for people and as JSON for scripts (the shape is in the module
//! doc of [`crate::fleet`] and in the README; keys are never left out, absent values are null).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use super::forecast::{EtaState, Forecast, SlotSource};
use super::model::{FleetView, Host, Report};
use super::tags::LimitSource;
use crate::lease::Claim;
use crate::status::short_id;

/// ANSI: bold.
const BOLD: &str = "\x1b[1m";
/// ANSI: bold yellow, for rows that changed since the last refresh.
const CHANGED: &str = "\x1b[1;33m";
/// ANSI: back to normal.
const RESET: &str = "\x1b[0m";

/// How the table is laid out.
#[derive(Clone, Copy, Debug, Default)]
pub struct TableStyle<'a> {
    /// ANSI colours (only on a terminal).
    pub colour: bool,
    /// In `--watch`: the hosts (by ARN) that changed since the last refresh; a mark column is
    /// shown, `*` on those rows.
    pub changed: Option<&'a BTreeSet<String>>,
    /// With `--forecast`: the forecast line in the header and an ETA column.
    pub forecast: Option<&'a Forecast>,
}

/// The header and one row per host.
pub fn table(view: &FleetView, style: TableStyle<'_>) -> String {
    let now = view.observed_at.as_secs();
    let mut out = String::new();
    let bold = |s: &str| if style.colour { format!("{BOLD}{s}{RESET}") } else { s.to_owned() };
    out.push_str(&bold(&format!("cluster {}  ({})  read {}", view.cluster, view.cluster_arn, view.observed_at)));
    out.push('\n');
    out.push_str(&header_line(view));
    out.push('\n');
    let versions: Vec<String> = view.versions.iter().map(|(v, n)| format!("{v} x{n}")).collect();
    let behind = match &view.newest_target {
        Some(t) => format!("newest target {t}: {} host(s) behind", view.behind),
        None => "no target seen".to_owned(),
    };
    out.push_str(&format!("hosts {}: {}   {behind}\n", view.hosts.len(), if versions.is_empty() { "none".into() } else { versions.join(", ") }));
    if let Some(f) = style.forecast {
        out.push_str(&forecast_line(f, view.observed_at.as_secs(), view.tags.limit));
        out.push('\n');
    }
    for (version, on) in &view.failures {
        let line = format!("failed: version {version} on {} (halted where cluster.halt-after-failures <= {}; resume: fleet resume-version {version})", on.join(", "), on.len());
        out.push_str(&(if style.colour { format!("{BOLD}{line}{RESET}") } else { line }));
        out.push('\n');
    }
    out.push('\n');

    let mut head = ["INSTANCE", "AZ", "ECS", "VERSION", "PHASE", "TARGET", "LAST RESULT", "CLAIM", "FLAGS", "WHY"].map(String::from).to_vec();
    if style.forecast.is_some() {
        head.insert(head.len() - 1, "ETA".into());
    }
    let mut rows: Vec<Vec<String>> = vec![head];
    // A waiting host names the holders by container-instance id; operators know hosts by EC2 id.
    let labels: BTreeMap<&str, &str> = view.hosts.iter().map(|h| (short_id(&h.arn), h.label())).collect();
    rows.extend(view.hosts.iter().map(|h| {
        let mut r = row(h, now, &labels);
        if let Some(f) = style.forecast {
            r.insert(r.len() - 1, eta_cell(f, &h.arn, now));
        }
        r
    }));
    let marks: Vec<&str> = std::iter::once(" ")
        .chain(view.hosts.iter().map(|h| if style.changed.is_some_and(|c| c.contains(&h.arn)) { "*" } else { " " }))
        .collect();
    let widths: Vec<usize> =
        (0..rows[0].len()).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    for (i, r) in rows.iter().enumerate() {
        let mut line = String::new();
        if style.changed.is_some() {
            line.push_str(marks[i]);
            line.push(' ');
        }
        for (j, cell) in r.iter().enumerate() {
            if j + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[j]));
            }
        }
        let line = line.trim_end().to_owned();
        let line = match (style.colour, i == 0, marks[i] == "*") {
            (true, true, _) => format!("{BOLD}{line}{RESET}"),
            (true, false, true) => format!("{CHANGED}{line}{RESET}"),
            _ => line,
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// The limit in force and where it comes from, whether paused, and the slots held.
fn header_line(view: &FleetView) -> String {
    let tag = &view.tags;
    let source = match &tag.source {
        LimitSource::Tag => "from cluster tag".to_owned(),
        LimitSource::Default => "config default; no cluster tag".to_owned(),
        LimitSource::InvalidTag(v) => format!("config default; ignoring invalid value `{v}` of cluster tag"),
    };
    let paused = if tag.paused { "PAUSED (no host takes a new slot; hosts mid-update finish)" } else { "no" };
    format!(
        "limit {} ({source} {})   paused: {paused}   slots held now: {} of {}",
        tag.limit,
        view.names.max_concurrent_tag,
        view.slots_held,
        tag.limit
    )
}

/// `rollout finishes ≈ HH:MM UTC (±error)`, how far off that is, and what it rests on.
fn forecast_line(f: &Forecast, now: i64, limit: u32) -> String {
    let basis = match f.slot_source {
        SlotSource::Recorded(n) => format!("slot time {} (median of {n} recorded update(s))", age(f.slot_time.as_secs() as i64)),
        SlotSource::Default => format!("slot time {} (assumed: no host recorded one yet)", age(f.slot_time.as_secs() as i64)),
    };
    match (f.finish, &f.blocked) {
        (Some(at), _) => format!(
            "rollout finishes ≈ {} (±{}), in {}: {} host(s) to go to {} at N = {limit}; {basis}",
            clock_time(at.as_secs(), now),
            age(f.error.as_secs() as i64),
            age(at.as_secs() - now),
            f.to_go,
            f.target
        ),
        (None, why) => format!(
            "rollout to {}: no finish forecast ({}); {} host(s) to go; {basis}",
            f.target,
            why.as_deref().unwrap_or("some host cannot be placed"),
            f.to_go
        ),
    }
}

/// `HH:MM UTC` within a day of `now`, else `YYYY-MM-DD HH:MM UTC`.
fn clock_time(secs: i64, now: i64) -> String {
    let Some(t) = chrono::DateTime::from_timestamp(secs, 0) else { return "-".into() };
    if (secs - now).abs() < 86_400 {
        t.format("%H:%M UTC").to_string()
    } else {
        t.format("%Y-%m-%d %H:%M UTC").to_string()
    }
}

fn eta_cell(f: &Forecast, arn: &str, now: i64) -> String {
    match f.hosts.get(arn) {
        Some(e) => match (e.state, e.at) {
            (EtaState::Queued | EtaState::InProgress, Some(at)) => format!("≈ {}", clock_time(at.as_secs(), now)),
            (state, _) => state.word().to_owned(),
        },
        None => "-".into(),
    }
}

fn row(h: &Host, now: i64, labels: &BTreeMap<&str, &str>) -> Vec<String> {
    let ecs = match h.drained_by() {
        Some(by) => format!("DRAINING ({})", by.word()),
        None => h.ecs_status.clone(),
    };
    let (version, phase, target, result, why) = match &h.report {
        Report::Published { status, .. } => {
            let result = match status.since {
                Some(t) => format!("{} {} ago", status.result, age(now - t.as_secs())),
                None => status.result.clone(),
            };
            let why: Vec<&str> = status.detail.split(' ').map(|w| labels.get(w).copied().unwrap_or(w)).collect();
            (status.running.clone(), status.phase.clone(), status.target.clone(), result, why.join(" "))
        }
        Report::Missing => ("-".into(), "no agent (or too old)".into(), "-".into(), "-".into(), String::new()),
        Report::Unreadable(raw) => {
            ("-".into(), "unreadable status".into(), "-".into(), "-".into(), format!("garbage attribute \"{raw}\""))
        }
    };
    let mut flags = vec![];
    if h.opted_out {
        flags.push("opted-out".to_owned());
    }
    if h.update_now {
        flags.push("update-now".to_owned());
    }
    if h.drained_marker && h.drained_by().is_none() {
        flags.push("marker".to_owned());
    }
    if !h.agent_connected {
        flags.push("ecs-agent-disconnected".to_owned());
    }
    if let Some(s) = &h.slot {
        flags.push(format!("slot:{}", s.word()));
    }
    vec![
        h.label().to_owned(),
        h.az.clone().unwrap_or_else(|| "-".into()),
        ecs,
        version,
        phase,
        target,
        result,
        claim_text(h, now),
        if flags.is_empty() { "-".into() } else { flags.join(",") },
        why,
    ]
}

fn claim_text(h: &Host, now: i64) -> String {
    match &h.claim {
        None => "-".into(),
        Some(Err(raw)) => format!("unreadable \"{raw}\" (counts as live)"),
        Some(Ok(c)) => {
            let left = c.expires_at.saturating_sub(now);
            if left >= 0 {
                format!("{} expires in {}", c.phase.name(), age(left))
            } else if h.claim_live {
                format!("{} expired {} ago (counted for clock skew)", c.phase.name(), age(-left))
            } else {
                format!("{} lapsed {} ago", c.phase.name(), age(-left))
            }
        }
    }
}

/// A duration in seconds, short: `45s`, `12m`, `3h05m`, `2d04h`.
pub fn age(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..=89 => format!("{s}s"),
        90..=5399 => format!("{}m", (s + 30) / 60),
        5400..=86_399 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// `-` (the status's "none") as null.
fn version_or_null(v: &str) -> Value {
    if v == "-" || v.is_empty() {
        Value::Null
    } else {
        Value::String(v.to_owned())
    }
}

/// The view as the documented JSON object; `forecast` fills the forecast keys (else null).
pub fn json(view: &FleetView, forecast: Option<&Forecast>) -> Value {
    let now = view.observed_at.as_secs();
    let instances: Vec<Value> = view
        .hosts
        .iter()
        .map(|h| {
            let mut v = host_json(h, now);
            let eta = forecast.and_then(|f| f.hosts.get(&h.arn));
            let at = eta.and_then(|e| e.at).map(|t| t.as_secs());
            v["eta"] = json!(at);
            v["eta_in_s"] = json!(at.map(|t| t.saturating_sub(now)));
            v["eta_state"] = json!(eta.map(|e| e.state.word()));
            v
        })
        .collect();
    json!({
        "cluster": view.cluster,
        "cluster_arn": view.cluster_arn,
        "observed_at": now,
        "limit": view.tags.limit,
        "limit_source": view.tags.source.word(),
        "limit_tag": view.limit_tag,
        "paused": view.tags.paused,
        "slots_held": view.slots_held,
        "versions": view.versions,
        "newest_target": view.newest_target,
        "behind": view.behind,
        "failures": view.failures,
        "forecast": forecast.map(|f| forecast_json(f, now)),
        "instances": instances,
    })
}

fn forecast_json(f: &Forecast, now: i64) -> Value {
    let finish = f.finish.map(|t| t.as_secs());
    let (source, recorded) = match f.slot_source {
        SlotSource::Recorded(n) => ("recorded", n),
        SlotSource::Default => ("default", 0),
    };
    json!({
        "target": f.target,
        "finishes_at": finish,
        "finishes_in_s": finish.map(|t| t.saturating_sub(now)),
        "error_s": f.error.as_secs(),
        "hosts_to_go": f.to_go,
        "slot_time_s": f.slot_time.as_secs(),
        "slot_time_source": source,
        "slot_times_recorded": recorded,
        "blocked": f.blocked,
    })
}

fn host_json(h: &Host, now: i64) -> Value {
    let (report, raw, status) = match &h.report {
        Report::Published { status, format, raw } => (*format, Value::String(raw.clone()), Some(status)),
        Report::Missing => ("none", Value::Null, None),
        Report::Unreadable(raw) => ("unreadable", Value::String(raw.clone()), None),
    };
    let since = status.and_then(|s| s.since).map(|t| t.as_secs());
    json!({
        "instance_id": h.instance_id,
        "container_instance_arn": h.arn,
        "availability_zone": h.az,
        "ecs_status": h.ecs_status,
        "drained_by": h.drained_by().map(|d| d.word()),
        "agent_connected": h.agent_connected,
        "report": report,
        "status_raw": raw,
        "running": status.map_or(Value::Null, |s| version_or_null(&s.running)),
        "phase": status.map(|s| s.phase.clone()),
        "target": status.map_or(Value::Null, |s| version_or_null(&s.target)),
        "result": status.map(|s| s.result.clone()),
        "since": since,
        "since_ago_s": since.map(|t| now.saturating_sub(t)),
        "detail": status.map(|s| s.detail.clone()).filter(|d| !d.is_empty()),
        "seed": status.and_then(|s| s.seed),
        "last_update_s": status.and_then(|s| s.took),
        "claim": h.claim.as_ref().map(|c| claim_json(c, h.claim_raw.as_deref().unwrap_or_default(), h.claim_live, now)),
        "drained_marker": h.drained_marker,
        "opted_out": h.opted_out,
        "update_now": h.update_now,
        "slot": h.slot.as_ref().map(|s| s.word()),
        "waiting_for": h.waiting_for(),
    })
}

fn claim_json(c: &Result<Claim, String>, raw: &str, live: bool, now: i64) -> Value {
    match c {
        Ok(c) => json!({
            "readable": true,
            "raw": raw,
            "phase": c.phase.name(),
            "target": c.target,
            "claimed_at": c.claimed_at,
            "expires_at": c.expires_at,
            "expires_in_s": c.expires_at.saturating_sub(now),
            "live": live,
        }),
        Err(_) => json!({
            "readable": false,
            "raw": raw,
            "phase": null,
            "target": null,
            "claimed_at": null,
            "expires_at": null,
            "expires_in_s": null,
            "live": live,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::WallTime;
    use crate::fleet::model::tests::{cluster, record};
    use crate::fleet::model::ViewSettings;

    const NOW: i64 = 1_800_000_000;

    fn view() -> FleetView {
        let records = vec![
            record(1, "DRAINING", &[
                ("br-update.status", Some("v2:draining:1.26.0:1.27.0:in-progress:1799999880:")),
                ("br-update.lease", Some("v1:d:1799999800:1800000240:0badf00d:1.27.0")),
                ("br-update.drained", Some("1")),
            ]),
            record(2, "ACTIVE", &[("br-update.status", Some("v1:idle:1.26.0:-:up-to-date")), ("br-update.opt-out", Some("true"))]),
            record(3, "ACTIVE", &[("br-update.status", Some("junk")), ("br-update.lease", Some("junk"))]),
            record(4, "DRAINING", &[]),
            record(5, "ACTIVE", &[("br-update.status", Some(&format!("v2:waiting:1.26.0:1.27.0:waiting-for-slot:1799999000:slots held by {:032x} claim-d", 1)))]),
        ];
        FleetView::build(&cluster(&[("br-update.max-concurrent", "2")]), records, &ViewSettings::defaults("br-update"), WallTime::from_secs(NOW))
    }

    #[test]
    fn ages_are_short() {
        assert_eq!(
            [age(-5), age(45), age(90), age(3599), age(3 * 3600 + 300), age(86_399), age(90_000), age(2 * 86_400 + 4 * 3600)],
            ["0s", "45s", "2m", "60m", "3h05m", "23h59m", "1d01h", "2d04h"]
        );
    }

    #[test]
    fn the_table_says_what_each_host_does_without_colour_off_a_terminal() {
        let t = table(&view(), TableStyle::default());
        assert!(!t.contains('\x1b'), "{t}");
        assert!(t.contains("limit 2 (from cluster tag br-update.max-concurrent)"), "{t}");
        assert!(t.contains("slots held now: 3 of 2"), "{t}");
        let line = |id: &str| t.lines().find(|l| l.starts_with(id)).unwrap_or_else(|| panic!("no row {id} in\n{t}")).to_owned();
        let l = line("i-00000000000000001");
        for want in ["DRAINING (agent)", "draining", "in-progress 2m ago", "draining expires in 4m", "slot:claim"] {
            assert!(l.contains(want), "{want:?} in {l:?}");
        }
        assert!(line("i-00000000000000002").contains("opted-out"));
        let l = line("i-00000000000000003");
        assert!(l.contains("unreadable status") && l.contains("garbage attribute \"junk\"") && l.contains("slot:unreadable-claim"), "{l}");
        let l = line("i-00000000000000004");
        assert!(l.contains("DRAINING (other)") && l.contains("no agent (or too old)") && l.contains("slot:draining-not-by-agent"), "{l}");
        assert!(line("i-00000000000000005").ends_with("slots held by i-00000000000000001 claim-d"), "holders by EC2 id:\n{t}");
    }

    #[test]
    fn changed_rows_are_marked_and_coloured_only_on_a_terminal() {
        let v = view();
        let changed: BTreeSet<String> = [v.hosts[1].arn.clone()].into();
        let plain = table(&v, TableStyle { colour: false, changed: Some(&changed), forecast: None });
        let marked: Vec<&str> = plain.lines().filter(|l| l.starts_with("* ")).collect();
        assert_eq!(marked.len(), 1, "{plain}");
        assert!(marked[0].contains("i-00000000000000002"));
        let coloured = table(&v, TableStyle { colour: true, changed: Some(&changed), forecast: None });
        assert!(coloured.lines().any(|l| l.starts_with(CHANGED) && l.contains("i-00000000000000002")), "{coloured}");
    }

    #[test]
    fn json_has_every_key_on_every_instance() {
        let j = json(&view(), None);
        assert_eq!(j["limit"], 2);
        assert_eq!(j["limit_source"], "tag");
        assert_eq!(j["slots_held"], 3);
        let keys = |v: &Value| v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()).unwrap_or_default();
        let instances = j["instances"].as_array().expect("instances");
        assert_eq!(instances.len(), 5);
        for i in instances {
            assert_eq!(keys(i), keys(&instances[0]));
        }
        assert_eq!(instances[0]["claim"]["expires_in_s"], 240);
        assert_eq!(instances[0]["drained_by"], "agent");
        assert_eq!(instances[1]["report"], "v1");
        assert_eq!(instances[1]["target"], Value::Null);
        assert_eq!(instances[2]["report"], "unreadable");
        assert_eq!(instances[2]["status_raw"], "junk");
        assert_eq!(instances[2]["claim"]["readable"], false);
        assert_eq!(keys(&instances[0]["claim"]), keys(&instances[2]["claim"]));
        assert_eq!(instances[3]["report"], "none");
        assert_eq!(instances[3]["claim"], Value::Null);
    }
}
