//! Webhook notifications: one JSON message per event that matters to the people running the
//! fleet (a host started draining, updated, failed, rolled back, found a version halted, holds its
//! slot, ran over its window).
//!
//! The body is Slack-compatible (an incoming webhook shows `text`) and carries the same facts as
//! fields for any other receiver: `event`, `cluster`, `instance`, `version`, `from`, `reason`, `at`.
//!
//! Delivery must never hold up or fail an update, so [`Notifier::notify`] is not async: it puts
//! the message in a bounded queue and returns. A worker on its own thread, with its own small
//! runtime, posts the messages in order, each with a per-attempt timeout and a bounded number of
//! retries with exponential back-off, then gives up with one warning. Its own thread means nothing
//! it waits for (a connect, a timeout, a back-off) shares the agent's single-threaded runtime or,
//! in simulations, its virtual clock. The URL is a secret (it is the credential of an incoming
//! webhook): logs, errors and `check-config` show its scheme and host only.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::backoff::{Backoff, Jitter};
use crate::clock::{Clock, WallTime};
use crate::config::ConfigError;

/// Messages waiting beyond this are dropped (counted and logged): a host makes a handful per
/// update, so a full queue means the endpoint has been failing for a long time.
pub const QUEUE_LEN: usize = 64;

/// Back-off between the attempts of one message.
pub const RETRY_BACKOFF: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));

/// How long a stopping agent waits for queued messages to go out.
pub const FLUSH_TIME: Duration = Duration::from_secs(5);

/// `notify.timeout` bounds: long enough for a slow TLS handshake, short enough that a queue
/// behind a dead endpoint still moves.
const MIN_TIMEOUT: Duration = Duration::from_millis(100);
const MAX_TIMEOUT: Duration = Duration::from_secs(300);
/// `notify.retries` ceiling.
const MAX_RETRIES: u32 = 10;

// ---------------------------------------------------------------- config

/// The `[notify]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawNotify {
    webhook: Option<String>,
    timeout: Option<String>,
    retries: Option<u32>,
}

/// Where and how to send notifications.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotifyConfig {
    /// The incoming-webhook URL (`None`: no notifications).
    pub webhook: Option<WebhookUrl>,
    /// How long one attempt (connect, send, answer) may take.
    pub timeout: Duration,
    /// How many times a message is tried again after the first attempt failed.
    pub retries: u32,
}

impl Default for NotifyConfig {
    fn default() -> NotifyConfig {
        NotifyConfig { webhook: None, timeout: Duration::from_secs(10), retries: 3 }
    }
}

impl NotifyConfig {
    /// Checks values and fills in defaults; `dur` reads durations as the rest of the config.
    pub fn from_raw(
        r: RawNotify,
        dur: impl Fn(&str, &Option<String>, &str) -> Result<Duration, ConfigError>,
        bad: impl Fn(&str, String) -> ConfigError,
    ) -> Result<NotifyConfig, ConfigError> {
        let webhook = r.webhook.map(|w| WebhookUrl::parse(&w).map_err(|why| bad("notify.webhook", why))).transpose()?;
        let timeout = dur("notify.timeout", &r.timeout, "10s")?;
        if !(MIN_TIMEOUT..=MAX_TIMEOUT).contains(&timeout) {
            return Err(bad("notify.timeout", "must be between 100ms and 5m".into()));
        }
        let retries = r.retries.unwrap_or(3);
        if retries > MAX_RETRIES {
            return Err(bad("notify.retries", format!("{retries} is more than {MAX_RETRIES}")));
        }
        Ok(NotifyConfig { webhook, timeout, retries })
    }

    /// The `[notify]` table for `check-config`, with the URL shown as scheme and host only.
    pub fn to_table(&self) -> toml::Table {
        let mut t = toml::Table::new();
        if let Some(w) = &self.webhook {
            t.insert("webhook".into(), w.redacted().into());
        }
        t.insert("timeout".into(), crate::config::format_duration(self.timeout).into());
        t.insert("retries".into(), i64::from(self.retries).into());
        t
    }
}

