//! A bad release stops at the first host, without any central state.
//!
//! A host whose update to version V fails (the new version rolled back at boot, an unexpected
//! version came up, the host could not return to service) writes a failure marker naming V on its
//! own instance (`<prefix>.failed`, `v1:<version>:<at>:<reason>`). Before it prepares or claims a
//! slot for V, and again once it holds one, every host counts the instances whose marker names V;
//! at `cluster.halt-after-failures` it does not update to V and says why. A later version is not
//! blocked by an earlier one's failures: only markers naming the same version count. An operator
//! resumes V by deleting the markers that name it.

use crate::clock::WallTime;
use crate::cluster::Attribute;

/// The marker format version written first in every value.
const FORMAT: &str = "v1";

/// One host's failure marker, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailureMarker {
    /// The version that failed.
    pub version: String,
    /// When it failed.
    pub at: WallTime,
    /// A short token: `rolled-back`, `unexpected-version`, `ecs-agent-not-connected`, ...
    pub reason: String,
}

impl FailureMarker {
    /// The attribute value (ECS's characters only).
    pub fn encode(&self) -> String {
        let reason: String = self.reason.chars().filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c)).collect();
        let v = format!("{FORMAT}:{}:{}:{reason}", self.version, self.at.as_secs());
        v.chars().take(128).collect()
    }

    /// Reads a value; `None` for anything else (an unreadable marker names no version).
    pub fn parse(value: &str) -> Option<FailureMarker> {
        let mut it = value.splitn(4, ':');
        let (format, version, at, reason) = (it.next()?, it.next()?, it.next()?, it.next()?);
        if format != FORMAT || version.is_empty() {
            return None;
        }
        Some(FailureMarker { version: version.into(), at: WallTime::from_secs(at.parse().ok()?), reason: reason.into() })
    }
}

/// The instances whose marker says `version` failed there, from a listing of the marker
/// attribute (other versions and unreadable values do not count).
pub fn failed_on(markers: &[Attribute], version: &str) -> Vec<String> {
    markers
        .iter()
        .filter(|a| a.value.as_deref().and_then(FailureMarker::parse).is_some_and(|m| m.version == version))
        .map(|a| a.target.clone())
        .collect()
}

/// Whether `failed` (the instances that failed on a version) reaches the threshold; a
/// threshold of zero never halts.
pub fn halts(failed: &[String], threshold: u32) -> bool {
    threshold > 0 && failed.len() as u64 >= u64::from(threshold)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(target: &str, value: &str) -> Attribute {
        Attribute { target: target.into(), name: "br-update.failed".into(), value: Some(value.into()) }
    }

    #[test]
    fn markers_round_trip_and_fit_ecs_rules() {
        let m = FailureMarker { version: "1.27.0".into(), at: WallTime::from_secs(1_800_000_000), reason: "rolled back!".into() };
        let v = m.encode();
        assert_eq!(v, "v1:1.27.0:1800000000:rolledback");
        assert!(crate::cluster::valid_attribute_value(&v));
        assert_eq!(FailureMarker::parse(&v), Some(FailureMarker { reason: "rolledback".into(), ..m }));
        for bad in ["", "v1", "v2:1.0:1:x", "v1::1:x", "v1:1.0:soon:x"] {
            assert_eq!(FailureMarker::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn only_markers_naming_the_version_count_and_the_threshold_decides() {
        let markers = [
            attr("a", "v1:1.27.0:1:rolled-back"),
            attr("b", "v1:1.26.5:1:rolled-back"),
            attr("c", "garbage"),
            attr("d", "v1:1.27.0:2:ecs-agent-not-connected"),
        ];
        let failed = failed_on(&markers, "1.27.0");
        assert_eq!(failed, ["a", "d"]);
        assert!(failed_on(&markers, "1.28.0").is_empty(), "a later version is not blocked");
        assert!(halts(&failed, 1) && halts(&failed, 2));
        assert!(!halts(&failed, 3));
        assert!(!halts(&failed, 0), "zero never halts");
    }
}
