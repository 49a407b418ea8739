//! A raw HTTP/1.1 client over a Unix socket, shared by the socket and binary tests.

// Each test crate uses a different subset.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// A safety net only; nothing here should come near it.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// One client connection.
pub struct Raw {
    stream: BufReader<UnixStream>,
}

/// One parsed response.
#[derive(Debug)]
pub struct RawResponse {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Body (by Content-Length; none without it).
    pub body: String,
}

impl RawResponse {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("JSON body")
    }
}

impl Raw {
    /// Connect, panicking on failure.
    pub async fn connect(socket: &Path) -> Raw {
        Raw::try_connect(socket).await.expect("connect")
    }

    /// Connect.
    pub async fn try_connect(socket: &Path) -> std::io::Result<Raw> {
        Ok(Raw { stream: BufReader::new(UnixStream::connect(socket).await?) })
    }

    /// A request as apiclient sends it: JSON content type, explicit length.
    pub async fn send(&mut self, method: &str, path: &str, body: &str) {
        self.try_send(method, path, body).await.expect("write");
    }

    /// [`Raw::send`], reporting a write error (a closed connection) instead of panicking.
    pub async fn try_send(&mut self, method: &str, path: &str, body: &str) -> std::io::Result<()> {
        let request = format!(
            "{method} {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n\r\n{body}",
            body.len()
        );
        self.stream.get_mut().write_all(request.as_bytes()).await
    }

    /// The next response, or `None` when the server closed the connection instead.
    pub async fn read(&mut self) -> Option<RawResponse> {
        tokio::time::timeout(PATIENCE, self.read_inner()).await.expect("server answers or closes")
    }

    async fn read_inner(&mut self) -> Option<RawResponse> {
        let mut line = String::new();
        if self.stream.read_line(&mut line).await.unwrap_or(0) == 0 {
            return None;
        }
        let mut parts = line.split_whitespace();
        assert_eq!(parts.next(), Some("HTTP/1.1"), "status line: {line:?}");
        let status = parts.next().and_then(|s| s.parse().ok()).expect("status code");
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            self.stream.read_line(&mut line).await.expect("header line");
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').expect("header");
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
        let length = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map_or(0, |(_, v)| v.parse::<usize>().expect("length"));
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body).await.expect("body");
        Some(RawResponse { status, headers, body: String::from_utf8(body).expect("utf-8") })
    }

    /// Send an empty-bodied request and read its answer.
    pub async fn call(&mut self, method: &str, path: &str) -> RawResponse {
        self.send(method, path, "").await;
        self.read().await.expect("an answer")
    }

    /// Whether the server has closed this connection (EOF), waiting for it up to PATIENCE.
    pub async fn closed_by_server(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(tokio::time::timeout(PATIENCE, self.stream.read(&mut byte)).await, Ok(Ok(0)) | Ok(Err(_)))
    }
}

