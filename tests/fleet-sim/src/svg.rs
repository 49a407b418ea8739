//! A picture of a rollout: one row per host, coloured by what the host was doing (waiting for a
//! slot, holding one, draining, rebooting, verifying), with a legend and a time axis counted
//! from the update's publication. Plain SVG text, no dependencies.

use std::fmt::Write;

use crate::trace::{Interval, Ms, Trace};

/// What a stretch of a row shows, in painting order (later ones cover earlier ones).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Paint {
    Waiting,
    Holding,
    Draining,
    Verifying,
    Rebooting,
}

impl Paint {
    const ALL: [Paint; 5] = [Paint::Waiting, Paint::Holding, Paint::Draining, Paint::Rebooting, Paint::Verifying];

    fn colour(self) -> &'static str {
        match self {
            Paint::Waiting => "#f2c14e",
            Paint::Holding => "#8ecae6",
            Paint::Draining => "#e76f51",
            Paint::Rebooting => "#3d405b",
            Paint::Verifying => "#2a9d8f",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Paint::Waiting => "waiting for a slot",
            Paint::Holding => "holding a slot",
            Paint::Draining => "draining",
            Paint::Rebooting => "rebooting",
            Paint::Verifying => "verifying after boot",
        }
    }
}

const LEFT: f64 = 64.0;
const TOP: f64 = 58.0;
const WIDTH: f64 = 1000.0;
const BOTTOM: f64 = 40.0;

/// The timeline of `trace` as an SVG document, titled `title`.
pub fn timeline(trace: &Trace, title: &str) -> String {
    let phases = trace.phases();
    let from = trace.published;
    let last = phases.iter().flat_map(|p| p.slots.iter().map(|s| s.end)).max().unwrap_or(trace.end).max(from + 60_000);
    let span = (last - from) as f64 * 1.02;
    let row = (640.0 / trace.hosts.len().max(1) as f64).clamp(3.0, 14.0);
    let height = TOP + row * trace.hosts.len() as f64 + BOTTOM;
    let x = |t: Ms| LEFT + (t.saturating_sub(from)) as f64 / span * WIDTH;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{height:.0}" viewBox="0 0 {w} {height:.0}" font-family="sans-serif" font-size="11">"#,
        w = LEFT + WIDTH + 16.0
    );
    let _ = writeln!(out, r##"<rect width="100%" height="100%" fill="#ffffff"/>"##);
    let _ = writeln!(out, r#"<text x="{LEFT}" y="16" font-size="13" font-weight="bold">{}</text>"#, escape(title));
    legend(&mut out);
    axis(&mut out, from, span, height);
    for (h, p) in phases.iter().enumerate() {
        let y = TOP + row * h as f64;
        if row >= 8.0 {
            let _ = writeln!(out, r#"<text x="{:.1}" y="{:.1}" text-anchor="end" font-size="9">{}</text>"#, LEFT - 4.0, y + row * 0.8, escape(trace.name(h)));
        }
        for (paint, spans) in row_paints(p) {
            for s in spans.iter().filter(|s| s.end > from && !s.is_empty()) {
                let (x0, x1) = (x(s.start.max(from)), x(s.end));
                let _ = writeln!(
                    out,
                    r#"<rect x="{x0:.2}" y="{:.2}" width="{:.2}" height="{:.2}" fill="{}"/>"#,
                    y + 0.5,
                    (x1 - x0).max(0.6),
                    (row - 1.0).max(1.0),
                    paint.colour()
                );
            }
        }
    }
    out.push_str("</svg>\n");
    out
}

/// One host's stretches, in painting order.
fn row_paints(p: &crate::trace::Phases) -> Vec<(Paint, Vec<Interval>)> {
    let verifying: Vec<Interval> = p
        .rebooting
        .iter()
        .filter_map(|r| p.slots.iter().find(|s| s.contains(r.end)).map(|s| Interval { start: r.end, end: s.end }))
        .collect();
    vec![
        (Paint::Waiting, p.waiting.clone()),
        (Paint::Holding, p.slots.clone()),
        (Paint::Draining, p.draining.clone()),
        (Paint::Verifying, verifying),
        (Paint::Rebooting, p.rebooting.clone()),
    ]
}

fn legend(out: &mut String) {
    let mut x = LEFT;
    for paint in Paint::ALL {
        let _ = writeln!(out, r#"<rect x="{x:.0}" y="28" width="12" height="12" fill="{}"/>"#, paint.colour());
        let _ = writeln!(out, r#"<text x="{:.0}" y="38">{}</text>"#, x + 16.0, paint.label());
        x += 30.0 + 6.2 * paint.label().len() as f64;
    }
}

fn axis(out: &mut String, from: Ms, span: f64, height: f64) {
    let step = tick_step(span);
    let base = height - BOTTOM + 4.0;
    let _ = writeln!(out, r##"<line x1="{LEFT}" y1="{base}" x2="{}" y2="{base}" stroke="#555"/>"##, LEFT + WIDTH);
    let mut t = 0u64;
    while (t as f64) <= span {
        let x = LEFT + t as f64 / span * WIDTH;
        let _ = writeln!(out, r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd" stroke-width="0.5"/>"##, base + 4.0);
        let _ = writeln!(out, r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#, base + 16.0, tick_label(t));
        t += step;
    }
    let _ = writeln!(out, r#"<text x="{:.0}" y="{:.1}" text-anchor="middle">time since the update was published</text>"#, LEFT + WIDTH / 2.0, base + 32.0);
    let _ = from;
}

/// A round tick spacing giving about ten ticks over `span` ms.
fn tick_step(span: f64) -> Ms {
    const MIN: Ms = 60_000;
    let steps = [5 * MIN, 10 * MIN, 15 * MIN, 30 * MIN, 60 * MIN, 120 * MIN, 360 * MIN, 720 * MIN, 1440 * MIN, 2880 * MIN];
    steps.into_iter().find(|&s| span / s as f64 <= 12.0).unwrap_or(7 * 1440 * MIN)
}

fn tick_label(t: Ms) -> String {
    let m = t / 60_000;
    match (m / 1440, m / 60 % 24, m % 60) {
        (0, 0, min) => format!("{min}m"),
        (0, h, 0) => format!("{h}h"),
        (0, h, min) => format!("{h}h{min:02}"),
        (d, 0, 0) => format!("{d}d"),
        (d, h, _) => format!("{d}d{h}h"),
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
