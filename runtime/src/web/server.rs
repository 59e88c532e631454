//! The HTTP side of the web view: one thread accepts, one thread per connection (at most
//! [`MAX_CONNECTIONS`]), every response `Connection: close`. Streams (`/stream.mjpg`,
//! `/api/events`) write with a timeout, so a client that stops reading is dropped rather than
//! waited for.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{EVENT_BACKLOG, Hub};

/// Connections served at once; more are answered 503.
pub const MAX_CONNECTIONS: usize = 32;
/// A request head larger than this is refused (431).
const MAX_HEAD: usize = 8 * 1024;
/// How long one read of a request may wait, and how long the whole request head may take (a
/// client trickling bytes must not hold one of the few connections).
const READ_TIMEOUT: Duration = Duration::from_secs(5);
const HEAD_DEADLINE: Duration = Duration::from_secs(10);
/// How long one write may block before the client is dropped as too slow.
const WRITE_TIMEOUT: Duration = Duration::from_secs(3);
/// An idle event stream gets a comment this often, so a vanished client is noticed.
const KEEPALIVE: Duration = Duration::from_secs(15);
const BOUNDARY: &str = "kestrelframe";
const PAGE: &str = include_str!("page.html");

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("--http {addr}: {source} (another program on that port? try another, e.g. --http 127.0.0.1:8081)")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// The running server; dropping it stops accepting and ends every stream.
pub struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    hub: Arc<Hub>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("addr", &self.addr).finish()
    }
}

struct Shared {
    hub: Arc<Hub>,
    token: Option<String>,
    dropped: AtomicU64,
}

impl Shared {
    /// A stream that ended because its client fell behind (a write timed out, or the event
    /// backlog passed it) is counted; one whose client went away (reset, closed pipe) is not.
    fn count_if_dropped(&self, result: std::io::Result<()>) -> std::io::Result<()> {
        if let Err(e) = &result
            && matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut | std::io::ErrorKind::Other
            )
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        result
    }
}

impl Server {
    pub fn start(addr: &str, token: Option<String>, hub: Arc<Hub>) -> Result<Server, WebError> {
        let bind_err = |source| WebError::Bind {
            addr: addr.to_string(),
            source,
        };
        let listener = TcpListener::bind(addr).map_err(bind_err)?;
        let local = listener.local_addr().map_err(bind_err)?;
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            hub: Arc::clone(&hub),
            token,
            dropped: AtomicU64::new(0),
        });
        {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || accept(listener, shared, stop));
        }
        Ok(Server { addr: local, stop, hub })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.hub.close();
        // Wakes the accept loop so it sees `stop`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

fn accept(listener: TcpListener, shared: Arc<Shared>, stop: Arc<AtomicBool>) {
    for stream in listener.incoming() {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let Ok(mut stream) = stream else { continue };
        let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
        let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
        let clients = &shared.hub.clients;
        if clients.fetch_add(1, Ordering::Relaxed) >= MAX_CONNECTIONS {
            clients.fetch_sub(1, Ordering::Relaxed);
            let _ = respond(&mut stream, 503, "text/plain", &[], b"too many clients\n");
            continue;
        }
        let shared = Arc::clone(&shared);
        std::thread::spawn(move || {
            let _ = handle(&mut stream, &shared);
            shared.hub.clients.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// A parsed request: what the routes need.
#[derive(Debug, PartialEq)]
pub(crate) struct Request {
    pub method: String,
    pub path: String,
    pub query_token: Option<String>,
    pub bearer: Option<String>,
}

/// Parses a complete request head, or says why not (the status to answer).
pub(crate) fn parse_head(head: &[u8]) -> Result<Option<Request>, u16> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(431),
        Err(_) => return Err(400),
    }
    let target = req.path.unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let query_token = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
        .map(percent_decode);
    let bearer = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("authorization"))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string());
    Ok(Some(Request {
        method: req.method.unwrap_or("").to_string(),
        path: path.to_string(),
        query_token,
        bearer,
    }))
}

fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%' && i + 2 < bytes.len())
            .then(|| Some(hex(bytes[i + 1])? * 16 + hex(bytes[i + 2])?))
            .flatten();
        match (escaped, bytes[i]) {
            (Some(v), _) => {
                out.push(v as u8);
                i += 3;
                continue;
            }
            (None, b'+') => out.push(b' '),
            (None, b) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Compares in time that does not depend on where the strings differ.
fn same_token(given: &str, wanted: &str) -> bool {
    let (a, b) = (given.as_bytes(), wanted.as_bytes());
    let mut diff = a.len() ^ b.len();
    for (i, w) in b.iter().enumerate() {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ w);
    }
    diff == 0
}

