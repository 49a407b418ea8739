//! `fleet status`, once or with `--watch`: reads the fleet, prints it as a table or JSON, and
//! with `--verbose` the ECS calls each read made. A watch refreshes in place on a terminal,
//! marks the rows that changed since the last refresh, and ends cleanly (exit 0) on Ctrl-C.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::time::Duration;

use super::forecast::{forecast, Assumptions};
use super::model::{read_fleet, FleetView, ViewSettings};
use super::render::{json, table, TableStyle};
use super::source::FleetApi;
use super::FleetError;
use crate::clock::{Clock, SystemClock};
use crate::shutdown::Shutdown;

/// ANSI: cursor home, clear screen.
const CLEAR: &str = "\x1b[H\x1b[2J";

/// Where and how the status is printed.
#[derive(Clone, Debug, Default)]
pub struct Output {
    /// JSON (one document, or one line per refresh in a watch) instead of the table.
    pub json: bool,
    /// stdout is a terminal: a watch clears the screen between refreshes.
    pub terminal: bool,
    /// ANSI colours in the table.
    pub colour: bool,
    /// The ECS calls of each read, on stderr.
    pub verbose: bool,
    /// With `--forecast`: what the fleet's agents are assumed to run.
    pub forecast: Option<Assumptions>,
}

/// One read and what to print for it.
fn frame(view: &FleetView, out: &Output, changed: Option<&BTreeSet<String>>) -> String {
    let forecast = out.forecast.as_ref().and_then(|a| forecast(view, a));
    if out.json {
        let doc = json(view, forecast.as_ref());
        // A watch prints JSON Lines; a single read prints the document pretty.
        return if changed.is_some() { format!("{doc}\n") } else { format!("{doc:#}\n") };
    }
    let mut text = table(view, TableStyle { colour: out.colour, changed, forecast: forecast.as_ref() });
    if out.forecast.is_some() && forecast.is_none() {
        text.push_str("\nno forecast: no host names a newer version yet\n");
    }
    text
}

fn calls_line<A: FleetApi>(api: &A) -> String {
    format!("ECS calls for this read: {}\n", api.take_calls())
}

/// Writes to stdout; a closed pipe (`| head`) is not an error but the end of the output.
fn emit(text: &str) -> Result<bool, FleetError> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|_| stdout.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(FleetError::Output(e)),
    }
}

/// Reads the fleet once and prints it.
pub async fn status_once<A: FleetApi>(api: &A, cluster: &str, settings: &ViewSettings, out: &Output) -> Result<(), FleetError> {
    let view = read_fleet(api, cluster, settings, || SystemClock.now()).await;
    if out.verbose {
        eprint!("{}", calls_line(api));
    }
    emit(&frame(&view?, out, None))?;
    Ok(())
}

/// The hosts that differ from the last read (new ones included), by ARN.
pub fn changed_since(previous: &BTreeMap<String, String>, view: &FleetView) -> BTreeSet<String> {
    view.hosts.iter().filter(|h| previous.get(&h.arn) != Some(&h.signature())).map(|h| h.arn.clone()).collect()
}

/// Reads and prints every `every` until `shutdown` fires (then returns `Ok`). A failed first
/// read is an error; a later one is reported on stderr and the next refresh tries again.
pub async fn watch<A: FleetApi>(
    api: &A,
    cluster: &str,
    settings: &ViewSettings,
    out: &Output,
    every: Duration,
    shutdown: &Shutdown,
) -> Result<(), FleetError> {
    let mut previous: Option<BTreeMap<String, String>> = None;
    loop {
        let read = tokio::select! {
            biased;
            _ = shutdown.wait() => return Ok(()),
            r = read_fleet(api, cluster, settings, || SystemClock.now()) => r,
        };
        let calls = calls_line(api);
        match read {
            Ok(view) => {
                let changed = previous.as_ref().map(|p| changed_since(p, &view)).unwrap_or_default();
                let mut text = frame(&view, out, Some(&changed));
                if !out.json {
                    text.push_str(&format!(
                        "\nrefreshing every {}s; * marks rows changed since the last refresh; Ctrl-C to stop\n",
                        every.as_secs()
                    ));
                    text = if out.terminal { format!("{CLEAR}{text}") } else { format!("{text}\n") };
                }
                if !emit(&text)? {
                    return Ok(());
                }
                previous = Some(view.hosts.iter().map(|h| (h.arn.clone(), h.signature())).collect());
            }
            Err(e) if previous.is_none() => return Err(e),
            Err(e) => eprintln!("refresh failed: {e}; trying again in {}s", every.as_secs()),
        }
        if out.verbose {
            eprint!("{calls}");
        }
        tokio::select! {
            biased;
            _ = shutdown.wait() => return Ok(()),
            _ = tokio::time::sleep(every) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::WallTime;
    use crate::fleet::model::tests::{cluster, record};

    #[test]
    fn only_hosts_that_changed_are_marked_not_the_passing_of_time() {
        let settings = ViewSettings::defaults("br-update");
        let status = |result: &str| format!("v2:idle:1.26.0:-:{result}:1799999000:");
        let at = |now: i64, second: &str| {
            let records = vec![
                record(0, "ACTIVE", &[("br-update.status", Some(&status("up-to-date")))]),
                record(1, "ACTIVE", &[("br-update.status", Some(second))]),
            ];
            FleetView::build(&cluster(&[]), records, &settings, WallTime::from_secs(now))
        };
        let first = at(1_800_000_000, &status("up-to-date"));
        let sigs: BTreeMap<String, String> = first.hosts.iter().map(|h| (h.arn.clone(), h.signature())).collect();
        assert!(changed_since(&sigs, &at(1_800_000_060, &status("up-to-date"))).is_empty(), "a minute later, nothing changed");
        let later = at(1_800_000_060, &status("updated"));
        assert_eq!(changed_since(&sigs, &later), BTreeSet::from([later.hosts[1].arn.clone()]));
        assert_eq!(changed_since(&BTreeMap::new(), &later).len(), 2, "new hosts count as changed");
    }
}
