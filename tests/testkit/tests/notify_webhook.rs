//! Webhook notifications against a local HTTP server: messages arrive in order with their
//! fields, failures are retried within bounds and then logged once without the URL, and an
//! endpoint that is down or never answers does not hold up the agent.
//!
//! The servers run on their own thread and runtime, as does the notifier's worker, so an agent
//! round can run on paused (virtual) time while real sockets are served. Waiting for a message
//! to arrive is bounded in real time; no assertion depends on how fast anything runs.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent::backoff::Backoff;
use agent::clock::WallTime;
use agent::cycle::Outcome;
use agent::notify::{Delivery, Event, Flush, Notifier, Origin, WebhookUrl};
use agent::shutdown::Shutdown;
use fake_bottlerocket::Faults;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use serde_json::Value;
use testkit::fake_ecs::FakeEcs;
use testkit::node::Node;

mod common;
use common::*;

/// The secret part of every webhook URL here; it must never show in a log line.
const SECRET_PATH: &str = "/services/T0FLEET/B0HOOK/s3cr3t-hook-token";
const SECRET: &str = "s3cr3t-hook-token";

/// How long a test waits for messages to arrive (real time; a bound, not a measurement).
const ARRIVAL: Duration = Duration::from_secs(30);

/// What a test server answers.
#[derive(Clone)]
enum Reply {
    /// These statuses for the first requests, in order, then 200.
    Script(Vec<u16>),
    /// Reads the request, then never answers.
    Never,
}

/// One request as the server saw it.
#[derive(Clone, Debug)]
struct Received {
    path: String,
    content_type: String,
    body: Value,
}

/// A local webhook endpoint that records what it is sent.
struct Hook {
    port: u16,
    received: Arc<Mutex<Vec<Received>>>,
    answered: Arc<AtomicUsize>,
}

impl Hook {
    fn start(reply: Reply) -> Hook {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let answered: Arc<AtomicUsize> = Arc::default();
        let (r, a) = (received.clone(), answered.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(serve(listener, reply, r, a));
        });
        Hook { port, received, answered }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}{SECRET_PATH}", self.port)
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }

    /// Waits (real time, bounded) until at least `n` requests came in; returns them all.
    fn wait_for(&self, n: usize) -> Vec<Received> {
        let start = Instant::now();
        while self.received().len() < n && start.elapsed() < ARRIVAL {
            std::thread::sleep(Duration::from_millis(10));
        }
        let got = self.received();
        assert!(got.len() >= n, "expected {n} requests within {ARRIVAL:?}, got {}: {got:?}", got.len());
        got
    }
}

async fn serve(listener: std::net::TcpListener, reply: Reply, received: Arc<Mutex<Vec<Received>>>, answered: Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let (reply, received, answered) = (reply.clone(), received.clone(), answered.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| answer(req, reply.clone(), received.clone(), answered.clone()));
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(stream), service).await;
        });
    }
}

async fn answer(req: Request<Incoming>, reply: Reply, received: Arc<Mutex<Vec<Received>>>, answered: Arc<AtomicUsize>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let content_type = req.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let bytes = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let index = {
        let mut r = received.lock().expect("lock");
        r.push(Received { path, content_type, body });
        r.len() - 1
    };
    let status = match &reply {
        Reply::Never => std::future::pending().await,
        Reply::Script(s) => s.get(index).copied().unwrap_or(200),
    };
    answered.fetch_add(1, Ordering::SeqCst);
    Ok(Response::builder().status(status).body(Full::new(Bytes::from_static(b"ok"))).expect("response"))
}

/// A port that refuses connections: bound, never listening, and held for the test's life so that
/// a server started by a test running beside it cannot be given the same port.
struct ClosedPort(tokio::net::TcpSocket);

impl ClosedPort {
    fn bind() -> ClosedPort {
        let s = tokio::net::TcpSocket::new_v4().expect("socket");
        s.bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        ClosedPort(s)
    }
    fn port(&self) -> u16 {
        self.0.local_addr().expect("addr").port()
    }
}

// ------------------------------------------------------------------ captured logs

/// Every log line of this test (and of the notifier workers it starts), at debug level.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

