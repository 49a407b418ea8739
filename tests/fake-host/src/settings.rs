//! `settings.updates.*` as apiserver and thar-be-settings keep them: written into a named
//! transaction (`PATCH /settings?tx=NAME`), made live by `POST /tx/commit_and_apply?tx=NAME`,
//! and seen by updog only once the background apply has re-rendered its config file.
//!
//! So three copies exist: what is pending per transaction, what is live (what `GET /settings`
//! answers right after the commit), and what updog reads (`rendered`, which lags the commit by
//! the apply delay). A client that refreshes right after committing may still see the old lock,
//! as on a real host.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use crate::version;

/// The settings updog reads from its rendered config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpdaterSettings {
    /// `version-lock`: `latest` or a version.
    pub version_lock: String,
    /// `ignore-waves`.
    pub ignore_waves: bool,
    /// `seed`.
    pub seed: u32,
}

/// Why a write or a commit was refused, with apiserver's status code and text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// HTTP status.
    pub status: u16,
    /// Plain-text body.
    pub body: String,
}

/// The settings store of one host.
#[derive(Clone, Debug)]
pub struct SettingsStore {
    live: UpdaterSettings,
    pending: BTreeMap<String, BTreeMap<&'static str, Value>>,
    rendered: UpdaterSettings,
    /// A committed change on its way to updog's config, and when it lands.
    applying: Option<(Instant, UpdaterSettings)>,
    apply_delay: Duration,
}

/// The leaf keys the fake models, in full data-key form.
const VERSION_LOCK: &str = "settings.updates.version-lock";
const IGNORE_WAVES: &str = "settings.updates.ignore-waves";
const SEED: &str = "settings.updates.seed";

impl SettingsStore {
    /// A store whose live and rendered settings are `initial`; commits reach updog after `apply_delay`.
    pub fn new(initial: UpdaterSettings, apply_delay: Duration) -> SettingsStore {
        SettingsStore { rendered: initial.clone(), live: initial, pending: BTreeMap::new(), applying: None, apply_delay }
    }

    /// The live settings (`GET /settings`).
    pub fn live(&self) -> &UpdaterSettings {
        &self.live
    }

    /// What updog reads at `now`.
    pub fn rendered_at(&self, now: Instant) -> &UpdaterSettings {
        match &self.applying {
            Some((at, next)) if *at <= now => next,
            _ => &self.rendered,
        }
    }

    /// `PATCH /settings?tx=NAME` with the settings object `body` (no `settings` wrapper).
    pub fn patch(&mut self, tx: &str, body: &[u8]) -> Result<(), Refusal> {
        let parsed: Value = serde_json::from_slice(body).map_err(|e| bad_input(&e.to_string()))?;
        let leaves = leaves_of(&parsed)?;
        let pending = self.pending.entry(tx.to_string()).or_default();
        pending.extend(leaves);
        Ok(())
    }

    /// `POST /tx/commit_and_apply?tx=NAME` at `now`: the keys committed, or 422 with none pending.
    pub fn commit_and_apply(&mut self, tx: &str, now: Instant) -> Result<Vec<String>, Refusal> {
        let Some(changes) = self.pending.remove(tx).filter(|c| !c.is_empty()) else {
            return Err(Refusal { status: 422, body: "Tried to commit with no pending changes".into() });
        };
        self.settle(now);
        for (key, value) in &changes {
            match *key {
                VERSION_LOCK => self.live.version_lock = value.as_str().unwrap_or_default().to_string(),
                IGNORE_WAVES => self.live.ignore_waves = value.as_bool().unwrap_or_default(),
                _ => self.live.seed = value.as_u64().unwrap_or_default() as u32,
            }
        }
        self.applying = Some((now + self.apply_delay, self.live.clone()));
        Ok(changes.keys().map(|k| k.to_string()).collect())
    }

    /// Folds an apply that has landed by `now` into the rendered settings.
    fn settle(&mut self, now: Instant) {
        if let Some((at, next)) = self.applying.take() {
            if at <= now {
                self.rendered = next;
            } else {
                self.applying = Some((at, next));
            }
        }
    }
}

