//! The `<prefix>.status` attribute every agent keeps on its own instance, so that the fleet can be
//! read from ECS alone: what the host is doing, what it runs and moves to, how its last round
//! ended, since when, and why (the instances holding the slots it waits for, the reason it holds
//! its own).
//!
//! Format `v3:<phase>:<running>:<target>:<result>:<since>:<seed>:<took>:<detail>`, where `since`
//! is the time of the last change of phase or result (seconds since the epoch), `seed` the wave
//! seed the host's slots follow, `took` how many seconds its last finished update held a slot
//! (claim to release), and `detail` free text in ECS's value characters; `-` where unknown. The
//! fleet forecast reads `seed` and `took`. The older `v2:<phase>:<running>:<target>:<result>:
//! <since>:<detail>` and `v1:<phase>:<running>:<target>:<result>` are still read.

use crate::clock::WallTime;

/// ECS's longest attribute value.
const MAX_LEN: usize = 128;

/// One host's published status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// `idle`, `waiting`, `draining`, `rebooting`, `verifying`, `held`.
    pub phase: String,
    /// The running version (`-` when unknown).
    pub running: String,
    /// The version it moves to (`-` when none).
    pub target: String,
    /// How the last round ended, or what it waits for (`updated`, `waiting-for-slot`, ...).
    pub result: String,
    /// When phase or result last changed (absent in v1).
    pub since: Option<WallTime>,
    /// Why, in a few words (empty in v1).
    pub detail: String,
    /// The wave seed the host's slots follow (absent before v3, and before the first slot).
    pub seed: Option<u32>,
    /// How long the host's last finished update held its slot, in seconds (absent before v3,
    /// and until a first update finished).
    pub took: Option<u64>,
}

impl Status {
    /// The attribute value: ECS's characters only, cut to 128 by shortening the detail.
    pub fn encode(&self) -> String {
        let since = self.since.map_or("-".to_string(), |t| t.as_secs().to_string());
        let seed = self.seed.map_or("-".to_string(), |s| s.to_string());
        let took = self.took.map_or("-".to_string(), |s| s.to_string());
        let head = format!("v3:{}:{}:{}:{}:{since}:{seed}:{took}:", self.phase, self.running, self.target, self.result);
        let head = clean(&head);
        let room = MAX_LEN.saturating_sub(head.len());
        let detail: String = clean(&self.detail).chars().take(room).collect();
        let mut v = format!("{head}{}", detail.trim_end());
        v.truncate(MAX_LEN);
        v
    }

    /// Reads a v3, v2 or v1 value; `None` for anything else.
    pub fn parse(value: &str) -> Option<Status> {
        if let Some(rest) = value.strip_prefix("v3:") {
            return parse_v3(rest);
        }
        let mut it = value.splitn(7, ':');
        let version = it.next()?;
        let fields: Vec<&str> = it.collect();
        match (version, fields.as_slice()) {
            ("v1", [phase, running, target, result]) => Some(Status {
                phase: phase.to_string(),
                running: running.to_string(),
                target: target.to_string(),
                result: result.to_string(),
                since: None,
                detail: String::new(),
                seed: None,
                took: None,
            }),
            ("v2", [phase, running, target, result, since, rest @ ..]) if rest.len() <= 1 => Some(Status {
                phase: phase.to_string(),
                running: running.to_string(),
                target: target.to_string(),
                result: result.to_string(),
                since: since.parse::<i64>().ok().map(WallTime::from_secs),
                detail: rest.first().map_or(String::new(), |d| d.to_string()),
                seed: None,
                took: None,
            }),
            _ => None,
        }
    }

    /// `v1`, `v2` or `v3`: the format a stored value was written in, for readers that say so.
    pub fn format_of(value: &str) -> &'static str {
        match value.get(..3) {
            Some("v1:") => "v1",
            Some("v2:") => "v2",
            _ => "v3",
        }
    }

    /// Whether phase, versions, result and detail are the same (the time aside): an unchanged
    /// status need not be written again.
    pub fn same_as(&self, other: &Status) -> bool {
        (&self.phase, &self.running, &self.target, &self.result, &self.detail, self.seed, self.took)
            == (&other.phase, &other.running, &other.target, &other.result, &other.detail, other.seed, other.took)
    }
}

