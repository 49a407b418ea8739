//! The fake host served over a Unix socket with hyper: HTTP/1.1 with keep-alive, like apiserver.
//!
//! Every request goes through [`FakeHost::request`]. While the host is down after a reboot
//! request, new connections are closed at once and requests on open ones get no answer (the
//! connection closes), as when nothing listens. The answer that takes the host down carries
//! `Connection: close`, so the connection ends as soon as that answer is written; that end is when
//! a reboot notice goes out, so a notice always follows a 204 that really left the server.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONNECTION, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::host::FakeHost;

/// The largest request body read (control endpoints take small JSON).
const BODY_LIMIT: usize = 1024 * 1024;

/// How the socket server behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServeOptions {
    /// Close a keep-alive connection that sends no new request for this long (apiserver: ~5 s).
    pub idle_timeout: Option<Duration>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions { idle_timeout: Some(Duration::from_secs(5)) }
    }
}

/// Why a connection was closed without an answer.
#[derive(Debug, thiserror::Error)]
enum ServeError {
    /// Nothing listens during a reboot.
    #[error("host is down")]
    HostDown,
    /// The request body could not be read.
    #[error("reading the request body: {0}")]
    Body(String),
    /// The answer could not be built (a status code out of range).
    #[error("building the response: {0}")]
    Response(#[from] hyper::http::Error),
}

/// A host being served on a socket. Dropping it stops serving and removes the socket file.
#[derive(Debug)]
pub struct ServedHost {
    socket: PathBuf,
    host: FakeHost,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    reboot_notices: Option<mpsc::UnboundedReceiver<()>>,
}

/// Serve `host` on a new Unix socket at `socket`, with the default [`ServeOptions`].
/// Call within a tokio runtime (current-thread or multi-threaded).
pub fn serve(host: FakeHost, socket: &Path) -> io::Result<ServedHost> {
    serve_with(host, socket, ServeOptions::default())
}

/// Serve `host` on a new Unix socket at `socket`. Call within a tokio runtime.
pub fn serve_with(host: FakeHost, socket: &Path, options: ServeOptions) -> io::Result<ServedHost> {
    let runtime = tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
    let listener = {
        let _guard = runtime.enter();
        UnixListener::bind(socket)?
    };
    let (stop, stopped) = watch::channel(false);
    let (notify, reboot_notices) = mpsc::unbounded_channel();
    let accept = AcceptLoop { listener, host: host.clone(), options, stopped, notify };
    let task = runtime.spawn(accept.run());
    tracing::info!(socket = %socket.display(), "fake host listening");
    Ok(ServedHost {
        socket: socket.to_path_buf(),
        host,
        stop,
        task: Some(task),
        reboot_notices: Some(reboot_notices),
    })
}

impl ServedHost {
    /// The socket path clients connect to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The host behind the socket.
    pub fn host(&self) -> &FakeHost {
        &self.host
    }

    /// One `()` per connection that carried an accepted reboot, sent once that connection has
    /// closed (with the host down, right after the 204 was written). Only the first call gets it.
    pub fn take_reboot_notices(&mut self) -> Option<mpsc::UnboundedReceiver<()>> {
        self.reboot_notices.take()
    }

    /// Stop accepting, close every connection, wait for the accept loop, remove the socket.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            if let Err(e) = task.await {
                tracing::warn!(error = %e, "accept loop ended abnormally");
            }
        }
        self.remove_socket();
    }

    fn remove_socket(&self) {
        match std::fs::remove_file(&self.socket) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(socket = %self.socket.display(), error = %e, "could not remove socket"),
        }
    }
}

impl Drop for ServedHost {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            task.abort();
        }
        self.remove_socket();
    }
}

struct AcceptLoop {
    listener: UnixListener,
    host: FakeHost,
    options: ServeOptions,
    stopped: watch::Receiver<bool>,
    notify: mpsc::UnboundedSender<()>,
}

impl AcceptLoop {
    async fn run(mut self) {
        loop {
            tokio::select! {
                // A send of `true` or a dropped sender both mean stop.
                _ = self.stopped.changed() => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => self.admit(stream),
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed; pausing before the next try");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                },
            }
        }
    }

    fn admit(&self, stream: UnixStream) {
        if self.host.is_down() {
            tracing::debug!("connection closed: host is down");
            return;
        }
        let connection = Connection {
            host: self.host.clone(),
            options: self.options,
            stopped: self.stopped.clone(),
            notify: self.notify.clone(),
        };
        tokio::spawn(connection.run(stream));
    }
}

struct Connection {
    host: FakeHost,
    options: ServeOptions,
    stopped: watch::Receiver<bool>,
    notify: mpsc::UnboundedSender<()>,
}

impl Connection {
    async fn run(mut self, stream: UnixStream) {
        let rebooted = Arc::new(AtomicBool::new(false));
        let host = self.host.clone();
        let flag = rebooted.clone();
        let service = service_fn(move |req| answer(host.clone(), flag.clone(), req));
        let mut builder = http1::Builder::new();
        builder.keep_alive(true);
        if let Some(idle) = self.options.idle_timeout {
            builder.timer(TokioTimer::new()).header_read_timeout(idle);
        }
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        tokio::select! {
            result = conn => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            }
            _ = self.stopped.changed() => {}
        }
        if rebooted.load(Ordering::SeqCst) {
            let _ = self.notify.send(());
        }
    }
}

/// Answer one request through the host, or close the connection when the host is down.
async fn answer(
    host: FakeHost,
    rebooted: Arc<AtomicBool>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, ServeError> {
    let method = req.method().as_str().to_string();
    let target = req.uri().path_and_query().map_or_else(|| "/".to_string(), |p| p.as_str().to_string());
    let body = Limited::new(req.into_body(), BODY_LIMIT)
        .collect()
        .await
        .map_err(|e| ServeError::Body(e.to_string()))?
        .to_bytes();
    let reply = host.request(&method, &target, &body).ok_or(ServeError::HostDown)?;
    let path = target.split('?').next().unwrap_or_default();
    if method == "POST" && path == "/actions/reboot" && reply.status == 204 {
        rebooted.store(true, Ordering::SeqCst);
    }
    let mut response = Response::builder().status(reply.status);
    if let Some(content_type) = reply.content_type {
        response = response.header(CONTENT_TYPE, content_type);
    }
    if host.is_down() {
        response = response.header(CONNECTION, "close");
    }
    Ok(response.body(Full::new(Bytes::from(reply.body)))?)
}