pub(crate) fn authorised(req: &Request, token: Option<&str>) -> bool {
    let Some(wanted) = token else { return true };
    [&req.bearer, &req.query_token]
        .into_iter()
        .flatten()
        .any(|given| same_token(given, wanted))
}

fn read_head(stream: &mut TcpStream) -> Result<Request, u16> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let start = Instant::now();
    loop {
        if start.elapsed() > HEAD_DEADLINE {
            return Err(408);
        }
        let n = stream.read(&mut chunk).map_err(|_| 408u16)?;
        if n == 0 {
            return Err(400);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(req) = parse_head(&buf)? {
            return Ok(req);
        }
        if buf.len() > MAX_HEAD {
            return Err(431);
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    }
}

fn head(status: u16, content_type: &str, extra: &[(&str, &str)], length: Option<usize>) -> String {
    let mut h = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nCache-Control: no-store\r\nConnection: close\r\n",
        reason(status)
    );
    if let Some(n) = length {
        h.push_str(&format!("Content-Length: {n}\r\n"));
    }
    for (k, v) in extra {
        h.push_str(&format!("{k}: {v}\r\n"));
    }
    h.push_str("\r\n");
    h
}

fn respond(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    extra: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<()> {
    stream.write_all(head(status, content_type, extra, Some(body.len())).as_bytes())?;
    stream.write_all(body)?;
    stream.flush()
}

fn handle(stream: &mut TcpStream, shared: &Shared) -> std::io::Result<()> {
    let req = match read_head(stream) {
        Ok(r) => r,
        Err(status) => {
            return respond(
                stream,
                status,
                "text/plain",
                &[],
                format!("{}\n", reason(status)).as_bytes(),
            );
        }
    };
    if !authorised(&req, shared.token.as_deref()) {
        return respond(
            stream,
            401,
            "text/plain",
            &[("WWW-Authenticate", "Bearer realm=\"kestrel\"")],
            b"unauthorized\n",
        );
    }
    if req.method != "GET" && req.method != "HEAD" {
        return respond(stream, 405, "text/plain", &[("Allow", "GET, HEAD")], b"only GET\n");
    }
    let hub = &shared.hub;
    let head_only = req.method == "HEAD";
    let body = |stream: &mut TcpStream, content_type: &str, bytes: &[u8]| {
        if head_only {
            stream.write_all(head(200, content_type, &[], Some(bytes.len())).as_bytes())
        } else {
            respond(stream, 200, content_type, &[], bytes)
        }
    };
    match req.path.as_str() {
        "/" | "/index.html" => body(stream, "text/html; charset=utf-8", PAGE.as_bytes()),
        "/api/latest" => match hub.latest() {
            Some(json) => body(stream, "application/json", json.as_bytes()),
            None => respond(
                stream,
                503,
                "application/json",
                &[("Retry-After", "1")],
                b"{\"error\":\"no frame classified yet\"}",
            ),
        },
        "/api/status" => body(
            stream,
            "application/json",
            serde_json::to_string(&hub.status()).unwrap_or_default().as_bytes(),
        ),
        "/metrics" => {
            // Copied under the lock, rendered outside it: the frame loop waits on that lock.
            let (metrics, totals, fps) = {
                let s = hub.lock();
                (s.metrics.clone(), s.totals, super::fps(&s.recent))
            };
            let text = super::metrics::render(
                &metrics,
                &totals,
                fps,
                hub.clients.load(Ordering::Relaxed),
                shared.dropped.load(Ordering::Relaxed),
            );
            body(stream, "text/plain; version=0.0.4", text.as_bytes())
        }
        "/frame.jpg" => {
            let _watch = hub.watch();
            // The first request after nobody watched has no frame yet: wait for the next one.
            let seq = hub.lock().seq;
            drop(hub.wait_after(seq, Duration::from_secs(5)));
            match hub.jpeg() {
                Some((_, jpeg)) => body(stream, "image/jpeg", &jpeg),
                None => respond(stream, 503, "text/plain", &[("Retry-After", "1")], b"no frame yet\n"),
            }
        }
        "/stream.mjpg" if !head_only => shared.count_if_dropped(mjpeg(stream, hub)),
        "/api/events" if !head_only => shared.count_if_dropped(events(stream, hub)),
        _ => respond(
            stream,
            404,
            "text/plain",
            &[],
            b"not found: try /, /stream.mjpg, /api/latest, /api/events, /metrics\n",
        ),
    }
}

/// The video: the newest frame each time one arrives; a slow client simply sees fewer.
fn mjpeg(stream: &mut TcpStream, hub: &Arc<Hub>) -> std::io::Result<()> {
    let _watch = hub.watch();
    stream.write_all(
        head(
            200,
            &format!("multipart/x-mixed-replace; boundary={BOUNDARY}"),
            &[],
            None,
        )
        .as_bytes(),
    )?;
    let mut last = 0;
    loop {
        let (seq, closed) = {
            let s = hub.wait_after(last, Duration::from_secs(1));
            (s.seq, s.closed)
        };
        if closed {
            return Ok(());
        }
        if seq <= last {
            continue;
        }
        let Some((frame_seq, jpeg)) = hub.jpeg() else {
            // Pixels are kept from the first frame after a client arrives.
            last = seq;
            continue;
        };
        last = frame_seq.max(last);
        stream.write_all(
            format!(
                "--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
                jpeg.len()
            )
            .as_bytes(),
        )?;
        stream.write_all(&jpeg)?;
        stream.write_all(b"\r\n")?;
        stream.flush()?;
    }
}

/// Server-Sent Events, one per result, in order. A client more than [`EVENT_BACKLOG`] results
/// behind cannot be caught up and is dropped.
fn events(stream: &mut TcpStream, hub: &Hub) -> std::io::Result<()> {
    stream.write_all(head(200, "text/event-stream", &[], None).as_bytes())?;
    stream.write_all(b"retry: 1000\n\n")?;
    stream.flush()?;
    let mut last = hub.lock().seq;
    let mut last_write = Instant::now();
    loop {
        let (batch, closed) = {
            let s = hub.wait_after(last, Duration::from_secs(1));
            if s.events.front().is_some_and(|(first, _)| *first > last + 1) && last > 0 {
                return Err(std::io::Error::other(format!(
                    "client more than {EVENT_BACKLOG} results behind"
                )));
            }
            let batch: Vec<(u64, Arc<str>)> = s
                .events
                .iter()
                .filter(|(seq, _)| *seq > last)
                .map(|(seq, j)| (*seq, Arc::clone(j)))
                .collect();
            (batch, s.closed)
        };
        for (seq, json) in &batch {
            stream.write_all(format!("id: {seq}\ndata: {json}\n\n").as_bytes())?;
            last = *seq;
        }
        if !batch.is_empty() {
            stream.flush()?;
            last_write = Instant::now();
        } else if last_write.elapsed() >= KEEPALIVE {
            stream.write_all(b": keepalive\n\n")?;
            stream.flush()?;
            last_write = Instant::now();
        }
        if closed {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_read_from_the_header_or_the_query() {
        let req = parse_head(b"GET /api/latest?x=1&token=s%3Dcret HTTP/1.1\r\nHost: a\r\n\r\n")
            .expect("valid")
            .expect("complete");
        assert_eq!(req.path, "/api/latest");
        assert_eq!(req.query_token.as_deref(), Some("s=cret"));
        assert!(authorised(&req, Some("s=cret")));
        assert!(!authorised(&req, Some("s=cre")));
        assert!(!authorised(&req, Some("s=crett")));
        let req = parse_head(b"GET / HTTP/1.1\r\nAuthorization: Bearer abc\r\n\r\n")
            .expect("valid")
            .expect("complete");
        assert!(authorised(&req, Some("abc")));
        assert!(!authorised(&req, Some("abd")));
        let req = parse_head(b"GET / HTTP/1.1\r\n\r\n").expect("valid").expect("complete");
        assert!(!authorised(&req, Some("abc")));
        assert!(authorised(&req, None));
    }

    #[test]
    fn partial_and_bad_heads() {
        assert_eq!(parse_head(b"GET / HTTP/1.1\r\nHost"), Ok(None));
        assert_eq!(parse_head(b"\x00\x01garbage\r\n\r\n"), Err(400));
    }
}
