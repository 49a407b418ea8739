//! Which cluster and container instance this host is, from the ECS agent's introspection endpoint.
//!
//! The ECS agent on a Bottlerocket host serves `GET /v1/metadata` on `127.0.0.1:51678`, which our
//! host container reaches because it shares the host's network namespace. The endpoint only opens
//! once the ECS agent has registered, and the update agent may well start first, so a closed port,
//! an error status or a still-null instance ARN are all "not yet": retried with back-off.

use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use tracing::{info, warn};

use crate::backoff::{Backoff, Jitter};
use crate::clock::Clock;

/// Where the ECS agent serves its metadata on a Bottlerocket host.
pub const DEFAULT_URL: &str = "http://127.0.0.1:51678/v1/metadata";

/// How long one request to the endpoint may take; it is local, so this is generous.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The metadata response is a few hundred bytes; anything far larger is not it.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// What the ECS agent says about this host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Discovered {
    /// The cluster as the ECS agent was configured with it: a name or an ARN.
    pub cluster: String,
    /// This host's container instance ARN.
    pub instance_arn: String,
    /// The region, from the instance ARN.
    pub region: Option<String>,
}

/// Why discovery ended without an answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    /// The URL cannot be requested at all; retrying would not help.
    #[error("invalid introspection URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The deadline passed before the endpoint gave a usable answer.
    #[error("no usable answer from the ECS agent after {attempts} attempts; last: {last}")]
    GaveUp {
        /// How many requests were made.
        attempts: u32,
        /// Why the last one did not do.
        last: String,
    },
}

/// Why one attempt did not discover this host.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
enum NotYet {
    #[error("endpoint unreachable: {0}")]
    Unreachable(String),
    #[error("endpoint answered HTTP {0}")]
    Status(u16),
    #[error("ECS agent not registered yet (cluster {0:?}, null container instance ARN)")]
    Unregistered(String),
    #[error("malformed metadata: {0}")]
    Malformed(String),
}

/// The body of `/v1/metadata`; unknown fields are ignored.
#[derive(Debug, Deserialize)]
struct Metadata {
    #[serde(rename = "Cluster")]
    cluster: String,
    #[serde(rename = "ContainerInstanceArn", default)]
    container_instance_arn: Option<String>,
    #[serde(rename = "Version", default)]
    version: Option<String>,
}

/// Ask the ECS agent at `url` who this host is, retrying with `backoff` until it answers with a
/// registered container instance, or until `deadline` (if any) has passed on `clock`.
pub async fn discover<C: Clock>(
    clock: &C,
    jitter: &Jitter,
    url: &str,
    backoff: Backoff,
    deadline: Option<Duration>,
) -> Result<Discovered, DiscoveryError> {
    let uri = parse_url(url)?;
    let start = clock.now();
    let mut attempts: u32 = 0;
    loop {
        attempts = attempts.saturating_add(1);
        let reason = match fetch_once(uri.clone()).await {
            Ok(found) => {
                info!(
                    cluster = %found.cluster,
                    instance = %found.instance_arn,
                    region = found.region.as_deref().unwrap_or("unknown"),
                    attempts,
                    "discovered this host through the ECS agent"
                );
                return Ok(found);
            }
            Err(reason) => reason,
        };
        let elapsed = clock.now().since(start);
        let mut delay = backoff.delay(attempts - 1, jitter);
        if let Some(deadline) = deadline {
            if elapsed >= deadline {
                warn!(attempts, elapsed_ms = elapsed.as_millis() as u64, reason = %reason, "giving up on discovery");
                return Err(DiscoveryError::GaveUp { attempts, last: reason.to_string() });
            }
            // One last attempt right at the deadline rather than a sleep past it.
            delay = delay.min(deadline - elapsed);
        }
        log_not_yet(&reason, attempts, delay);
        clock.sleep(delay).await;
    }
}