/// A webhook URL: HTTPS, or HTTP to this host's loopback address. Its path is a secret, so its
/// `Debug` and `Display` show the scheme and host only.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookUrl {
    text: String,
    uri: hyper::Uri,
}

impl WebhookUrl {
    /// Parses `text`; the error never repeats the URL's path.
    pub fn parse(text: &str) -> Result<WebhookUrl, String> {
        let uri: hyper::Uri = text.parse().map_err(|_| "is not a URL (write e.g. `https://hooks.example.com/...`)".to_string())?;
        let host = uri.host().filter(|h| !h.is_empty()).ok_or("has no host")?;
        let shown = format!("{}://{host}/...", uri.scheme_str().unwrap_or("?"));
        match uri.scheme_str() {
            Some("https") => {}
            Some("http") if is_loopback(host) => {}
            _ => {
                return Err(format!(
                    "`{shown}` is refused: the rule is an https:// URL (http:// only to 127.0.0.1, localhost or [::1], \
                     where nothing leaves the host)"
                ))
            }
        }
        Ok(WebhookUrl { text: text.to_string(), uri })
    }

    /// The host name, the most of the URL a log may show.
    pub fn host(&self) -> &str {
        self.uri.host().unwrap_or("webhook")
    }

    /// `scheme://host/<redacted>`.
    pub fn redacted(&self) -> String {
        format!("{}://{}/<redacted>", self.uri.scheme_str().unwrap_or("https"), self.host())
    }

    fn is_https(&self) -> bool {
        self.uri.scheme_str() == Some("https")
    }

    /// Replaces the URL, and its path and query, wherever they appear in `text`.
    fn scrub(&self, text: &str) -> String {
        let mut out = text.replace(&self.text, &self.redacted());
        if let Some(pq) = self.uri.path_and_query().map(|p| p.as_str()).filter(|p| p.len() > 1) {
            out = out.replace(pq, "/<redacted>");
        }
        out
    }
}

impl std::fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WebhookUrl({})", self.redacted())
    }
}

impl std::fmt::Display for WebhookUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || bare.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

// ---------------------------------------------------------------- events

/// Something that happened on this host that the people running the fleet want to hear of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The host holds a slot and its instance started draining, to update to `version`.
    DrainStarted {
        /// The version it updates to.
        version: String,
    },
    /// The host runs `version`, is back in service and gave its slot back.
    Updated {
        /// The version it ran before.
        from: String,
        /// The version it runs now.
        version: String,
    },
    /// `version` failed on this host; its failure marker counts towards halting it fleet-wide.
    Failed {
        /// The version.
        version: String,
        /// The failure marker's reason (`health-check-failed`, `rolled-back`, ...).
        reason: String,
    },
    /// The host went back to its previous version after `version` failed: the OS rolled back a
    /// boot that did not come up, or the agent rolled the update back.
    RolledBack {
        /// The version given up.
        version: String,
        /// Why.
        reason: String,
    },
    /// `version` failed on enough hosts of the cluster that this one does not take it. Said once
    /// per version, not at every look.
    Halted {
        /// The version.
        version: String,
        /// The instances it failed on.
        failed_on: Vec<String>,
    },
    /// The host keeps its slot (the rollout waits behind it) because it cannot finish `version`.
    /// Said once per episode, not at every look.
    Held {
        /// The version.
        version: String,
        /// What it waits for.
        reason: String,
    },
    /// The update to `version` finished after its maintenance window closed.
    OverWindow {
        /// The version.
        version: String,
        /// When the window closed.
        closed: WallTime,
    },
}

