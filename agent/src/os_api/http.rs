//! [`OsApi`] over apiserver's Unix socket: plain HTTP/1.1, one request per trait method.
//!
//! apiserver closes an idle keep-alive connection after about 5 s, so a pooled connection can turn
//! out dead just as a request goes out. hyper-util already resends a request it knows it never
//! wrote; on top of that, a GET whose connection broke is sent once more on a fresh, unpooled
//! connection (a read is safe to repeat). A POST that may have been written is never resent here:
//! the error says `maybe_sent` and the caller decides.

use std::error::Error as StdError;
use std::path::PathBuf;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyperlocal::UnixConnector;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::{Action, ActionReply, Commit, OsApi, OsApiError, OsInfo, StatusRead, UpdateSettings, UpdateStatus, UpdatesPatch};

/// The settings keys the agent reads, as full data keys (apiserver's `keys=` wants the prefix).
const SETTINGS_PATH: &str =
    "/settings?keys=settings.updates.seed,settings.updates.version-lock,settings.updates.ignore-waves";
/// The longest body kept in an error (bodies are plain text or small JSON).
const ERROR_BODY_LIMIT: usize = 4096;
/// The largest body read at all; a status is a few KiB at most.
const READ_LIMIT: usize = 1024 * 1024;
/// Idle pooled connections are dropped well before apiserver's ~5 s keep-alive close.
const POOL_IDLE: Duration = Duration::from_secs(3);

type HttpClient = Client<UnixConnector, Full<Bytes>>;

/// The Bottlerocket API client over its Unix socket, with a timeout on every request.
#[derive(Clone, Debug)]
pub struct HttpOsApi {
    socket: PathBuf,
    request_timeout: Duration,
    pooled: HttpClient,
    fresh: HttpClient,
}

/// A complete answer: status and the body read in full.
struct Answer {
    status: StatusCode,
    body: Bytes,
}

impl HttpOsApi {
    /// A client for the socket at `socket`; every request gives up after `request_timeout`.
    pub fn new(socket: impl Into<PathBuf>, request_timeout: Duration) -> HttpOsApi {
        let pooled = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE)
            .build(UnixConnector);
        let fresh = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(0).build(UnixConnector);
        HttpOsApi { socket: socket.into(), request_timeout, pooled, fresh }
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &std::path::Path {
        &self.socket
    }

    /// `GET path`, resent once on a fresh connection when the first connection broke.
    async fn get(&self, path: &str) -> Result<Answer, OsApiError> {
        match self.exchange(&self.pooled, Method::GET, path).await {
            Err(OsApiError::Transport { reason, maybe_sent: true, .. }) => {
                tracing::debug!(request = %describe(&Method::GET, path), %reason,
                    "connection broke during a read; retrying once on a fresh connection");
                self.exchange(&self.fresh, Method::GET, path).await
            }
            other => other,
        }
    }

    /// `POST path` with an empty JSON body; never resent once it may have been written.
    async fn post(&self, path: &str) -> Result<Answer, OsApiError> {
        self.exchange(&self.pooled, Method::POST, path).await
    }

    /// One request on `client`, bounded by the request timeout (body included).
    async fn exchange(&self, client: &HttpClient, method: Method, path: &str) -> Result<Answer, OsApiError> {
        self.exchange_with(client, method, path, Bytes::new()).await
    }

    /// One request carrying `body` on `client`, bounded by the request timeout.
    async fn exchange_with(&self, client: &HttpClient, method: Method, path: &str, body: Bytes) -> Result<Answer, OsApiError> {
        let request = describe(&method, path);
        let req = self.build(method, path, &request, body)?;
        let work = async {
            let resp = client.request(req).await.map_err(|e| transport_error(&request, &e))?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), READ_LIMIT)
                .collect()
                .await
                .map_err(|e| body_error(&request, e.as_ref()))?
                .to_bytes();
            Ok(Answer { status, body })
        };
        match tokio::time::timeout(self.request_timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(OsApiError::Timeout {
                request,
                timeout_ms: self.request_timeout.as_millis().min(u64::MAX as u128) as u64,
            }),
        }
    }

    fn build(&self, method: Method, path: &str, request: &str, body: Bytes) -> Result<Request<Full<Bytes>>, OsApiError> {
        let uri: hyper::Uri = hyperlocal::Uri::new(&self.socket, path).into();
        let mut builder = Request::builder().method(method.clone()).uri(uri);
        if method == Method::POST || method == Method::PATCH {
            builder = builder.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        builder.body(Full::new(body)).map_err(|e| OsApiError::Transport {
            request: request.to_string(),
            reason: format!("building the request: {e}"),
            maybe_sent: false,
        })
    }
}