impl Logs {
    fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let subscriber = tracing_subscriber::fmt().with_writer(logs.clone()).with_ansi(false).with_max_level(tracing::Level::DEBUG).finish();
        (logs.clone(), tracing::subscriber::set_default(subscriber))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("lock")).into_owned()
    }

    fn lines_with(&self, needle: &str) -> Vec<String> {
        self.text().lines().filter(|l| l.contains(needle)).map(str::to_string).collect()
    }

    fn assert_no_secret(&self) {
        let text = self.text();
        assert!(!text.is_empty(), "captured nothing: the check would be empty");
        assert!(!text.contains(SECRET), "the webhook URL's secret appears in the log:\n{text}");
    }
}

// ------------------------------------------------------------------ the notifier on its own

const INSTANCE: &str = "arn:aws:ecs:us-east-1:123456789012:container-instance/prod/0abc";

fn origin() -> Origin {
    Origin { cluster: Some("prod".into()), instance: Some(INSTANCE.into()) }
}

/// Short back-off so a retried message takes milliseconds.
fn quick(retries: u32) -> Delivery {
    Delivery { timeout: Duration::from_secs(5), retries, backoff: Backoff::new(Duration::from_millis(10), Duration::from_millis(40)), queue: 64 }
}

fn webhook(url: &str) -> WebhookUrl {
    WebhookUrl::parse(url).expect("a valid webhook URL")
}

fn events() -> Vec<Event> {
    vec![
        Event::DrainStarted { version: "1.1.0".into() },
        Event::Failed { version: "1.1.0".into(), reason: "health-check-failed".into() },
        Event::Held { version: "1.1.0".into(), reason: "container instance IMPAIRED".into() },
        Event::RolledBack { version: "1.1.0".into(), reason: "did not boot".into() },
        Event::Halted { version: "1.1.0".into(), failed_on: vec![INSTANCE.into()] },
        Event::OverWindow { version: "1.2.0".into(), closed: WallTime::from_secs(1_800_000_000) },
        Event::Updated { from: "1.1.0".into(), version: "1.2.0".into() },
    ]
}

#[tokio::test]
async fn messages_arrive_in_order_with_their_fields() {
    let hook = Hook::start(Reply::Script(vec![]));
    let n = Notifier::start_with(webhook(&hook.url()), quick(0), origin());
    let sent = events();
    for (i, e) in sent.iter().enumerate() {
        n.notify(e.clone(), WallTime::from_secs(1_800_000_000 + i as i64));
    }
    assert_eq!(n.close(Duration::from_secs(30)).await, Flush::Done);
    let got = hook.received();
    assert_eq!(got.len(), sent.len(), "{got:?}");
    for (i, (r, e)) in got.iter().zip(&sent).enumerate() {
        assert_eq!(r.path, SECRET_PATH);
        assert_eq!(r.content_type, "application/json");
        let b = &r.body;
        assert_eq!(b["event"], e.kind(), "message {i} out of order: {b}");
        assert_eq!(b["version"], e.version());
        assert_eq!(b["cluster"], "prod");
        assert_eq!(b["instance"], INSTANCE);
        assert_eq!(b["at"], WallTime::from_secs(1_800_000_000 + i as i64).to_rfc3339());
        let text = b["text"].as_str().unwrap_or_default();
        assert!(text.contains("0abc") && text.contains(e.version()), "Slack text names host and version: {b}");
    }
    assert_eq!(got[1].body["reason"], "health-check-failed");
    assert_eq!(got[6].body["from"], "1.1.0");
}

#[tokio::test]
async fn a_server_error_is_retried_and_the_next_messages_wait_their_turn() {
    let hook = Hook::start(Reply::Script(vec![500, 503, 200, 429]));
    let n = Notifier::start_with(webhook(&hook.url()), quick(3), origin());
    for v in ["1", "2", "3"] {
        n.notify(Event::DrainStarted { version: v.into() }, WallTime(0));
    }
    assert_eq!(n.close(Duration::from_secs(30)).await, Flush::Done);
    let versions: Vec<String> = hook.received().iter().map(|r| r.body["version"].as_str().unwrap_or_default().to_string()).collect();
    // 500, 503, then 200 for the first; 429 then 200 for the second; 200 for the third.
    assert_eq!(versions, ["1", "1", "1", "2", "2", "3"]);
}