fn log_not_yet(reason: &NotYet, attempts: u32, delay: Duration) {
    let retry_in_ms = delay.as_millis() as u64;
    match reason {
        NotYet::Malformed(_) => {
            warn!(attempts, retry_in_ms, reason = %reason, "ECS agent metadata is malformed; retrying")
        }
        _ => info!(attempts, retry_in_ms, reason = %reason, "ECS agent not ready; retrying"),
    }
}

fn parse_url(url: &str) -> Result<Uri, DiscoveryError> {
    let invalid = |reason: String| DiscoveryError::InvalidUrl { url: url.to_owned(), reason };
    let uri = url.parse::<Uri>().map_err(|e| invalid(e.to_string()))?;
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        return Err(invalid("expected http://host[:port]/path".to_owned()));
    }
    Ok(uri)
}

/// One request, on a runtime of its own on a blocking thread.
///
/// The request timeout bounds real I/O, so it must run on real time: a paused or simulated clock
/// in the caller's runtime would otherwise expire it at once while the socket is still busy. The
/// blocking thread also keeps such a paused clock from jumping ahead while the request is in
/// flight, so back-off and deadline stay meaningful there too.
async fn fetch_once(uri: Uri) -> Result<Discovered, NotYet> {
    parse_metadata(&get_local(uri, MAX_BODY_BYTES).await?)
}

/// The body of one GET to the ECS agent's local endpoint, made as [`fetch_once`] explains.
async fn get_local(uri: Uri, limit: usize) -> Result<Bytes, NotYet> {
    let joined = tokio::task::spawn_blocking(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| NotYet::Unreachable(format!("cannot start the request runtime: {e}")))?;
        rt.block_on(async {
            tokio::time::timeout(REQUEST_TIMEOUT, request(uri, limit))
                .await
                .unwrap_or_else(|_| Err(NotYet::Unreachable(format!("no answer within {REQUEST_TIMEOUT:?}"))))
        })
    })
    .await;
    joined.unwrap_or_else(|e| Err(NotYet::Unreachable(format!("request task failed: {e}"))))
}

async fn request(uri: Uri, limit: usize) -> Result<Bytes, NotYet> {
    let client =
        Client::builder(TokioExecutor::new()).pool_max_idle_per_host(0).build::<_, Empty<Bytes>>(HttpConnector::new());
    let response = client.get(uri).await.map_err(|e| NotYet::Unreachable(error_chain(&e)))?;
    let status = response.status();
    if !status.is_success() {
        return Err(NotYet::Status(status.as_u16()));
    }
    let body = Limited::new(response.into_body(), limit)
        .collect()
        .await
        .map_err(|e| NotYet::Unreachable(format!("reading the body: {e}")))?
        .to_bytes();
    Ok(body)
}

/// One GET of `url` on the ECS agent's local endpoint: the body of a 2xx answer of at most
/// `limit` bytes, or why not, and whether anything answered at all (an error status).
pub(crate) async fn get_local_body(url: &Uri, limit: usize) -> Result<Bytes, (bool, String)> {
    get_local(url.clone(), limit).await.map_err(|e| (matches!(e, NotYet::Status(_)), e.to_string()))
}

/// The task listing's URL beside the metadata URL the agent is configured with
/// (`.../v1/metadata` becomes `.../v1/tasks`); `None` when `metadata_url` is not such a URL.
pub fn tasks_url(metadata_url: &str) -> Option<Uri> {
    let base = metadata_url.strip_suffix("/v1/metadata")?;
    parse_url(&format!("{base}/v1/tasks")).ok()
}

/// The host's identity from a `/v1/metadata` body, or why it is not there yet.
fn parse_metadata(body: &[u8]) -> Result<Discovered, NotYet> {
    let meta: Metadata = serde_json::from_slice(body).map_err(|e| NotYet::Malformed(e.to_string()))?;
    let arn = match meta.container_instance_arn {
        Some(arn) if !arn.is_empty() => arn,
        _ => return Err(NotYet::Unregistered(meta.cluster)),
    };
    if meta.cluster.is_empty() {
        return Err(NotYet::Malformed("empty Cluster".to_owned()));
    }
    tracing::debug!(version = meta.version.as_deref().unwrap_or("hidden"), "ECS agent version");
    Ok(Discovered { region: region_from_arn(&arn), cluster: meta.cluster, instance_arn: arn })
}