impl Event {
    /// The kebab-case name in the message's `event` field.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::DrainStarted { .. } => "drain-started",
            Event::Updated { .. } => "updated",
            Event::Failed { .. } => "failed",
            Event::RolledBack { .. } => "rolled-back",
            Event::Halted { .. } => "halted",
            Event::Held { .. } => "held",
            Event::OverWindow { .. } => "over-window",
        }
    }

    /// The version the event is about.
    pub fn version(&self) -> &str {
        match self {
            Event::DrainStarted { version }
            | Event::Updated { version, .. }
            | Event::Failed { version, .. }
            | Event::RolledBack { version, .. }
            | Event::Halted { version, .. }
            | Event::Held { version, .. }
            | Event::OverWindow { version, .. } => version,
        }
    }

    fn reason(&self) -> Option<String> {
        match self {
            Event::Failed { reason, .. } | Event::RolledBack { reason, .. } | Event::Held { reason, .. } => Some(reason.clone()),
            Event::Halted { failed_on, .. } => Some(format!("failed on {}", short_ids(failed_on))),
            Event::OverWindow { closed, .. } => Some(format!("the window closed at {closed}")),
            Event::DrainStarted { .. } | Event::Updated { .. } => None,
        }
    }

    /// Events that a host would otherwise repeat at every look while the condition lasts.
    fn repeats(&self) -> bool {
        matches!(self, Event::Halted { .. } | Event::Held { .. })
    }

    /// The sentence a chat shows; `who` names the host.
    fn text(&self, who: &str) -> String {
        match self {
            Event::DrainStarted { version } => format!("{who} started draining to update to {version}"),
            Event::Updated { from, version } => format!("{who} updated from {from} to {version} and is back in service"),
            Event::Failed { version, reason } => format!("{who} failed on version {version} ({reason})"),
            Event::RolledBack { version, reason } => format!("{who} rolled back from version {version}: {reason}"),
            Event::Halted { version, failed_on } => {
                format!("{who} does not take version {version}: halted after it failed on {}", short_ids(failed_on))
            }
            Event::Held { version, reason } => format!("{who} holds its update slot on version {version}: {reason}"),
            Event::OverWindow { version, closed } => {
                format!("{who} finished its update to {version} after the maintenance window closed at {closed}")
            }
        }
    }
}

fn short_ids(arns: &[String]) -> String {
    arns.iter().map(|a| crate::status::short_id(a)).collect::<Vec<_>>().join(", ")
}

/// Which host the messages are about.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Origin {
    /// The cluster's name (`None` for a host updating on its own).
    pub cluster: Option<String>,
    /// The container instance ARN.
    pub instance: Option<String>,
}

impl Origin {
    fn who(&self) -> String {
        match (&self.instance, &self.cluster) {
            (Some(i), Some(c)) => format!("Host {} in cluster {c}", crate::status::short_id(i)),
            (Some(i), None) => format!("Host {}", crate::status::short_id(i)),
            _ => "A standalone host".into(),
        }
    }
}

/// The JSON body of one message.
#[derive(Clone, Debug, Serialize)]
struct Message {
    text: String,
    event: &'static str,
    cluster: Option<String>,
    instance: Option<String>,
    version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<String>,
    reason: Option<String>,
    at: String,
}

impl Message {
    fn new(event: &Event, origin: &Origin, at: WallTime) -> Message {
        Message {
            text: event.text(&origin.who()),
            event: event.kind(),
            cluster: origin.cluster.clone(),
            instance: origin.instance.clone(),
            version: event.version().to_string(),
            from: match event {
                Event::Updated { from, .. } => Some(from.clone()),
                _ => None,
            },
            reason: event.reason(),
            at: at.to_rfc3339(),
        }
    }
}

// ---------------------------------------------------------------- the handle

/// How messages are delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// How long one attempt may take.
    pub timeout: Duration,
    /// Attempts after the first.
    pub retries: u32,
    /// The wait between attempts.
    pub backoff: Backoff,
    /// How many messages may wait.
    pub queue: usize,
}

impl Delivery {
    /// The delivery `cfg` asks for, with the standard back-off and queue.
    pub fn of(cfg: &NotifyConfig) -> Delivery {
        Delivery { timeout: cfg.timeout, retries: cfg.retries, backoff: RETRY_BACKOFF, queue: QUEUE_LEN }
    }
}

/// How [`Notifier::close`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flush {
    /// Every queued message was delivered or given up on.
    Done,
    /// Time ran out with messages still queued or in flight; they are dropped.
    Abandoned,
}