#[tokio::test]
async fn a_refusal_is_not_retried_and_is_logged_once_without_the_url() {
    let (logs, _guard) = Logs::capture();
    let hook = Hook::start(Reply::Script(vec![404]));
    let n = Notifier::start_with(webhook(&hook.url()), quick(3), origin());
    n.notify(Event::Held { version: "1.1.0".into(), reason: "ECS agent not connected".into() }, WallTime(0));
    n.notify(Event::Updated { from: "1.0.0".into(), version: "1.1.0".into() }, WallTime(0));
    assert_eq!(n.close(Duration::from_secs(30)).await, Flush::Done);
    let events: Vec<Value> = hook.received().iter().map(|r| r.body["event"].clone()).collect();
    assert_eq!(events, ["held", "updated"], "a 404 is not tried again");
    let warned = logs.lines_with("webhook message not delivered");
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(warned[0].contains("WARN") && warned[0].contains("held") && warned[0].contains("404") && warned[0].contains("127.0.0.1"), "{warned:?}");
    logs.assert_no_secret();
}

#[tokio::test]
async fn a_down_endpoint_is_given_up_on_after_bounded_retries_with_one_line() {
    let (logs, _guard) = Logs::capture();
    let closed = ClosedPort::bind();
    let url = format!("http://127.0.0.1:{}{SECRET_PATH}", closed.port());
    let n = Notifier::start_with(webhook(&url), quick(2), origin());
    n.notify(Event::DrainStarted { version: "1.1.0".into() }, WallTime(0));
    assert_eq!(n.close(Duration::from_secs(30)).await, Flush::Done, "three refused connects and two short waits end well within the bound");
    let warned = logs.lines_with("webhook message not delivered");
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(warned[0].contains("drain-started") && warned[0].contains("attempts=3"), "{warned:?}");
    assert_eq!(logs.lines_with("webhook attempt failed; retrying").len(), 2);
    logs.assert_no_secret();
}

#[tokio::test]
async fn closing_with_a_server_that_never_answers_gives_up_at_its_bound() {
    let hook = Hook::start(Reply::Never);
    let n = Notifier::start_with(webhook(&hook.url()), Delivery { timeout: Duration::from_secs(300), ..quick(0) }, origin());
    n.notify(Event::DrainStarted { version: "1.1.0".into() }, WallTime(0));
    n.notify(Event::DrainStarted { version: "1.2.0".into() }, WallTime(0));
    hook.wait_for(1);
    assert_eq!(n.close(Duration::from_millis(200)).await, Flush::Abandoned);
    assert_eq!(hook.answered.load(Ordering::SeqCst), 0);
}

// ------------------------------------------------------------------ the agent

fn with_webhook(url: &str, timeout: &str) -> String {
    format!("[notify]\nwebhook = \"{url}\"\ntimeout = \"{timeout}\"\n")
}

/// Runs one clustered update (both agent processes, across the reboot) on paused time; returns
/// the outcomes and how much virtual time passed.
async fn update_once(n: &Node, ecs: &FakeEcs) -> (Vec<Outcome>, Duration) {
    ecs.add_tasks(&n.arn, Some("ecs-svc/123"), 3);
    ecs.set_drain_time(Duration::from_secs(20), Duration::from_secs(40));
    let start = tokio::time::Instant::now();
    let outcomes = n.run_once_through_reboots(REBOOT, 2).await;
    (outcomes, start.elapsed())
}

#[tokio::test(start_paused = true)]
async fn a_dead_or_silent_endpoint_costs_a_round_no_time() {
    let (logs, _guard) = Logs::capture();
    // The same update without a webhook: the reference.
    let ecs = FakeEcs::new("c", 1);
    let (expected, reference) = update_once(&node("a", Some(&ecs), config("")), &ecs).await;
    assert_eq!(expected.last(), Some(&Outcome::Finished { result: "updated".into(), version: "1.1.0".into() }));

    let silent = Hook::start(Reply::Never);
    let closed = ClosedPort::bind();
    let down = format!("http://127.0.0.1:{}{SECRET_PATH}", closed.port());
    for url in [silent.url(), down] {
        let ecs = FakeEcs::new("c", 1);
        // Each attempt may wait a whole minute: a round that awaited delivery would take minutes.
        let n = node("a", Some(&ecs), config(&with_webhook(&url, "1m")));
        let (outcomes, took) = update_once(&n, &ecs).await;
        assert_eq!(outcomes, expected, "{url}");
        // Virtual time is exact: the webhook added nothing to the round, not even a tick.
        assert_eq!(took, reference, "{url}");
        assert_clean(&ecs, &n);
    }
    // The silent server did get the messages, and answered nothing: the round finished while
    // delivery was still waiting. (The two processes' messages arrive in either order.)
    let got = silent.wait_for(2);
    assert!(got.iter().any(|r| r.body["event"] == "drain-started"), "{got:?}");
    assert_eq!(silent.answered.load(Ordering::SeqCst), 0);
    logs.assert_no_secret();
}

