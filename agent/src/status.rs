//! The `<prefix>.status` attribute every agent keeps on its own instance, so that the fleet can be
//! read from ECS alone: what the host is doing, what it runs and moves to, how its last round
//! ended, since when, and why (the instances holding the slots it waits for, the reason it holds
//! its own).
//!
//! Format `v2:<phase>:<running>:<target>:<result>:<since>:<detail>`, where `since` is the time of
//! the last change of phase or result (seconds since the epoch) and `detail` is free text in ECS's
//! value characters. The older `v1:<phase>:<running>:<target>:<result>` is still read.

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
}

impl Status {
    /// The attribute value: ECS's characters only, cut to 128 by shortening the detail.
    pub fn encode(&self) -> String {
        let since = self.since.map_or("-".to_string(), |t| t.as_secs().to_string());
        let head = format!("v2:{}:{}:{}:{}:{since}:", self.phase, self.running, self.target, self.result);
        let head = clean(&head);
        let room = MAX_LEN.saturating_sub(head.len());
        let detail: String = clean(&self.detail).chars().take(room).collect();
        let mut v = format!("{head}{}", detail.trim_end());
        v.truncate(MAX_LEN);
        v
    }

    /// Reads a v2 or v1 value; `None` for anything else.
    pub fn parse(value: &str) -> Option<Status> {
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
            }),
            ("v2", [phase, running, target, result, since, rest @ ..]) if rest.len() <= 1 => Some(Status {
                phase: phase.to_string(),
                running: running.to_string(),
                target: target.to_string(),
                result: result.to_string(),
                since: since.parse::<i64>().ok().map(WallTime::from_secs),
                detail: rest.first().map_or(String::new(), |d| d.to_string()),
            }),
            _ => None,
        }
    }

    /// Whether phase, versions, result and detail are the same (the time aside): an unchanged
    /// status need not be written again.
    pub fn same_as(&self, other: &Status) -> bool {
        (&self.phase, &self.running, &self.target, &self.result, &self.detail)
            == (&other.phase, &other.running, &other.target, &other.result, &other.detail)
    }
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
        }
    }

    #[test]
    fn v2_round_trips_and_fits_ecs_rules() {
        let s = status("slots 1/1 held by 0a1b2c drained-by-agent claim-lapsed");
        let v = s.encode();
        assert_eq!(v, "v2:waiting:1.26.0:1.27.0:waiting-for-slot:1800000000:slots 1/1 held by 0a1b2c drained-by-agent claim-lapsed");
        assert!(crate::cluster::valid_attribute_value(&v), "{v}");
        assert_eq!(Status::parse(&v), Some(s));
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
        for bad in ["", "garbage", "v1:idle:1.26.0:-", "v3:a:b:c:d:e:f", "v2:a:b:c:d"] {
            assert_eq!(Status::parse(bad), None, "{bad:?}");
        }
        assert_eq!(short_id("arn:aws:ecs:us-east-1:1:container-instance/c/abc123"), "abc123");
    }
}