/// The agent's handle on the webhook: [`Notifier::notify`] never waits for the network.
#[derive(Debug, Default)]
pub struct Notifier {
    running: Option<Running>,
}

#[derive(Debug)]
struct Running {
    queue: mpsc::Sender<Message>,
    origin: Origin,
    host: String,
    dropped: AtomicU64,
    /// The kind and version of the last event queued, so a condition that lasts is said once.
    last: Mutex<Option<(&'static str, String)>>,
    /// Resolves when the worker has finished (its sender is dropped).
    stopped: oneshot::Receiver<()>,
}

impl Notifier {
    /// A notifier that sends nothing.
    pub fn disabled() -> Notifier {
        Notifier::default()
    }

    /// Starts the worker when `cfg` has a webhook; otherwise a disabled notifier.
    pub fn start(cfg: &NotifyConfig, origin: Origin) -> Notifier {
        match &cfg.webhook {
            Some(url) => Notifier::start_with(url.clone(), Delivery::of(cfg), origin),
            None => Notifier::disabled(),
        }
    }

    /// Starts the worker for `url`; a worker that cannot start leaves the notifier disabled
    /// (logged), since notifications must never stop the agent.
    pub fn start_with(url: WebhookUrl, delivery: Delivery, origin: Origin) -> Notifier {
        let (queue, rx) = mpsc::channel(delivery.queue.max(1));
        let (done, stopped) = oneshot::channel();
        let host = url.host().to_string();
        if let Err(e) = spawn_worker(url, delivery, rx, done) {
            tracing::warn!(error = %e, webhook = %host, "cannot start the webhook worker; notifications are off");
            return Notifier::disabled();
        }
        tracing::info!(webhook = %host, timeout_ms = delivery.timeout.as_millis() as u64, retries = delivery.retries, "webhook notifications on");
        Notifier { running: Some(Running { queue, origin, host, dropped: AtomicU64::new(0), last: Mutex::new(None), stopped }) }
    }

    /// Whether messages go anywhere.
    pub fn is_enabled(&self) -> bool {
        self.running.is_some()
    }

    /// Queues `event`, which happened at `at`, and returns at once. A full queue drops it (the
    /// newest) with a counted warning; a lasting condition already said is not said again.
    pub fn notify(&self, event: Event, at: WallTime) {
        let Some(r) = &self.running else { return };
        let mut last = r.last.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if is_repeat(last.as_ref(), &event) {
            tracing::debug!(event = event.kind(), version = event.version(), "webhook: already said; not repeated");
            return;
        }
        match r.queue.try_send(Message::new(&event, &r.origin, at)) {
            Ok(()) => {
                tracing::debug!(event = event.kind(), version = event.version(), "webhook message queued");
                *last = Some((event.kind(), event.version().to_string()));
            }
            Err(e) => {
                let dropped = r.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                let why = match e {
                    mpsc::error::TrySendError::Full(_) => "the queue is full",
                    mpsc::error::TrySendError::Closed(_) => "the worker has stopped",
                };
                tracing::warn!(event = event.kind(), version = event.version(), dropped, webhook = %r.host, "webhook message dropped: {why}");
            }
        }
    }

    /// Messages queued and not yet taken by the worker.
    pub fn queued(&self) -> usize {
        self.running.as_ref().map_or(0, |r| r.queue.max_capacity() - r.queue.capacity())
    }

    /// Messages dropped because the queue was full or the worker had stopped.
    pub fn dropped(&self) -> u64 {
        self.running.as_ref().map_or(0, |r| r.dropped.load(Ordering::Relaxed))
    }