#[tokio::test(start_paused = true)]
async fn an_update_says_drain_started_then_updated() {
    let (logs, _guard) = Logs::capture();
    let hook = Hook::start(Reply::Script(vec![]));
    let ecs = FakeEcs::new("c", 1);
    let n = node("a", Some(&ecs), config(&with_webhook(&hook.url(), "10s")));
    let (outcomes, _) = update_once(&n, &ecs).await;
    assert_eq!(outcomes.last(), Some(&Outcome::Finished { result: "updated".into(), version: "1.1.0".into() }));
    let mut got: Vec<Value> = hook.wait_for(2).into_iter().map(|r| r.body).collect();
    // Two agent processes (before and after the reboot) each send their own: order by time.
    got.sort_by_key(|b| b["at"].as_str().unwrap_or_default().to_string());
    let kinds: Vec<&str> = got.iter().map(|b| b["event"].as_str().unwrap_or_default()).collect();
    assert_eq!(kinds, ["drain-started", "updated"]);
    for b in &got {
        assert_eq!(b["cluster"], "c");
        assert_eq!(b["instance"], n.arn.as_str());
        assert_eq!(b["version"], "1.1.0");
    }
    assert_eq!(got[1]["from"], "1.0.0");
    assert!(got[0]["at"].as_str() < got[1]["at"].as_str());
    logs.assert_no_secret();
}

#[tokio::test(start_paused = true)]
async fn a_bad_release_says_rolled_back_and_failed_and_the_next_host_says_halted() {
    let hook = Hook::start(Reply::Script(vec![]));
    let ecs = FakeEcs::new("c", 1);
    let cfg = config(&with_webhook(&hook.url(), "10s"));
    let a = Node::new("a", host(Faults { rollback_on_boot: true, ..Faults::default() }), Some(&ecs), clock(), cfg.clone(), 3);
    let outcomes = a.run_once_through_reboots(REBOOT, 2).await;
    assert_eq!(outcomes[1], Outcome::Finished { result: "rolled-back".into(), version: "1.0.0".into() });
    let by_a = hook.wait_for(3);
    let b = node("b", Some(&ecs), cfg);
    let outcome = b.agent(Shutdown::never()).run(true).await;
    assert!(matches!(outcome, Outcome::Halted { .. }), "{outcome:?}");
    let mut all = hook.wait_for(by_a.len() + 1);
    // Each agent process sends in order; across processes, order by time (a stable sort).
    all.sort_by_key(|r| r.body["at"].as_str().unwrap_or_default().to_string());
    let of = |arn: &str| -> Vec<String> {
        all.iter().filter(|r| r.body["instance"] == arn).map(|r| format!("{} {}", r.body["event"].as_str().unwrap_or_default(), r.body["reason"])).collect()
    };
    let a_said = of(&a.arn);
    assert_eq!(a_said.len(), 3, "{a_said:?}");
    assert!(a_said[0].starts_with("drain-started"), "{a_said:?}");
    assert!(a_said[1].starts_with("rolled-back") && a_said[1].contains("did not boot"), "{a_said:?}");
    assert!(a_said[2].starts_with("failed") && a_said[2].contains("rolled-back"), "{a_said:?}");
    let b_said = of(&b.arn);
    assert_eq!(b_said.len(), 1, "{b_said:?}");
    assert!(b_said[0].starts_with("halted") && b_said[0].contains(agent::status::short_id(&a.arn)), "{b_said:?}");
}
