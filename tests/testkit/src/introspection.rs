//! A stand-in for the ECS agent's introspection endpoint (`GET /v1/metadata`), whose answer a test
//! changes while the agent is polling it, and (when given a source) its task listing
//! (`GET /v1/tasks`), answered from what the test's ECS double says runs on the instance.
//!
//! The server runs on its own thread and runtime, so it serves the same way under a current-thread,
//! a multi-thread or a paused-time test runtime. "Refuse" really closes the listening socket, so the
//! client sees a refused connection exactly as before the ECS agent has started.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::mpsc as async_mpsc;

/// What the fake endpoint does with the next request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Nothing listens: the connection is refused (the ECS agent has not started).
    Refuse,
    /// 200 with `"ContainerInstanceArn": null` (the ECS agent has not registered yet).
    Unregistered {
        /// The `Cluster` field.
        cluster: String,
    },
    /// 200 with a registered container instance.
    Registered {
        /// The `Cluster` field (a name or an ARN).
        cluster: String,
        /// The `ContainerInstanceArn` field.
        arn: String,
    },
    /// 200 with a body that is not the metadata JSON.
    Malformed,
    /// Any status and body.
    Raw {
        /// The HTTP status.
        status: u16,
        /// The body.
        body: String,
    },
}

impl Answer {
    /// A registered instance in `cluster`.
    pub fn registered(cluster: &str, arn: &str) -> Answer {
        Answer::Registered { cluster: cluster.to_owned(), arn: arn.to_owned() }
    }

    /// An ECS agent of `cluster` that has not registered yet.
    pub fn unregistered(cluster: &str) -> Answer {
        Answer::Unregistered { cluster: cluster.to_owned() }
    }

    fn response(&self) -> (u16, String) {
        match self {
            // Only reachable by a connection accepted just before the switch to Refuse.
            Answer::Refuse => (503, String::new()),
            Answer::Unregistered { cluster } => (
                200,
                serde_json::json!({"Cluster": cluster, "ContainerInstanceArn": null, "Version": VERSION}).to_string(),
            ),
            Answer::Registered { cluster, arn } => (
                200,
                serde_json::json!({"Cluster": cluster, "ContainerInstanceArn": arn, "Version": VERSION}).to_string(),
            ),
            Answer::Malformed => (200, r#"{"Cluster": "c1", "ContainerInstanceArn": "#.to_owned()),
            Answer::Raw { status, body } => (*status, body.clone()),
        }
    }
}

const VERSION: &str = "Amazon ECS Agent - v1.99.0 (fake)";

/// Answers `GET /v1/tasks`: the HTTP status and body. Called on a blocking thread per request.
pub type TasksSource = Arc<dyn Fn() -> (u16, String) + Send + Sync>;

type Ack = mpsc::Sender<Result<(), String>>;

/// A running fake endpoint; stops when dropped.
pub struct FakeIntrospection {
    port: u16,
    control: Option<async_mpsc::UnboundedSender<(Answer, Ack)>>,
    served: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl FakeIntrospection {
    /// Start on a free loopback port, answering `initial`; `/v1/tasks` answers 404.
    pub fn start(initial: Answer) -> FakeIntrospection {
        Self::start_with_tasks(initial, None)
    }

    /// Start on a free loopback port, answering `initial`, and `/v1/tasks` from `tasks`.
    pub fn start_with_tasks(initial: Answer, tasks: Option<TasksSource>) -> FakeIntrospection {
        let std_listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        let port = std_listener.local_addr().expect("local addr").port();
        std_listener.set_nonblocking(true).expect("nonblocking listener");
        let (control, commands) = async_mpsc::unbounded_channel();
        let served = Arc::new(AtomicUsize::new(0));
        let counter = served.clone();
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("fake-introspection-{port}"))
            .spawn(move || serve_thread(std_listener, initial, commands, counter, tasks, ready_tx))
            .expect("spawn the fake introspection thread");
        ready_rx.recv().expect("fake introspection server started").expect("fake introspection initial state");
        FakeIntrospection { port, control: Some(control), served, thread: Some(thread) }
    }

    /// The metadata URL, as the agent is configured with it.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/v1/metadata", self.port)
    }

