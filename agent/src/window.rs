//! Weekly maintenance windows in a named time zone.
//!
//! A window opens on given days of the week at a local wall-clock time and lasts a fixed real
//! duration. How daylight-saving changes are handled:
//! - a start time that falls in a skipped hour (clocks jump forward) opens the window as many
//!   minutes later as the jump (02:30 on a spring-forward night opens at 03:30 local), so the
//!   window keeps its full length;
//! - a start time that occurs twice (clocks fall back) opens the window at its first occurrence;
//! - the length is elapsed time: a 4-hour window across a change still lasts 4 real hours.
//!
//! A window may run past midnight and past the end of the week (Sunday 23:00 for 3 h ends Monday
//! 02:00). No windows at all means "any time".

use std::time::Duration;

use chrono::{Datelike, LocalResult, NaiveDate, NaiveTime, TimeZone, Weekday};
use chrono_tz::Tz;

use crate::clock::WallTime;

/// One weekly window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    /// The days it opens on.
    pub days: Vec<Weekday>,
    /// The local time it opens at.
    pub start: NaiveTime,
    /// How long it stays open (real time).
    pub length: Duration,
}

/// An occurrence of a window: open from `start` to `end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opening {
    /// When it opens.
    pub start: WallTime,
    /// When it closes.
    pub end: WallTime,
}

impl Opening {
    /// Whether `t` is inside.
    pub fn contains(&self, t: WallTime) -> bool {
        self.start <= t && t < self.end
    }
    /// How long it is open.
    pub fn length(&self) -> Duration {
        self.end.since(self.start)
    }
}

/// All of an operator's windows, in one zone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Windows {
    /// The zone the start times are read in.
    pub zone: Tz,
    /// The windows; empty means always open.
    pub windows: Vec<Window>,
}

impl Default for Windows {
    fn default() -> Windows {
        Windows { zone: chrono_tz::UTC, windows: vec![] }
    }
}

impl Windows {
    /// Whether any window is configured.
    pub fn is_restricted(&self) -> bool {
        !self.windows.is_empty()
    }

    /// The opening that contains `t`, if any (the one closing last, when several overlap).
    pub fn open_at(&self, t: WallTime) -> Option<Opening> {
        self.openings_around(t).into_iter().filter(|o| o.contains(t)).max_by_key(|o| o.end)
    }

    /// The opening that contains `t`, or else the next one to open after `t`.
    pub fn current_or_next(&self, t: WallTime) -> Option<Opening> {
        self.open_at(t).or_else(|| self.openings_around(t).into_iter().filter(|o| o.start > t).min_by_key(|o| o.start))
    }

    /// The first opening that starts strictly after `t`.
    pub fn next_start_after(&self, t: WallTime) -> Option<Opening> {
        let mut cursor = t;
        for _ in 0..3 {
            if let Some(o) = self.openings_around(cursor).into_iter().filter(|o| o.start > t).min_by_key(|o| o.start) {
                return Some(o);
            }
            cursor = cursor.plus(Duration::from_secs(7 * 86_400));
        }
        None
    }

    /// Every opening that starts within about a week and a half of `t`, either side.
    fn openings_around(&self, t: WallTime) -> Vec<Opening> {
        // Within ten days of the ends of chrono's calendar a local time or a day scanned would not
        // be representable (chrono panics on some of these); no window opens there.
        const MARGIN_MS: i64 = 10 * 86_400_000;
        let first = chrono::DateTime::<chrono::Utc>::MIN_UTC.timestamp_millis().saturating_add(MARGIN_MS);
        let last = chrono::DateTime::<chrono::Utc>::MAX_UTC.timestamp_millis().saturating_sub(MARGIN_MS);
        if !(first..=last).contains(&t.0) {
            return vec![];
        }
        let Some(utc) = chrono::DateTime::from_timestamp_millis(t.0) else { return vec![] };
        let today = utc.with_timezone(&self.zone).date_naive();
        let mut out = vec![];
        for offset in -8i64..=8 {
            let Some(date) = today.checked_add_signed(chrono::Duration::days(offset)) else { continue };
            for w in &self.windows {
                if !w.days.contains(&date.weekday()) {
                    continue;
                }
                if let Some(start) = self.local_start(date, w.start) {
                    out.push(Opening { start, end: start.plus(w.length) });
                }
            }
        }
        out
    }

    /// The instant a window starting at local `time` on `date` opens (see the module doc for DST).
    fn local_start(&self, date: NaiveDate, time: NaiveTime) -> Option<WallTime> {
        let naive = date.and_time(time);
        let dt = match self.zone.from_local_datetime(&naive) {
            LocalResult::Single(dt) => dt,
            LocalResult::Ambiguous(first, _) => first,
            LocalResult::None => {
                // In a gap: read the wall time with the offset in force just before the jump.
                // Checked: at the ends of chrono's calendar the subtraction would panic.
                let earlier = naive.checked_sub_signed(chrono::Duration::hours(3))?;
                let before = self.zone.from_local_datetime(&earlier).earliest()?;
                let offset = chrono::Offset::fix(before.offset());
                let utc = naive.checked_sub_signed(chrono::Duration::seconds(i64::from(offset.local_minus_utc())))?;
                return Some(WallTime(utc.and_utc().timestamp_millis()));
            }
        };
        Some(WallTime(dt.timestamp_millis()))
    }
}

