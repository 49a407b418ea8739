//! The fleet forecast against the simulated rollout it forecast: on a fixed seed (virtual time,
//! so the run is the same every time), the forecast finish must be within half the actual
//! makespan either way, and the hosts' ETAs off by no more than a random order of service costs.
//! A forecaster that ignores the limit, the seeds or the recorded durations misses by more.

use fleet_sim::forecast::measure;

#[test]
fn the_forecast_finish_is_within_half_the_actual_makespan() {
    for (hosts, n) in [(60, 1), (60, 5)] {
        let a = measure(hosts, n, 7).unwrap_or_else(|e| panic!("{e}"));
        eprintln!("MEASURE: forecast {hosts} hosts N={n}: {a:?} makespan error {:+.1}%", a.makespan_error() * 100.0);
        assert!(a.compared >= hosts * 9 / 10, "most hosts compared: {a:?}");
        assert!(a.makespan_error().abs() <= 0.5, "{hosts} hosts, N={n}: makespan error {:+.1}% ({a:?})", a.makespan_error() * 100.0);
        // Waiting hosts find a free slot in random order, not first come first served, so one
        // host's ETA may be off by much of the rollout; a third of it is what a random order
        // costs on average, and a forecaster that ignored the limit would be off by half.
        let bound = a.actual_makespan.as_secs_f64() * 0.35;
        assert!(a.per_host.mean <= bound, "{hosts} hosts, N={n}: mean per-host error {} s over {bound} s ({a:?})", a.per_host.mean);
    }
}