    /// The port it listens on (when it listens).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Change the answer; returns once the listening socket matches it (closed for `Refuse`).
    pub fn set(&self, answer: Answer) {
        let (ack_tx, ack_rx) = mpsc::channel();
        self.control
            .as_ref()
            .expect("control channel open until drop")
            .send((answer, ack_tx))
            .expect("fake introspection server running");
        ack_rx.recv().expect("fake introspection server acknowledged").expect("fake introspection state change");
    }

    /// How many HTTP requests it has answered.
    pub fn requests(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }
}

impl Drop for FakeIntrospection {
    fn drop(&mut self) {
        // Closing the control channel ends the server loop, and with it the runtime and sockets.
        self.control.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve_thread(
    std_listener: std::net::TcpListener,
    initial: Answer,
    commands: async_mpsc::UnboundedReceiver<(Answer, Ack)>,
    served: Arc<AtomicUsize>,
    tasks: Option<TasksSource>,
    ready: Ack,
) {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(format!("runtime: {e}")));
            return;
        }
    };
    rt.block_on(async move {
        let listener = match TcpListener::from_std(std_listener) {
            Ok(l) => l,
            Err(e) => {
                let _ = ready.send(Err(format!("listener: {e}")));
                return;
            }
        };
        let port = match listener.local_addr() {
            Ok(addr) => addr.port(),
            Err(e) => {
                let _ = ready.send(Err(format!("local addr: {e}")));
                return;
            }
        };
        let mut server =
            Server { port, current: Arc::new(Mutex::new(initial.clone())), served, tasks, listener: Some(listener) };
        let _ = ready.send(server.apply(initial));
        server.run(commands).await;
    });
}

struct Server {
    port: u16,
    current: Arc<Mutex<Answer>>,
    served: Arc<AtomicUsize>,
    tasks: Option<TasksSource>,
    listener: Option<TcpListener>,
}

impl Server {
    async fn run(&mut self, mut commands: async_mpsc::UnboundedReceiver<(Answer, Ack)>) {
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some((answer, ack)) => {
                        let _ = ack.send(self.apply(answer));
                    }
                    None => return,
                },
                accepted = accept(self.listener.as_ref()) => {
                    if let Ok((stream, _)) = accepted {
                        tokio::spawn(serve_connection(stream, self.current.clone(), self.served.clone(), self.tasks.clone()));
                    }
                }
            }
        }
    }

    /// Make the socket match `answer`: closed for Refuse, listening on the same port otherwise.
    fn apply(&mut self, answer: Answer) -> Result<(), String> {
        *self.current.lock().map_err(|_| "answer lock poisoned".to_owned())? = answer.clone();
        match (answer, self.listener.is_some()) {
            (Answer::Refuse, true) => self.listener = None,
            (Answer::Refuse, false) | (_, true) => {}
            (_, false) => self.listener = Some(rebind(self.port)?),
        }
        Ok(())
    }
}

async fn accept(listener: Option<&TcpListener>) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

fn rebind(port: u16) -> Result<TcpListener, String> {
    let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
    let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    socket.set_reuseaddr(true).map_err(|e| format!("SO_REUSEADDR: {e}"))?;
    socket.bind(addr).map_err(|e| format!("re-binding {addr}: {e}"))?;
    socket.listen(64).map_err(|e| format!("listen on {addr}: {e}"))
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    current: Arc<Mutex<Answer>>,
    served: Arc<AtomicUsize>,
    tasks: Option<TasksSource>,
) {
    let service = service_fn(move |req: Request<Incoming>| {
        let answer = current.lock().map(|a| a.clone()).unwrap_or(Answer::Malformed);
        served.fetch_add(1, Ordering::SeqCst);
        let tasks = tasks.clone();
        let listing = req.uri().path() == "/v1/tasks";
        async move {
            let (status, body) = match (listing, tasks) {
                (false, _) => answer.response(),
                (true, None) => (404, "404 page not found".to_owned()),
                (true, Some(source)) => {
                    tokio::task::spawn_blocking(move || source()).await.unwrap_or_else(|e| (500, format!("task source failed: {e}")))
                }
            };
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            Response::builder().status(status).header("content-type", "application/json").body(Full::new(Bytes::from(body)))
        }
    });
    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
}