/// Parses a day name (`mon`, `monday`, case-insensitive).
pub fn parse_day(s: &str) -> Option<Weekday> {
    let s = s.trim().to_ascii_lowercase();
    let days = [
        ("mon", Weekday::Mon),
        ("tue", Weekday::Tue),
        ("wed", Weekday::Wed),
        ("thu", Weekday::Thu),
        ("fri", Weekday::Fri),
        ("sat", Weekday::Sat),
        ("sun", Weekday::Sun),
    ];
    let full = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"];
    days.iter().zip(full).find(|((short, _), long)| s == *short || s == *long).map(|((_, d), _)| *d)
}

/// Parses `HH:MM` (24-hour).
pub fn parse_time(s: &str) -> Option<NaiveTime> {
    NaiveTime::parse_from_str(s.trim(), "%H:%M").ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(zone: Tz, y: i32, m: u32, d: u32, h: u32, min: u32) -> WallTime {
        let dt = zone.with_ymd_and_hms(y, m, d, h, min, 0).earliest().expect("valid local time");
        WallTime(dt.timestamp_millis())
    }

    fn utc(y: i32, m: u32, d: u32, h: u32, min: u32) -> WallTime {
        at(chrono_tz::UTC, y, m, d, h, min)
    }

    fn win(zone: Tz, days: &[Weekday], start: &str, hours: u64) -> Windows {
        Windows {
            zone,
            windows: vec![Window {
                days: days.to_vec(),
                start: parse_time(start).expect("time"),
                length: Duration::from_secs(hours * 3600),
            }],
        }
    }

    #[test]
    fn table_of_windows_and_instants() {
        // 2026-11-22 is a Sunday.
        let sat_night = win(chrono_tz::UTC, &[Weekday::Sat], "22:00", 4);
        type Case<'a> = (&'a str, &'a Windows, WallTime, Option<(WallTime, WallTime)>);
        let cases: Vec<Case> = vec![
            ("inside, before midnight", &sat_night, utc(2026, 11, 21, 23, 0), Some((utc(2026, 11, 21, 22, 0), utc(2026, 11, 22, 2, 0)))),
            ("inside, after midnight (wrap)", &sat_night, utc(2026, 11, 22, 1, 59), Some((utc(2026, 11, 21, 22, 0), utc(2026, 11, 22, 2, 0)))),
            ("just closed", &sat_night, utc(2026, 11, 22, 2, 0), None),
            ("before opening", &sat_night, utc(2026, 11, 21, 21, 59), None),
        ];
        for (name, w, t, want) in cases {
            assert_eq!(w.open_at(t).map(|o| (o.start, o.end)), want, "{name}");
        }
    }

    #[test]
    fn next_opening_wraps_the_week() {
        let sun_late = win(chrono_tz::UTC, &[Weekday::Sun], "23:00", 3);
        // Monday 03:00 (window of the day before just closed): next is the coming Sunday.
        let next = sun_late.current_or_next(utc(2026, 11, 23, 3, 0)).expect("a next opening");
        assert_eq!(next.start, utc(2026, 11, 29, 23, 0));
        assert_eq!(next.end, utc(2026, 11, 30, 2, 0), "ends Monday 02:00, past the week's end");
        // Monday 01:00 is inside Sunday's window.
        assert!(sun_late.open_at(utc(2026, 11, 23, 1, 0)).is_some());
    }

    #[test]
    fn spring_forward_gap_shifts_the_start_and_keeps_the_length() {
        // Europe/Berlin skips 02:00-03:00 on Sunday 2026-03-29.
        let berlin = chrono_tz::Europe::Berlin;
        let w = win(berlin, &[Weekday::Sun], "02:30", 2);
        let o = w.current_or_next(utc(2026, 3, 28, 12, 0)).expect("opening");
        // 02:30 read at +01:00 is 01:30 UTC, which is 03:30 CEST.
        assert_eq!(o.start, utc(2026, 3, 29, 1, 30));
        assert_eq!(o.length(), Duration::from_secs(7200));
    }

    #[test]
    fn fall_back_repeated_hour_opens_at_the_first_occurrence() {
        // Europe/Berlin repeats 02:00-03:00 on Sunday 2026-10-25 (first at +02:00).
        let berlin = chrono_tz::Europe::Berlin;
        let w = win(berlin, &[Weekday::Sun], "02:30", 2);
        let o = w.current_or_next(utc(2026, 10, 24, 12, 0)).expect("opening");
        assert_eq!(o.start, utc(2026, 10, 25, 0, 30));
        assert_eq!(o.end, utc(2026, 10, 25, 2, 30), "two real hours");
    }

    #[test]
    fn named_zone_moves_the_utc_instant() {
        let ny = win(chrono_tz::America::New_York, &[Weekday::Mon, Weekday::Tue], "01:00", 1);
        let o = ny.current_or_next(utc(2026, 11, 22, 0, 0)).expect("opening");
        assert_eq!(o.start, utc(2026, 11, 23, 6, 0), "01:00 EST is 06:00 UTC");
        let after = ny.next_start_after(o.start).expect("next");
        assert_eq!(after.start, utc(2026, 11, 24, 6, 0));
    }

    #[test]
    fn day_and_time_parsing() {
        assert_eq!(parse_day("Sat"), Some(Weekday::Sat));
        assert_eq!(parse_day("sunday"), Some(Weekday::Sun));
        assert_eq!(parse_day("sundae"), None);
        assert!(parse_time("23:59").is_some());
        assert!(parse_time("24:00").is_none());
        assert!(parse_time("7pm").is_none());
    }
}