    /// Stops taking messages and gives the queue up to `within` to go out.
    pub async fn close(self, within: Duration) -> Flush {
        let Some(r) = self.running else { return Flush::Done };
        let queued = r.queue.max_capacity() - r.queue.capacity();
        drop(r.queue);
        if tokio::time::timeout(within, r.stopped).await.is_ok() {
            return Flush::Done;
        }
        tracing::warn!(queued, webhook = %r.host, within_ms = within.as_millis() as u64, "webhook messages not sent before stopping; dropped");
        Flush::Abandoned
    }
}

/// Whether `event` only repeats the last one queued: a lasting condition (halted, held) for the
/// same version is said again only after something else was said.
fn is_repeat(last: Option<&(&'static str, String)>, event: &Event) -> bool {
    event.repeats() && last.is_some_and(|(kind, version)| *kind == event.kind() && version == event.version())
}

impl<O, S, K: Clock, J> crate::cycle::Agent<O, S, K, J> {
    /// Queues `event` for the webhook, stamped with this host's time; returns at once.
    pub(crate) fn notify(&self, event: Event) {
        self.notifier.notify(event, self.clock.now());
    }
}

// ---------------------------------------------------------------- the worker

/// Runs the delivery loop on its own thread and runtime, logging through the dispatcher that
/// is current here (so a test's or a simulation's subscriber sees its lines).
fn spawn_worker(url: WebhookUrl, delivery: Delivery, rx: mpsc::Receiver<Message>, done: oneshot::Sender<()>) -> std::io::Result<()> {
    let dispatch = tracing::dispatcher::get_default(Clone::clone);
    std::thread::Builder::new().name("webhook".into()).spawn(move || {
        tracing::dispatcher::with_default(&dispatch, || {
            match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt.block_on(deliver_all(url, delivery, rx)),
                Err(e) => tracing::warn!(error = %e, "cannot start the webhook runtime; notifications are off"),
            }
        });
        drop(done);
    })?;
    Ok(())
}

/// Delivers messages in order until the queue is closed and empty.
async fn deliver_all(url: WebhookUrl, delivery: Delivery, mut rx: mpsc::Receiver<Message>) {
    let transport = match Transport::for_url(&url) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %url.scrub(&e.to_string()), webhook = %url.host(), "cannot set up the webhook's HTTPS client; notifications are off");
            return;
        }
    };
    let jitter = Jitter::from_os();
    while let Some(msg) = rx.recv().await {
        deliver(&transport, &url, &delivery, &jitter, &msg).await;
    }
}

/// Tries one message until it is delivered, refused, or out of retries; logs how it ended.
async fn deliver(transport: &Transport, url: &WebhookUrl, d: &Delivery, jitter: &Jitter, msg: &Message) {
    let body = match serde_json::to_vec(msg) {
        Ok(b) => Bytes::from(b),
        Err(e) => {
            tracing::warn!(event = msg.event, error = %e, "webhook message cannot be encoded; not sent");
            return;
        }
    };
    let mut attempt = 0u32;
    loop {
        let error = match transport.post(url, body.clone(), d.timeout).await {
            Ok(()) => {
                tracing::debug!(event = msg.event, attempts = attempt + 1, webhook = %url.host(), "webhook message delivered");
                return;
            }
            Err(e) => e,
        };
        if !error.is_retryable() || attempt >= d.retries {
            tracing::warn!(event = msg.event, version = %msg.version, attempts = attempt + 1, error = %error, webhook = %url.host(),
                "webhook message not delivered; the update is not affected");
            return;
        }
        let wait = d.backoff.delay(attempt, jitter);
        tracing::debug!(event = msg.event, attempt = attempt + 1, error = %error, retry_ms = wait.as_millis() as u64, "webhook attempt failed; retrying");
        tokio::time::sleep(wait).await;
        attempt += 1;
    }
}

/// Why one attempt failed. The texts never contain the URL's path.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// No connection, a TLS failure, or the connection broke.
    #[error("cannot reach the webhook: {0}")]
    Transport(String),
    /// No answer within the per-attempt timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The endpoint answered with a status that is not 2xx.
    #[error("the webhook answered HTTP {0}")]
    Status(u16),
    /// The request could not be built.
    #[error("cannot build the request: {0}")]
    Request(String),
}

impl DeliveryError {
    /// Whether the same message may go through if tried again: connection problems, timeouts,
    /// 5xx and 429; not other answers (a 4xx will not change).
    pub fn is_retryable(&self) -> bool {
        match self {
            DeliveryError::Transport(_) | DeliveryError::Timeout(_) => true,
            DeliveryError::Status(s) => *s == 429 || *s >= 500,
            DeliveryError::Request(_) => false,
        }
    }
}