fn bad_input(why: &str) -> Refusal {
    Refusal { status: 400, body: format!("Unable to deserialize input JSON into model: {why}") }
}

/// The leaves of a settings object, checked against the model's types: `updates.version-lock`
/// is a FriendlyVersion, `updates.ignore-waves` a bool, `updates.seed` a u32. Anything else under
/// `updates` is refused as the model refuses unknown fields; other top-level settings are outside
/// what the fake models and are refused too, rather than silently dropped.
fn leaves_of(body: &Value) -> Result<Vec<(&'static str, Value)>, Refusal> {
    let Some(top) = body.as_object() else { return Err(bad_input("expected a settings object")) };
    let mut out = Vec::new();
    for (name, value) in top {
        if name != "updates" {
            return Err(bad_input(&format!("settings '{name}' are not modelled by this fake")));
        }
        let Some(updates) = value.as_object() else { return Err(bad_input("updates must be an object")) };
        for (field, v) in updates {
            out.push(updates_leaf(field, v)?);
        }
    }
    Ok(out)
}

fn updates_leaf(field: &str, v: &Value) -> Result<(&'static str, Value), Refusal> {
    match field {
        "version-lock" => match v.as_str() {
            Some(s) if is_friendly_version(s) => Ok((VERSION_LOCK, v.clone())),
            _ => Err(bad_input(&format!("invalid version-lock {v}: expected 'latest' or a version"))),
        },
        "ignore-waves" if v.is_boolean() => Ok((IGNORE_WAVES, v.clone())),
        "seed" if v.as_u64().is_some_and(|n| n <= u64::from(u32::MAX)) => Ok((SEED, v.clone())),
        "ignore-waves" | "seed" => Err(bad_input(&format!("invalid type for updates.{field}: {v}"))),
        other => Err(bad_input(&format!("unknown field `{other}`"))),
    }
}

/// `latest`, or a semantic version with an optional leading `v`.
fn is_friendly_version(s: &str) -> bool {
    s == "latest" || version::is_version(version::normalize(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(delay_ms: u64) -> SettingsStore {
        let s = UpdaterSettings { version_lock: "latest".into(), ignore_waves: false, seed: 7 };
        SettingsStore::new(s, Duration::from_millis(delay_ms))
    }

    #[tokio::test(start_paused = true)]
    async fn a_commit_is_live_at_once_and_reaches_updog_after_the_apply_delay() {
        let mut s = store(500);
        let t0 = Instant::now();
        s.patch("t", br#"{"updates":{"version-lock":"v1.2.3","ignore-waves":true}}"#).expect("patch");
        assert_eq!(s.live().version_lock, "latest", "pending is not live");
        let keys = s.commit_and_apply("t", t0).expect("commit");
        assert_eq!(keys, vec![IGNORE_WAVES.to_string(), VERSION_LOCK.to_string()]);
        assert_eq!((s.live().version_lock.as_str(), s.live().ignore_waves), ("v1.2.3", true));
        assert_eq!(s.rendered_at(t0).version_lock, "latest", "updog still reads the old file");
        assert_eq!(s.rendered_at(t0 + Duration::from_millis(500)).version_lock, "v1.2.3");
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_or_other_transaction_commits_nothing_with_422() {
        let mut s = store(0);
        s.patch("mine", br#"{"updates":{"ignore-waves":true}}"#).expect("patch");
        let err = s.commit_and_apply("other", Instant::now()).expect_err("nothing pending there");
        assert_eq!(err.status, 422);
        s.commit_and_apply("mine", Instant::now()).expect("commit");
        assert_eq!(s.commit_and_apply("mine", Instant::now()).expect_err("already committed").status, 422);
    }

    #[test]
    fn wrong_types_and_unknown_keys_are_400() {
        let mut s = store(0);
        for body in [
            r#"{"updates":{"version-lock":"newest"}}"#,
            r#"{"updates":{"ignore-waves":"yes"}}"#,
            r#"{"updates":{"sneed":1}}"#,
            r#"{"motd":"hi"}"#,
            r#"["updates"]"#,
            "not json",
        ] {
            assert_eq!(s.patch("t", body.as_bytes()).expect_err(body).status, 400, "{body}");
        }
    }
}