/// The fields after `v3:`; a seed or duration that is neither `-` nor a number makes the value
/// unreadable, as a wrong number anywhere else would mislead the forecast.
fn parse_v3(rest: &str) -> Option<Status> {
    let fields: Vec<&str> = rest.splitn(8, ':').collect();
    let [phase, running, target, result, since, seed, took, detail] = fields.as_slice() else { return None };
    let optional = |v: &str| -> Option<Option<u64>> { if v == "-" { Some(None) } else { v.parse::<u64>().ok().map(Some) } };
    let seed = optional(seed)?.map(u32::try_from).transpose().ok()?;
    Some(Status {
        phase: phase.to_string(),
        running: running.to_string(),
        target: target.to_string(),
        result: result.to_string(),
        since: since.parse::<i64>().ok().map(WallTime::from_secs),
        detail: detail.to_string(),
        seed,
        took: optional(took)?,
    })
}

/// Keeps ECS's value characters only (letters, digits, `-_.@/:` and inner spaces).
fn clean(s: &str) -> String {
    s.chars().filter(|c| c.is_ascii_alphanumeric() || "-_.@/: ".contains(*c)).collect::<String>()
}

/// The short id of a container instance ARN (its last path segment), for logs and details.
pub fn short_id(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(detail: &str) -> Status {
        Status {
            phase: "waiting".into(),
            running: "1.26.0".into(),
            target: "1.27.0".into(),
            result: "waiting-for-slot".into(),
            since: Some(WallTime::from_secs(1_800_000_000)),
            detail: detail.into(),
            seed: Some(1500),
            took: Some(540),
        }
    }

    #[test]
    fn v3_round_trips_and_fits_ecs_rules() {
        let s = status("slots 1/1 held by 0a1b2c drained-by-agent claim-lapsed");
        let v = s.encode();
        assert_eq!(v, "v3:waiting:1.26.0:1.27.0:waiting-for-slot:1800000000:1500:540:slots 1/1 held by 0a1b2c drained-by-agent claim-lapsed");
        assert!(crate::cluster::valid_attribute_value(&v), "{v}");
        assert_eq!(Status::parse(&v), Some(s.clone()));
        let unknown = Status { seed: None, took: None, ..s };
        assert!(unknown.encode().contains(":1800000000:-:-:slots"), "{}", unknown.encode());
        assert_eq!(Status::parse(&unknown.encode()), Some(unknown));
        assert_eq!(Status::format_of("v3:idle"), "v3");
    }

    #[test]
    fn v2_is_still_read_without_seed_or_duration() {
        let s = Status::parse("v2:waiting:1.26.0:1.27.0:waiting-for-slot:1800000000:held by a:b").expect("v2");
        assert_eq!((s.seed, s.took, s.detail.as_str()), (None, None, "held by a:b"));
        assert_eq!(Status::format_of("v2:waiting"), "v2");
    }

    #[test]
    fn v3_with_a_wrong_seed_or_duration_is_not_read() {
        for bad in ["v3:idle:1:-:updated:1:x:5:", "v3:idle:1:-:updated:1:5:-3:", "v3:idle:1:-:updated:1:99999999999:5:", "v3:idle:1:-:updated:1:5"] {
            assert_eq!(Status::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn long_or_dirty_details_are_cut_to_ecs_rules() {
        let v = status(&format!("why: {{\"json\"}}, {}", "x".repeat(300))).encode();
        assert_eq!(v.len(), 128);
        assert!(crate::cluster::valid_attribute_value(&v), "{v}");
        assert!(Status::parse(&v).is_some_and(|s| s.detail.starts_with("why: json")));
        let trailing = status("ends in space ").encode();
        assert!(crate::cluster::valid_attribute_value(&trailing), "{trailing}");
    }

    #[test]
    fn v1_is_still_read_and_garbage_is_not() {
        let s = Status::parse("v1:idle:1.26.0:-:up-to-date").expect("v1");
        assert_eq!((s.phase.as_str(), s.result.as_str(), s.since), ("idle", "up-to-date", None));
        for bad in ["", "garbage", "v1:idle:1.26.0:-", "v4:a:b:c:d:e:f", "v2:a:b:c:d"] {
            assert_eq!(Status::parse(bad), None, "{bad:?}");
        }
        assert_eq!(short_id("arn:aws:ecs:us-east-1:1:container-instance/c/abc123"), "abc123");
    }
}