/// The error and its causes on one line ("connection refused" sits a few sources down).
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The region of an ECS ARN such as `arn:aws:ecs:<region>:<account>:container-instance/...`.
pub fn region_from_arn(arn: &str) -> Option<String> {
    let mut parts = arn.splitn(6, ':');
    let (prefix, _partition, service, region) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let resource = parts.nth(1)?;
    let valid = prefix == "arn"
        && service == "ecs"
        && !region.is_empty()
        && !resource.is_empty()
        && region.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    valid.then(|| region.to_owned())
}

/// The cluster's name, whether the ECS agent was configured with a name or an ARN.
pub fn cluster_name(cluster: &str) -> String {
    match cluster.split_once(":cluster/") {
        Some((prefix, name)) if prefix.starts_with("arn:") && !name.is_empty() => name.to_owned(),
        _ => cluster.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARN: &str = "arn:aws:ecs:eu-west-1:123456789012:container-instance/prod/0123abcd";

    #[test]
    fn region_comes_from_the_instance_arn() {
        assert_eq!(region_from_arn(ARN).as_deref(), Some("eu-west-1"));
        assert_eq!(
            region_from_arn("arn:aws-cn:ecs:cn-north-1:1:container-instance/x/y").as_deref(),
            Some("cn-north-1")
        );
        assert_eq!(region_from_arn("arn:aws:ecs::123:container-instance/x"), None);
        assert_eq!(region_from_arn("arn:aws:ec2:us-east-1:123:instance/i-1"), None);
        assert_eq!(region_from_arn("0123abcd"), None);
        assert_eq!(region_from_arn("arn:aws:ecs:us-east-1"), None);
    }

    #[test]
    fn cluster_name_accepts_names_and_arns() {
        assert_eq!(cluster_name("prod"), "prod");
        assert_eq!(cluster_name("arn:aws:ecs:us-east-1:123456789012:cluster/prod"), "prod");
        assert_eq!(
            cluster_name("arn:aws:ecs:us-east-1:123456789012:cluster/"),
            "arn:aws:ecs:us-east-1:123456789012:cluster/"
        );
    }

    #[test]
    fn metadata_is_parsed_and_judged() {
        let ok = parse_metadata(
            format!(r#"{{"Cluster":"prod","ContainerInstanceArn":"{ARN}","Version":"v1","Extra":1}}"#).as_bytes(),
        );
        assert_eq!(
            ok,
            Ok(Discovered { cluster: "prod".into(), instance_arn: ARN.into(), region: Some("eu-west-1".into()) })
        );
        let unversioned = parse_metadata(format!(r#"{{"Cluster":"prod","ContainerInstanceArn":"{ARN}"}}"#).as_bytes());
        assert!(unversioned.is_ok());
        let null = parse_metadata(br#"{"Cluster":"prod","ContainerInstanceArn":null,"Version":"v1"}"#);
        assert_eq!(null, Err(NotYet::Unregistered("prod".into())));
        assert!(matches!(parse_metadata(b"{not json"), Err(NotYet::Malformed(_))));
        assert!(matches!(parse_metadata(br#"{"ContainerInstanceArn":"x"}"#), Err(NotYet::Malformed(_))));
    }

    #[test]
    fn only_plain_http_urls_are_accepted() {
        assert!(parse_url(DEFAULT_URL).is_ok());
        assert!(matches!(parse_url("https://127.0.0.1/v1/metadata"), Err(DiscoveryError::InvalidUrl { .. })));
        assert!(matches!(parse_url("not a url"), Err(DiscoveryError::InvalidUrl { .. })));
    }
}
