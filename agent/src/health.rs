//! The health gate a host passes after booting a new version, before it gives its slot back, and
//! keeps passing while it bakes.
//!
//! Built in: the ECS agent is connected, and ECS does not find the container instance IMPAIRED
//! (`DescribeContainerInstances` with `include = CONTAINER_INSTANCE_HEALTH`; INITIALIZING waits).
//! Operator-defined: HTTP URLs on the host's network that must answer 2xx. Each check that is not
//! yet passing waits up to its own timeout; a check that fails for good, or outlives its timeout,
//! fails the gate with the check's name and its last answer.

use std::time::Duration;

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use crate::cluster::InstanceInfo;
use crate::config::{ConfigError, OnFailure};

/// How long one request to a health URL may take.
const URL_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The `[health]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawHealth {
    instance_health_timeout: Option<String>,
    urls: Option<Vec<String>>,
    url_timeout: Option<String>,
    poll_interval: Option<String>,
    task_families: Option<Vec<String>>,
    task_timeout: Option<String>,
    bake_time: Option<String>,
    canary_bake_time: Option<String>,
    on_failure: Option<OnFailure>,
}

/// The gate, the bake and what a failed host does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthConfig {
    /// How long ECS may report the instance INITIALIZING.
    pub instance_health_timeout: Duration,
    /// URLs that must answer 2xx (http:// only: they are on the host's own network).
    pub urls: Vec<String>,
    /// How long a URL may keep failing before the gate fails.
    pub url_timeout: Duration,
    /// How often the checks are looked at.
    pub poll_interval: Duration,
    /// Task definition families that must run on this instance again once it is back in
    /// service (daemon services such as a log router).
    pub task_families: Vec<String>,
    /// How long they may take to be placed and started again.
    pub task_timeout: Duration,
    /// How long every host keeps its slot, back in service, while the checks keep passing.
    pub bake_time: Duration,
    /// The same for the canaries of a version (see `cluster.canary-hosts`).
    pub canary_bake_time: Duration,
    /// What a host whose gate or bake failed does.
    pub on_failure: OnFailure,
}

impl HealthConfig {
    /// Checks values and fills in defaults; `parse` reads durations as the rest of the config.
    pub fn from_raw(
        r: RawHealth,
        dur: impl Fn(&str, &Option<String>, &str) -> Result<Duration, ConfigError>,
        bad: impl Fn(&str, String) -> ConfigError,
    ) -> Result<HealthConfig, ConfigError> {
        let urls = r.urls.unwrap_or_default();
        for (i, url) in urls.iter().enumerate() {
            if !url.starts_with("http://") || url.parse::<hyper::Uri>().is_err() {
                return Err(bad(&format!("health.urls[{i}]"), format!("`{url}` is not an http:// URL")));
            }
        }
        let poll_interval = dur("health.poll-interval", &r.poll_interval, "15s")?;
        if poll_interval < Duration::from_secs(1) {
            return Err(bad("health.poll-interval", "must be at least 1s: each look is an ECS call".into()));
        }
        Ok(HealthConfig {
            instance_health_timeout: dur("health.instance-health-timeout", &r.instance_health_timeout, "10m")?,
            urls,
            url_timeout: dur("health.url-timeout", &r.url_timeout, "5m")?,
            poll_interval,
            task_families: r.task_families.unwrap_or_default(),
            task_timeout: dur("health.task-timeout", &r.task_timeout, "10m")?,
            bake_time: dur("health.bake-time", &r.bake_time, "0s")?,
            canary_bake_time: dur("health.canary-bake-time", &r.canary_bake_time, "10m")?,
            on_failure: r.on_failure.unwrap_or(OnFailure::Rollback),
        })
    }
}

/// What one look at the checks found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Look {
    /// Every check passes.
    Pass,
    /// A check does not pass yet; it may for up to `limit` from the start of the gate.
    Wait {
        /// Which check and what it answered.
        why: String,
        /// How long that check may keep waiting.
        limit: Duration,
    },
    /// A check failed for good.
    Fail(String),
}

/// Judges the built-in checks from a fresh describe of the instance; `agent_limit` is how long
/// the ECS agent may stay disconnected.
pub fn judge_instance(me: &InstanceInfo, cfg: &HealthConfig, agent_limit: Duration) -> Look {
    if !me.agent_connected {
        return Look::Wait { why: "ECS agent not connected".into(), limit: agent_limit };
    }
    match &me.health {
        Some(h) if h.is_impaired() && h.reasons.is_empty() => Look::Fail("container instance IMPAIRED".into()),
        Some(h) if h.is_impaired() => Look::Fail(format!("container instance IMPAIRED: {}", h.reasons.join("; "))),
        Some(h) if h.is_initializing() => {
            Look::Wait { why: "container instance health INITIALIZING".into(), limit: cfg.instance_health_timeout }
        }
        _ => Look::Pass,
    }
}

/// Asks every configured URL once; the first that does not answer 2xx decides.
pub async fn judge_urls(cfg: &HealthConfig) -> Look {
    for url in &cfg.urls {
        match probe(url).await {
            Ok(status) if (200..300).contains(&status) => {}
            Ok(status) => return Look::Wait { why: format!("{url} answered HTTP {status}"), limit: cfg.url_timeout },
            Err(e) => return Look::Wait { why: format!("{url}: {e}"), limit: cfg.url_timeout },
        }
    }
    Look::Pass
}

/// Which of `families` have no task on the instance that is running and not being stopped.
pub fn missing_families<'a>(families: &'a [String], tasks: &[crate::cluster::TaskInfo]) -> Vec<&'a str> {
    families
        .iter()
        .filter(|f| !tasks.iter().any(|t| !t.stopping && t.family.as_deref() == Some(f.as_str())))
        .map(String::as_str)
        .collect()
}

/// One GET of `url`: its status code, or why there was none.
pub async fn probe(url: &str) -> Result<u16, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("bad URL: {e}"))?;
    let client: Client<HttpConnector, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    match tokio::time::timeout(URL_REQUEST_TIMEOUT, client.get(uri)).await {
        Ok(Ok(resp)) => Ok(resp.status().as_u16()),
        Ok(Err(e)) => Err(format!("no answer: {e}")),
        Err(_) => Err(format!("no answer within {}s", URL_REQUEST_TIMEOUT.as_secs())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{InstanceHealth, InstanceStatus};

    fn cfg() -> HealthConfig {
        HealthConfig {
            instance_health_timeout: Duration::from_secs(600),
            urls: vec![],
            url_timeout: Duration::from_secs(300),
            poll_interval: Duration::from_secs(15),
            task_families: vec![],
            task_timeout: Duration::from_secs(600),
            bake_time: Duration::ZERO,
            canary_bake_time: Duration::from_secs(600),
            on_failure: OnFailure::Rollback,
        }
    }

    fn me(connected: bool, health: Option<&str>) -> InstanceInfo {
        InstanceInfo {
            arn: "a".into(),
            status: InstanceStatus::Draining,
            agent_connected: connected,
            running_tasks: 0,
            attributes: Default::default(),
            health: health.map(|h| InstanceHealth { overall: h.into(), reasons: vec!["CONTAINER_RUNTIME IMPAIRED: docker down".into()] }),
        }
    }

    #[test]
    fn built_in_checks_wait_for_the_agent_and_initialising_health_and_fail_on_impaired() {
        let limit = Duration::from_secs(120);
        assert_eq!(judge_instance(&me(false, None), &cfg(), limit), Look::Wait { why: "ECS agent not connected".into(), limit });
        assert!(matches!(judge_instance(&me(true, Some("INITIALIZING")), &cfg(), limit), Look::Wait { limit: l, .. } if l == Duration::from_secs(600)));
        assert!(matches!(judge_instance(&me(true, Some("IMPAIRED")), &cfg(), limit), Look::Fail(why) if why.contains("IMPAIRED") && why.contains("docker down")));
        for fine in [None, Some("OK"), Some("INSUFFICIENT_DATA")] {
            assert_eq!(judge_instance(&me(true, fine), &cfg(), limit), Look::Pass, "{fine:?}");
        }
    }

    #[test]
    fn the_health_table_is_read_with_defaults_and_bad_values_name_their_key() {
        let d = crate::config::Config::default().health;
        assert_eq!((d.bake_time, d.canary_bake_time, d.on_failure), (Duration::ZERO, Duration::from_secs(600), OnFailure::Rollback));
        let text = "[health]\nurls = [\"http://127.0.0.1:9100/metrics\"]\non-failure = \"return\"\nbake-time = \"5m\"\n";
        let c = crate::config::Config::parse(text, "t").expect("valid").health;
        assert_eq!((c.urls.len(), c.on_failure, c.bake_time), (1, OnFailure::Return, Duration::from_secs(300)));
        for (text, key) in [
            ("[health]\nurls = [\"https://example.com/\"]", "health.urls[0]"),
            ("[health]\npoll-interval = \"100ms\"", "health.poll-interval"),
            ("[health]\non-failure = \"explode\"", "on-failure"),
            ("[health]\nbake-time = \"soon\"", "health.bake-time"),
        ] {
            let e = crate::config::Config::parse(text, "t").expect_err(text).to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
    }

    #[test]
    fn families_count_only_tasks_that_run_and_are_not_being_stopped() {
        let task = |family: &str, stopping: bool| crate::cluster::TaskInfo {
            arn: "t".into(),
            stopping,
            started_by: Some("ecs-svc/1".into()),
            group: None,
            family: Some(family.into()),
        };
        let want = vec!["log-router".to_string(), "node-exporter".to_string()];
        assert_eq!(missing_families(&want, &[]), ["log-router", "node-exporter"]);
        assert_eq!(missing_families(&want, &[task("log-router", false), task("node-exporter", true)]), ["node-exporter"]);
        assert!(missing_families(&want, &[task("log-router", false), task("node-exporter", false)]).is_empty());
    }

    #[tokio::test]
    async fn urls_must_answer_2xx() {
        let ok = serve(200).await;
        let broken = serve(503).await;
        let mut c = cfg();
        c.urls = vec![format!("http://{ok}/health")];
        assert_eq!(judge_urls(&c).await, Look::Pass);
        c.urls.push(format!("http://{broken}/health"));
        assert!(matches!(judge_urls(&c).await, Look::Wait { why, .. } if why.contains("HTTP 503")));
        c.urls = vec!["http://127.0.0.1:1/none".into()];
        assert!(matches!(judge_urls(&c).await, Look::Wait { why, .. } if why.contains("no answer")));
    }

    /// A one-route HTTP server on loopback that answers `status` to every request.
    async fn serve(status: u16) -> std::net::SocketAddr {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = sock.read(&mut buf).await;
                let reply = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = sock.write_all(reply.as_bytes()).await;
            }
        });
        addr
    }
}