impl OsApi for HttpOsApi {
    async fn os_info(&self) -> Result<OsInfo, OsApiError> {
        let answer = self.get("/os").await?;
        match answer.status {
            StatusCode::OK => parse_json("GET /os", &answer.body),
            _ => Err(unexpected("GET /os", &answer)),
        }
    }

    async fn update_settings(&self) -> Result<UpdateSettings, OsApiError> {
        /// `GET /settings` answers without the `settings` wrapper; absent keys are simply absent.
        #[derive(Deserialize)]
        struct Shape {
            #[serde(default)]
            updates: Option<UpdateSettings>,
        }
        let request = describe(&Method::GET, SETTINGS_PATH);
        let answer = self.get(SETTINGS_PATH).await?;
        match answer.status {
            StatusCode::OK => {
                let shape: Shape = parse_json(&request, &answer.body)?;
                Ok(shape.updates.unwrap_or_default())
            }
            _ => Err(unexpected(&request, &answer)),
        }
    }

    async fn update_status(&self) -> Result<StatusRead, OsApiError> {
        let request = "GET /updates/status";
        let answer = self.get("/updates/status").await?;
        match answer.status {
            StatusCode::OK => parse_json::<UpdateStatus>(request, &answer.body).map(StatusRead::Status),
            StatusCode::LOCKED => Ok(StatusRead::Busy),
            StatusCode::NOT_FOUND => Ok(StatusRead::Uninitialized),
            _ => Err(unexpected(request, &answer)),
        }
    }

    async fn action(&self, action: Action) -> Result<ActionReply, OsApiError> {
        let answer = self.post(action.path()).await?;
        match answer.status {
            StatusCode::NO_CONTENT => Ok(ActionReply::Started),
            StatusCode::LOCKED => Ok(ActionReply::Busy),
            StatusCode::CONFLICT => Ok(ActionReply::NotAllowed),
            StatusCode::NOT_FOUND => Ok(ActionReply::NotFound(body_text(&answer.body))),
            _ => Err(unexpected(&describe(&Method::POST, action.path()), &answer)),
        }
    }

    async fn patch_updates(&self, tx: &str, patch: &UpdatesPatch) -> Result<(), OsApiError> {
        let path = format!("/settings?tx={tx}");
        let body = Bytes::from(patch.body().to_string());
        // Not resent on a broken connection: the caller reads the settings back before a retry.
        let answer = self.exchange_with(&self.pooled, Method::PATCH, &path, body).await?;
        match answer.status {
            StatusCode::NO_CONTENT => Ok(()),
            _ => Err(unexpected(&describe(&Method::PATCH, &path), &answer)),
        }
    }

    async fn commit_and_apply(&self, tx: &str) -> Result<Commit, OsApiError> {
        let path = format!("/tx/commit_and_apply?tx={tx}");
        let answer = self.post(&path).await?;
        match answer.status {
            StatusCode::OK => parse_json::<serde_json::Value>(&describe(&Method::POST, &path), &answer.body).map(|v| Commit::Applied(changed_keys(&v))),
            StatusCode::UNPROCESSABLE_ENTITY => Ok(Commit::NothingPending),
            _ => Err(unexpected(&describe(&Method::POST, &path), &answer)),
        }
    }
}

/// The changed keys of a commit: a JSON list of data keys. Only logged, so anything else in
/// the list is kept as its JSON text rather than refused.
pub(crate) fn changed_keys(v: &serde_json::Value) -> Vec<String> {
    match v.as_array() {
        Some(keys) => keys.iter().map(|k| k.as_str().map(str::to_string).unwrap_or_else(|| k.to_string())).collect(),
        None => vec![v.to_string()],
    }
}

/// "METHOD path", the request's name in errors and logs.
fn describe(method: &Method, path: &str) -> String {
    format!("{method} {path}")
}

fn parse_json<T: DeserializeOwned>(request: &str, body: &[u8]) -> Result<T, OsApiError> {
    serde_json::from_slice(body).map_err(|e| OsApiError::Malformed {
        request: request.to_string(),
        reason: e.to_string(),
        body: body_text(body),
    })
}