/// Plain HTTP for a loopback URL, TLS otherwise (TLS only, with the system's CA bundle: the
/// image ships one and points `SSL_CERT_FILE` at it).
enum Transport {
    Plain(Client<HttpConnector, Full<Bytes>>),
    Tls(Client<HttpsConnector<HttpConnector>, Full<Bytes>>),
}

impl Transport {
    fn for_url(url: &WebhookUrl) -> std::io::Result<Transport> {
        if !url.is_https() {
            return Ok(Transport::Plain(Client::builder(TokioExecutor::new()).build_http()));
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(provider)?
            .https_only()
            .enable_http1()
            .build();
        Ok(Transport::Tls(Client::builder(TokioExecutor::new()).build(https)))
    }

    /// One POST of `body`, within `timeout`.
    async fn post(&self, url: &WebhookUrl, body: Bytes, timeout: Duration) -> Result<(), DeliveryError> {
        let request = hyper::Request::post(url.uri.clone())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::USER_AGENT, concat!("br-update-agent/", env!("CARGO_PKG_VERSION")))
            .body(Full::new(body))
            .map_err(|e| DeliveryError::Request(url.scrub(&e.to_string())))?;
        let sent = async {
            match self {
                Transport::Plain(c) => c.request(request).await,
                Transport::Tls(c) => c.request(request).await,
            }
        };
        let response = tokio::time::timeout(timeout, sent)
            .await
            .map_err(|_| DeliveryError::Timeout(timeout))?
            .map_err(|e| DeliveryError::Transport(url.scrub(&error_chain(&e))))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(DeliveryError::Status(status.as_u16()))
        }
    }
}

