//! The ECS agent's own view of this host's tasks (`GET /v1/tasks` on its introspection
//! endpoint): how many it has not stopped yet. It is local and free, so a drain is watched here
//! between looks at ECS, and ECS is asked only when the answer could end the drain.
//!
//! The ECS agent runs the containers and reports their state to ECS, so its view is never behind
//! ECS's: while it still runs a task, ECS cannot say the instance is drained. The view only ever
//! decides when to ask ECS; ECS's own task listing still decides that the drain is over.

use hyper::Uri;
use serde::Deserialize;

/// A busy host lists every task of the last hours (stopped ones stay listed until cleaned up),
/// each with its containers: allow for thousands.
const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// The ECS agent's status of a task that has stopped for good.
const STOPPED: &str = "STOPPED";

/// Why the view could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LocalTasksError {
    /// No answer: nothing listens, or no answer in time.
    #[error("ECS agent task listing unreachable: {0}")]
    Unreachable(String),
    /// An answer that is not the listing (an error status included).
    #[error("malformed ECS agent task listing: {0}")]
    Malformed(String),
}

/// One task of the listing; its other fields are not needed.
#[derive(Debug, Deserialize)]
struct LocalTask {
    #[serde(rename = "KnownStatus")]
    known_status: String,
}

/// How many tasks the ECS agent at `url` lists as not stopped (any status but `STOPPED`,
/// those not started yet included).
pub async fn unstopped(url: &Uri) -> Result<usize, LocalTasksError> {
    let body = crate::discovery::get_local_body(url, MAX_BODY_BYTES).await.map_err(|(answered, why)| {
        if answered {
            LocalTasksError::Malformed(why)
        } else {
            LocalTasksError::Unreachable(why)
        }
    })?;
    count_unstopped(&body)
}

/// [`unstopped`] on a body already read.
pub fn count_unstopped(body: &[u8]) -> Result<usize, LocalTasksError> {
    let malformed = |why: String| LocalTasksError::Malformed(why);
    let listing: serde_json::Value = serde_json::from_slice(body).map_err(|e| malformed(e.to_string()))?;
    // The ECS agent always writes the field, and its Go encoder writes an empty list as `null`.
    let tasks = match listing.as_object().map(|o| o.get("Tasks")) {
        Some(Some(serde_json::Value::Null)) => return Ok(0),
        Some(Some(tasks)) => tasks,
        _ => return Err(malformed("no Tasks field".into())),
    };
    let tasks: Vec<LocalTask> = serde_json::from_value(tasks.clone()).map_err(|e| malformed(e.to_string()))?;
    Ok(tasks.iter().filter(|t| t.known_status != STOPPED).count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_every_task_the_ecs_agent_has_not_stopped() {
        let body = br#"{"Tasks":[
            {"Arn":"a","DesiredStatus":"STOPPED","KnownStatus":"RUNNING","Family":"web","Version":"3","Containers":[]},
            {"Arn":"b","DesiredStatus":"STOPPED","KnownStatus":"STOPPED","Family":"web","Version":"3","Containers":[]},
            {"Arn":"c","DesiredStatus":"RUNNING","KnownStatus":"NONE","Family":"batch","Version":"1","Containers":[]},
            {"Arn":"d","KnownStatus":"STOPPED","Family":"batch","Version":"1","Containers":[]}]}"#;
        assert_eq!(count_unstopped(body), Ok(2));
    }

    #[test]
    fn an_empty_listing_is_zero_in_either_form() {
        assert_eq!(count_unstopped(br#"{"Tasks":null}"#), Ok(0));
        assert_eq!(count_unstopped(br#"{"Tasks":[]}"#), Ok(0));
    }

    #[test]
    fn anything_else_is_malformed_rather_than_zero() {
        for body in [&b"{\"Tasks\":[{\"Arn\":\"a\"}]}"[..], b"<html>", b"[]", b"{}", b"{\"Tasks\":{}}"] {
            assert!(matches!(count_unstopped(body), Err(LocalTasksError::Malformed(_))), "{}", String::from_utf8_lossy(body));
        }
    }
}