fn unexpected(request: &str, answer: &Answer) -> OsApiError {
    OsApiError::Status { request: request.to_string(), status: answer.status.as_u16(), body: body_text(&answer.body) }
}

/// The body as text for an error, cut to [`ERROR_BODY_LIMIT`] bytes on a character boundary.
fn body_text(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    if text.len() <= ERROR_BODY_LIMIT {
        return text.into_owned();
    }
    let mut cut = ERROR_BODY_LIMIT;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}… ({} bytes in all)", &text[..cut], body.len())
}

/// A body that could not be read: too large (a wrong answer, not worth a retry) or cut off.
fn body_error(request: &str, err: &(dyn StdError + Send + Sync + 'static)) -> OsApiError {
    if err.is::<http_body_util::LengthLimitError>() {
        return OsApiError::Malformed {
            request: request.to_string(),
            reason: format!("body larger than {READ_LIMIT} bytes"),
            body: String::new(),
        };
    }
    OsApiError::Transport {
        request: request.to_string(),
        reason: format!("reading the body: {}", chain(err)),
        maybe_sent: true,
    }
}

/// Classifies a client error by whether the request may have reached apiserver.
///
/// A failed connect (socket missing, connection refused) and a request hyper cancelled before
/// writing it were certainly not sent; anything later (the connection broke while waiting for the
/// answer) may have been.
fn transport_error(request: &str, err: &hyper_util::client::legacy::Error) -> OsApiError {
    let maybe_sent = !(err.is_connect() || cancelled_before_sending(err));
    OsApiError::Transport { request: request.to_string(), reason: chain(err), maybe_sent }
}

fn cancelled_before_sending(err: &(dyn StdError + 'static)) -> bool {
    let mut cause: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cause {
        if e.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_canceled) {
            return true;
        }
        cause = e.source();
    }
    false
}

/// The error and its causes on one line ("client error (Connect): No such file or directory").
fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_bodies_are_cut_on_a_character_boundary() {
        let body = "é".repeat(ERROR_BODY_LIMIT);
        let text = body_text(body.as_bytes());
        assert!(text.len() < body.len(), "cut: {}", text.len());
        assert!(text.starts_with("éé"));
        assert!(text.ends_with(&format!("({} bytes in all)", body.len())));
        assert_eq!(body_text(b"Update lock held"), "Update lock held");
    }

    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{UnixListener, UnixStream};

    /// What a scripted connection does with each request it reads.
    #[derive(Clone)]
    enum Turn {
        /// Answer 200 with this JSON body and keep the connection.
        Answer(&'static str),
        /// Close the connection without answering (apiserver's idle close, racing the request).
        Hang,
        /// Read the request and never answer.
        Silent,
        /// Answer 200 with a body of this many bytes.
        Huge(usize),
    }

    const STATUS_OK: &str = r#"{"update_state":"Staged"}"#;

    /// Serves one script per accepted connection; returns the request lines seen, in order.
    fn serve(listener: UnixListener, scripts: Vec<Vec<Turn>>) -> Arc<Mutex<Vec<String>>> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            for script in scripts {
                let Ok((mut stream, _)) = listener.accept().await else { return };
                for turn in script {
                    let Some(line) = read_head(&mut stream).await else { break };
                    log.lock().expect("log").push(line);
                    match turn {
                        Turn::Answer(body) => {
                            let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
                            stream.write_all(answer.as_bytes()).await.expect("write");
                        }
                        Turn::Huge(size) => {
                            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {size}\r\n\r\n");
                            stream.write_all(head.as_bytes()).await.expect("write");
                            // The client may stop reading at its limit; a failed write ends the script.
                            if stream.write_all(&vec![b' '; size]).await.is_err() {
                                break;
                            }
                        }
                        Turn::Hang => break,
                        Turn::Silent => std::future::pending::<()>().await,
                    }
                }
            }
        });
        seen
    }

    /// Reads one request head (these requests have no body); `None` at end of stream.
    async fn read_head(stream: &mut UnixStream) -> Option<String> {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if stream.read(&mut byte).await.ok()? == 0 {
                return None;
            }
            head.push(byte[0]);
        }
        let text = String::from_utf8_lossy(&head).into_owned();
        text.lines().next().map(str::to_string)
    }

    fn listener() -> (tempfile::TempDir, std::path::PathBuf, UnixListener) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("api.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        (dir, path, listener)
    }

    #[tokio::test]
    async fn a_get_on_a_connection_closed_under_it_is_resent_once_on_a_fresh_one() {
        let (_dir, path, listener) = listener();
        let seen = serve(listener, vec![vec![Turn::Answer(STATUS_OK), Turn::Hang], vec![Turn::Answer(STATUS_OK)]]);
        let api = HttpOsApi::new(&path, Duration::from_secs(30));
        for _ in 0..2 {
            match api.update_status().await.expect("status read") {
                StatusRead::Status(s) => assert_eq!(s.update_state, crate::os_api::UpdateState::Staged),
                other => panic!("expected a status, got {other:?}"),
            }
        }
        let seen = seen.lock().expect("log").clone();
        assert_eq!(seen, vec!["GET /updates/status HTTP/1.1"; 3], "first, dropped, resent");
    }

    #[tokio::test]
    async fn a_post_on_a_connection_closed_under_it_is_not_resent() {
        let (_dir, path, listener) = listener();
        let seen = serve(listener, vec![vec![Turn::Answer(STATUS_OK), Turn::Hang], vec![Turn::Answer(STATUS_OK)]]);
        let api = HttpOsApi::new(&path, Duration::from_secs(30));
        api.update_status().await.expect("first read");
        match api.action(Action::Prepare).await {
            Err(OsApiError::Transport { request, maybe_sent, .. }) => {
                assert_eq!(request, "POST /actions/prepare-update");
                assert!(maybe_sent, "the request was written before the connection closed");
            }
            other => panic!("expected a transport error, got {other:?}"),
        }
        let seen = seen.lock().expect("log").clone();
        assert_eq!(seen, vec!["GET /updates/status HTTP/1.1", "POST /actions/prepare-update HTTP/1.1"]);
    }

    #[tokio::test]
    async fn a_silent_server_is_a_timeout() {
        let (_dir, path, listener) = listener();
        let _seen = serve(listener, vec![vec![Turn::Silent]]);
        let api = HttpOsApi::new(&path, Duration::from_millis(200));
        match api.os_info().await {
            Err(OsApiError::Timeout { request, timeout_ms }) => {
                assert_eq!((request.as_str(), timeout_ms), ("GET /os", 200))
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn settings_are_read_from_the_updates_object_and_missing_keys_are_none() {
        let (_dir, path, listener) = listener();
        let seen = serve(
            listener,
            vec![vec![Turn::Answer(r#"{"updates":{"seed":77,"version-lock":"v1.2"}}"#), Turn::Answer("{}")]],
        );
        let api = HttpOsApi::new(&path, Duration::from_secs(30));
        let s = api.update_settings().await.expect("settings");
        assert_eq!(s, UpdateSettings { seed: Some(77), version_lock: Some("v1.2".into()), ignore_waves: None });
        assert_eq!(api.update_settings().await.expect("settings"), UpdateSettings::default());
        let seen = seen.lock().expect("log").clone();
        assert_eq!(seen[0], format!("GET {SETTINGS_PATH} HTTP/1.1"));
    }

    #[tokio::test]
    async fn an_oversized_body_is_malformed_not_retried() {
        let (_dir, path, listener) = listener();
        let seen = serve(listener, vec![vec![Turn::Huge(READ_LIMIT + 1)], vec![Turn::Answer(STATUS_OK)]]);
        let api = HttpOsApi::new(&path, Duration::from_secs(30));
        match api.update_status().await {
            Err(OsApiError::Malformed { reason, .. }) => assert!(reason.contains("larger than"), "{reason}"),
            other => panic!("expected Malformed, got {other:?}"),
        }
        assert_eq!(seen.lock().expect("log").len(), 1, "not resent");
    }

    #[tokio::test]
    async fn a_missing_socket_is_a_transport_error_never_sent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let api = HttpOsApi::new(dir.path().join("absent.sock"), Duration::from_secs(5));
        match api.action(Action::Refresh).await {
            Err(OsApiError::Transport { request, maybe_sent, .. }) => {
                assert_eq!(request, "POST /actions/refresh-updates");
                assert!(!maybe_sent);
            }
            other => panic!("expected a transport error, got {other:?}"),
        }
    }
}