/// An error with its causes, `a: b: c`.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> Result<NotifyConfig, String> {
        let raw: RawNotify = toml::from_str(text).map_err(|e| e.to_string())?;
        let dur = |k: &str, v: &Option<String>, d: &str| {
            crate::config::parse_duration(v.as_deref().unwrap_or(d)).map_err(|r| ConfigError::Value { key: k.into(), reason: r })
        };
        NotifyConfig::from_raw(raw, dur, |k, r| ConfigError::Value { key: k.into(), reason: r }).map_err(|e| e.to_string())
    }

    const SECRET: &str = "T000/B000/XXXXsecretXXXX";

    #[test]
    fn no_webhook_is_the_default_and_sends_nothing() {
        let c = cfg("").expect("valid");
        assert_eq!(c, NotifyConfig::default());
        let n = Notifier::start(&c, Origin::default());
        assert!(!n.is_enabled());
        n.notify(Event::DrainStarted { version: "1.1.0".into() }, WallTime(0));
        assert_eq!((n.queued(), n.dropped()), (0, 0));
    }

    #[test]
    fn https_and_loopback_http_are_accepted() {
        for url in ["https://hooks.example.com/services/x", "http://127.0.0.1:8080/hook", "http://localhost/h", "http://[::1]:9/h", "http://127.1.2.3/h"] {
            let c = cfg(&format!("webhook = \"{url}\"")).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert!(c.webhook.is_some(), "{url}");
        }
    }

    #[test]
    fn other_urls_are_refused_naming_the_key_and_the_rule_without_the_secret() {
        for url in [
            format!("http://hooks.example.com/services/{SECRET}"),
            format!("http://10.0.0.1/{SECRET}"),
            format!("ftp://hooks.example.com/{SECRET}"),
            format!("hooks.example.com/{SECRET}"),
            String::new(),
        ] {
            let e = cfg(&format!("webhook = \"{url}\"")).expect_err(&url);
            assert!(e.contains("`notify.webhook`"), "{e}");
            assert!(!e.contains("XXXXsecret"), "the secret leaked: {e}");
        }
        let e = cfg(&format!("webhook = \"http://hooks.example.com/services/{SECRET}\"")).expect_err("http");
        assert!(e.contains("https://") && e.contains("127.0.0.1"), "states the rule: {e}");
    }

    #[test]
    fn timeout_and_retries_are_bounded() {
        assert!(cfg("timeout = \"50ms\"").expect_err("short").contains("`notify.timeout`"));
        assert!(cfg("timeout = \"6m\"").expect_err("long").contains("`notify.timeout`"));
        assert!(cfg("retries = 11").expect_err("many").contains("`notify.retries`"));
        let c = cfg("timeout = \"2s\"\nretries = 0").expect("valid");
        assert_eq!((c.timeout, c.retries), (Duration::from_secs(2), 0));
    }

    #[test]
    fn the_url_prints_as_scheme_and_host_only() {
        let url = WebhookUrl::parse(&format!("https://hooks.example.com/services/{SECRET}?token=abc")).expect("valid");
        for shown in [format!("{url}"), format!("{url:?}"), url.redacted(), toml::to_string(&NotifyConfig { webhook: Some(url.clone()), ..Default::default() }.to_table()).expect("toml")] {
            assert!(shown.contains("hooks.example.com"), "{shown}");
            assert!(!shown.contains("XXXXsecret") && !shown.contains("token"), "{shown}");
        }
        let scrubbed = url.scrub(&format!("error sending to https://hooks.example.com/services/{SECRET}?token=abc: refused"));
        assert!(!scrubbed.contains("XXXXsecret"), "{scrubbed}");
        // The printed form does not parse back into a working URL by accident.
        assert!(WebhookUrl::parse(&url.redacted()).is_err());
    }

    #[test]
    fn retry_rules_follow_the_status() {
        for (status, retry) in [(500, true), (503, true), (429, true), (400, false), (404, false), (410, false), (301, false)] {
            assert_eq!(DeliveryError::Status(status).is_retryable(), retry, "{status}");
        }
        assert!(DeliveryError::Timeout(Duration::from_secs(1)).is_retryable());
        assert!(DeliveryError::Transport("refused".into()).is_retryable());
    }

    #[test]
    fn messages_carry_text_and_fields() {
        let origin = Origin { cluster: Some("prod".into()), instance: Some("arn:aws:ecs:eu-west-1:123456789012:container-instance/prod/abc123".into()) };
        let at = WallTime::from_secs(1_800_000_000);
        let m = serde_json::to_value(Message::new(&Event::Updated { from: "1.0.0".into(), version: "1.1.0".into() }, &origin, at)).expect("json");
        assert_eq!(m["event"], "updated");
        assert_eq!(m["cluster"], "prod");
        assert_eq!(m["instance"], origin.instance.clone().expect("set"));
        assert_eq!(m["version"], "1.1.0");
        assert_eq!(m["from"], "1.0.0");
        assert_eq!(m["at"], "2027-01-15T08:00:00Z");
        assert!(m["reason"].is_null());
        let text = m["text"].as_str().expect("text");
        assert!(text.contains("abc123") && text.contains("prod") && text.contains("1.1.0"), "{text}");
        let halted = Event::Halted { version: "1.1.0".into(), failed_on: vec!["arn:aws:ecs:r:1:container-instance/prod/bad1".into()] };
        let m = serde_json::to_value(Message::new(&halted, &Origin::default(), at)).expect("json");
        assert_eq!((m["event"].as_str(), m["reason"].as_str()), (Some("halted"), Some("failed on bad1")));
        assert!(m.get("from").is_none());
    }

    #[test]
    fn every_event_has_its_own_kind() {
        let events = [
            Event::DrainStarted { version: "v".into() },
            Event::Updated { from: "u".into(), version: "v".into() },
            Event::Failed { version: "v".into(), reason: "r".into() },
            Event::RolledBack { version: "v".into(), reason: "r".into() },
            Event::Halted { version: "v".into(), failed_on: vec![] },
            Event::Held { version: "v".into(), reason: "r".into() },
            Event::OverWindow { version: "v".into(), closed: WallTime(0) },
        ];
        let kinds: std::collections::BTreeSet<&str> = events.iter().map(Event::kind).collect();
        assert_eq!(kinds.len(), events.len());
        assert!(events.iter().all(|e| e.version() == "v"));
    }

    /// A socket bound and never listening: connections to its port are refused, and no test
    /// running beside this one can be given the port while it is held.
    fn closed_socket() -> tokio::net::TcpSocket {
        let s = tokio::net::TcpSocket::new_v4().expect("socket");
        s.bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        s
    }

    fn fast(queue: usize) -> Delivery {
        Delivery { timeout: Duration::from_millis(200), retries: 0, backoff: Backoff::new(Duration::from_millis(10), Duration::from_millis(10)), queue }
    }

    #[tokio::test]
    async fn a_full_queue_drops_the_newest_and_counts_it() {
        // A listener that accepts nothing: the first message's attempt hangs until its timeout.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = WebhookUrl::parse(&format!("http://127.0.0.1:{}/{SECRET}", listener.local_addr().expect("addr").port())).expect("url");
        let n = Notifier::start_with(url, Delivery { timeout: Duration::from_secs(60), ..fast(2) }, Origin::default());
        for i in 0..10 {
            n.notify(Event::DrainStarted { version: format!("1.{i}.0") }, WallTime(0));
        }
        // At most one taken by the worker, two waiting: the rest dropped, counted.
        assert!(n.dropped() >= 7, "dropped {}", n.dropped());
        assert!(n.queued() <= 2);
        assert_eq!(n.close(Duration::from_millis(50)).await, Flush::Abandoned);
    }

    #[test]
    fn a_lasting_condition_is_said_once_until_something_else_is_said() {
        let halted = |v: &str| Event::Halted { version: v.into(), failed_on: vec!["a".into()] };
        let held = || Event::Held { version: "1.1.0".into(), reason: "ECS agent not connected".into() };
        let drain = || Event::DrainStarted { version: "1.1.0".into() };
        let sequence = [halted("1.1.0"), halted("1.1.0"), halted("1.2.0"), held(), held(), drain(), drain(), held(), halted("1.2.0")];
        let mut last = None;
        let mut said = vec![];
        for e in sequence {
            if !is_repeat(last.as_ref(), &e) {
                said.push(format!("{} {}", e.kind(), e.version()));
                last = Some((e.kind(), e.version().to_string()));
            }
        }
        assert_eq!(said, [
            "halted 1.1.0", "halted 1.2.0", "held 1.1.0", "drain-started 1.1.0", "drain-started 1.1.0", "held 1.1.0", "halted 1.2.0",
        ]);
    }

    #[tokio::test]
    async fn an_https_url_goes_through_tls_and_a_failed_handshake_is_retryable() {
        // A plain-HTTP server behind an https:// URL: the handshake must fail, not fall back.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            for mut s in listener.incoming().flatten() {
                let _ = std::io::Write::write_all(&mut s, b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
            }
        });
        let url = WebhookUrl::parse(&format!("https://127.0.0.1:{port}/{SECRET}")).expect("url");
        let transport = match Transport::for_url(&url) {
            Ok(t) => t,
            // No CA bundle on this machine: the worker logs it and sends nothing; nothing panics.
            Err(e) => return assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}"),
        };
        assert!(matches!(transport, Transport::Tls(_)));
        let e = transport.post(&url, Bytes::from_static(b"{}"), Duration::from_secs(5)).await.expect_err("not TLS");
        assert!(matches!(e, DeliveryError::Transport(_)) && e.is_retryable(), "{e}");
        assert!(!e.to_string().contains("XXXXsecret"), "{e}");
    }

    #[tokio::test]
    async fn a_dead_endpoint_is_given_up_on_and_the_close_is_prompt() {
        let closed = closed_socket();
        let url = WebhookUrl::parse(&format!("http://127.0.0.1:{}/{SECRET}", closed.local_addr().expect("addr").port())).expect("url");
        let n = Notifier::start_with(url, Delivery { retries: 2, ..fast(QUEUE_LEN) }, Origin::default());
        n.notify(Event::DrainStarted { version: "1.1.0".into() }, WallTime(0));
        // Refused connects, two retries 10 ms apart: done well within the bound.
        assert_eq!(n.close(Duration::from_secs(30)).await, Flush::Done);
    }
}
