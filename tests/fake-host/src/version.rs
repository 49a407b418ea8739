//! Version ordering for published updates, as updog sorts them (semver precedence).
//!
//! Only what the fake needs: `MAJOR.MINOR.PATCH[-PRE][+BUILD]`, with an optional leading `v` as
//! `version-lock` allows it. Text that is not a version still gets a total order (after every real
//! version, by its text) so a sloppy test input cannot make sorting panic or flip between runs.

use std::cmp::Ordering;

/// `text` without a leading `v`, the spelling used in the status and for comparisons.
pub fn normalize(text: &str) -> &str {
    text.strip_prefix('v').unwrap_or(text)
}

/// Whether `text` (without a leading `v`) is a version the fake can order.
pub fn is_version(text: &str) -> bool {
    Parsed::new(text).is_some()
}

/// Semver precedence of two version strings (a leading `v` is ignored).
pub fn compare(a: &str, b: &str) -> Ordering {
    match (Parsed::new(normalize(a)), Parsed::new(normalize(b))) {
        (Some(x), Some(y)) => x.cmp_precedence(&y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

/// A parsed version; build metadata is dropped because it does not affect precedence.
struct Parsed<'a> {
    core: [u64; 3],
    pre: Option<&'a str>,
}

impl<'a> Parsed<'a> {
    fn new(text: &'a str) -> Option<Parsed<'a>> {
        let text = text.split('+').next().unwrap_or(text);
        let (core_text, pre) = match text.split_once('-') {
            Some((core, pre)) if !pre.is_empty() => (core, Some(pre)),
            Some(_) => return None,
            None => (text, None),
        };
        let mut parts = core_text.split('.');
        let mut core = [0u64; 3];
        for slot in &mut core {
            *slot = parts.next()?.parse().ok()?;
        }
        if parts.next().is_some() {
            return None;
        }
        Some(Parsed { core, pre })
    }

    fn cmp_precedence(&self, other: &Parsed<'_>) -> Ordering {
        self.core.cmp(&other.core).then_with(|| match (self.pre, other.pre) {
            // A release ranks above any of its pre-releases.
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(a), Some(b)) => compare_pre(a, b),
        })
    }
}

/// Pre-release identifiers, field by field: numbers numerically and below text.
fn compare_pre(a: &str, b: &str) -> Ordering {
    let mut left = a.split('.');
    let mut right = b.split('.');
    loop {
        match (left.next(), right.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let order = match (x.parse::<u64>(), y.parse::<u64>()) {
                    (Ok(m), Ok(n)) => m.cmp(&n),
                    (Ok(_), Err(_)) => Ordering::Less,
                    (Err(_), Ok(_)) => Ordering::Greater,
                    (Err(_), Err(_)) => x.cmp(y),
                };
                if order != Ordering::Equal {
                    return order;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_numerically_not_as_text() {
        assert_eq!(compare("1.10.0", "1.9.9"), Ordering::Greater);
        assert_eq!(compare("1.26.1", "1.26.1"), Ordering::Equal);
        assert_eq!(compare("v1.2.3", "1.2.3"), Ordering::Equal);
        assert_eq!(compare("0.3.4", "0.4.0"), Ordering::Less);
    }

    #[test]
    fn pre_releases_rank_below_their_release() {
        assert_eq!(compare("1.2.0-rc.1", "1.2.0"), Ordering::Less);
        assert_eq!(compare("1.2.0-rc.2", "1.2.0-rc.10"), Ordering::Less);
        assert_eq!(compare("1.2.0-alpha", "1.2.0-1"), Ordering::Greater);
        assert_eq!(compare("1.2.0+build7", "1.2.0"), Ordering::Equal);
    }

    #[test]
    fn non_versions_sort_after_versions_and_among_themselves() {
        assert_eq!(compare("banana", "9.9.9"), Ordering::Greater);
        assert_eq!(compare("1.2", "1.2.0"), Ordering::Greater);
        assert_eq!(compare("apple", "banana"), Ordering::Less);
    }
}
