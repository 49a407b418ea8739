//! The cluster tags that steer the whole fleet: `<prefix>.paused` and `<prefix>.max-concurrent`.
//! Every agent reads them before it tries for a slot, and the operator's view reads them the same
//! way, through [`FleetTags::read`], so both always agree on the limit in force.

use std::collections::BTreeMap;

use crate::lease::Names;

/// Where the limit in force comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LimitSource {
    /// The cluster tag `<prefix>.max-concurrent`.
    Tag,
    /// No tag: each host's configured `cluster.max-concurrent`.
    Default,
    /// A tag that is not a whole number of at least 1 (kept here, as found): agents ignore it
    /// and use their configured limit.
    InvalidTag(String),
}

impl LimitSource {
    /// The stable word for JSON and the header: `tag`, `default` or `invalid-tag`.
    pub fn word(&self) -> &'static str {
        match self {
            LimitSource::Tag => "tag",
            LimitSource::Default => "default",
            LimitSource::InvalidTag(_) => "invalid-tag",
        }
    }
}

/// What the cluster's tags say to the fleet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetTags {
    /// `<prefix>.paused` is `true` (any case): no host takes a new slot.
    pub paused: bool,
    /// N, the most hosts out of service for an update at once.
    pub limit: u32,
    /// Whether `limit` came from the tag or the configured default.
    pub source: LimitSource,
}

impl FleetTags {
    /// Reads `tags` (the cluster's) under `names`; `default_limit` is the configured N.
    pub fn read(tags: &BTreeMap<String, String>, names: &Names, default_limit: u32) -> FleetTags {
        let paused = tags.get(&names.paused_tag).is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let (limit, source) = match tags.get(&names.max_concurrent_tag) {
            None => (default_limit, LimitSource::Default),
            Some(v) => match v.parse::<u32>() {
                Ok(n) if n >= 1 => (n, LimitSource::Tag),
                _ => (default_limit, LimitSource::InvalidTag(v.clone())),
            },
        };
        FleetTags { paused, limit, source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &[(&str, &str)]) -> FleetTags {
        let tags = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        FleetTags::read(&tags, &Names::new("br-update"), 2)
    }

    #[test]
    fn the_tag_overrides_the_default_only_when_it_is_a_positive_number() {
        assert_eq!(read(&[]), FleetTags { paused: false, limit: 2, source: LimitSource::Default });
        assert_eq!(read(&[("br-update.max-concurrent", "7")]).limit, 7);
        assert_eq!(read(&[("br-update.max-concurrent", "7")]).source, LimitSource::Tag);
        for bad in ["0", "-1", "x", "", "1.5"] {
            let t = read(&[("br-update.max-concurrent", bad)]);
            assert_eq!((t.limit, t.source), (2, LimitSource::InvalidTag(bad.into())), "{bad:?}");
        }
        assert_eq!(read(&[("other.max-concurrent", "9")]).limit, 2, "another prefix's tag is not ours");
    }

    #[test]
    fn paused_is_true_in_any_case_and_nothing_else() {
        assert!(read(&[("br-update.paused", "true")]).paused);
        assert!(read(&[("br-update.paused", "TRUE")]).paused);
        assert!(!read(&[("br-update.paused", "yes")]).paused);
        assert!(!read(&[("br-update.paused", "")]).paused);
    }
}
