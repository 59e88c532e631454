//! `kestrel run --mqtt`: each result published as JSON, QoS 1, to a broker that may come and go.
//!
//! The frame loop only appends to a bounded queue ([`Publisher::publish`] never blocks on the
//! network); one thread owns the connection. While the broker is away results wait in the queue,
//! the oldest dropped (and counted) once it is full; what was sent but not acknowledged when a
//! connection died is sent again after reconnecting (at-least-once, as QoS 1 promises). The
//! client is ours, on `std::net`, because the maintained Rust clients (rumqttc, paho) bring an
//! async runtime or a C library for what is six packet types ([`packet`]).

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

pub mod packet;

/// Publishes sent and not yet acknowledged, at most.
pub const MAX_IN_FLIGHT: usize = 32;
const KEEP_ALIVE: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MqttError {
    #[error("--mqtt {0}: expected mqtt://[USER:PASSWORD@]HOST[:PORT]/TOPIC, e.g. mqtt://localhost/kestrel/camera1")]
    Url(String),
    #[error("--mqtt {0}: TLS (mqtts://) is not supported; publish to a broker on this machine or LAN and bridge it")]
    Tls(String),
    #[error("--mqtt {url}: the topic `{topic}` has a wildcard (+ or #), which only subscriptions may use")]
    Wildcard { url: String, topic: String },
}

/// Where results go.
#[derive(Clone, PartialEq)]
pub struct MqttUrl {
    pub host: String,
    pub port: u16,
    pub topic: String,
    pub user: Option<(String, String)>,
}

/// Shown without the password.
impl std::fmt::Display for MqttUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let user = self.user.as_ref().map(|(u, _)| format!("{u}@")).unwrap_or_default();
        write!(f, "mqtt://{user}{}:{}/{}", self.host, self.port, self.topic)
    }
}

impl std::fmt::Debug for MqttUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

impl std::str::FromStr for MqttUrl {
    type Err = MqttError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.starts_with("mqtts://") || s.starts_with("ssl://") {
            return Err(MqttError::Tls(s.into()));
        }
        let rest = s
            .strip_prefix("mqtt://")
            .or_else(|| s.strip_prefix("tcp://"))
            .ok_or_else(|| MqttError::Url(s.into()))?;
        let (authority, topic) = rest.split_once('/').ok_or_else(|| MqttError::Url(s.into()))?;
        if topic.is_empty() {
            return Err(MqttError::Url(s.into()));
        }
        if topic.contains(['+', '#']) {
            return Err(MqttError::Wildcard {
                url: s.into(),
                topic: topic.into(),
            });
        }
        let (user, hostport) = match authority.rsplit_once('@') {
            Some((user, hostport)) => {
                let (name, password) = user.split_once(':').unwrap_or((user, ""));
                (Some((name.to_string(), password.to_string())), hostport)
            }
            None => (None, authority),
        };
        // [::1]:1883, host:1883, host
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && (!h.contains(':') || h.starts_with('[')) => {
                (h, p.parse().map_err(|_| MqttError::Url(s.into()))?)
            }
            _ => (hostport, 1883),
        };
        if host.is_empty() {
            return Err(MqttError::Url(s.into()));
        }
        Ok(MqttUrl {
            host: host.trim_start_matches('[').trim_end_matches(']').to_string(),
            port,
            topic: topic.to_string(),
            user,
        })
    }
}

/// What happened to the results, reported at the end of a run.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct MqttSummary {
    pub acknowledged: u64,
    /// Dropped because the queue was full while the broker was away.
    pub dropped: u64,
    /// Still queued or unacknowledged when the run ended and the flush time ran out.
    pub unsent: u64,
    pub reconnects: u64,
}

struct State {
    queue: VecDeque<Vec<u8>>,
    capacity: usize,
    /// Sent and not acknowledged when the connection thread ended (set once, as it ends).
    in_flight: usize,
    summary: MqttSummary,
    notices: Vec<String>,
    /// Set by `close`: flush until this instant, then stop.
    closing: Option<Instant>,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn notice(&self, text: String) {
        self.lock().notices.push(text);
    }
}

/// The publishing side of a run.
pub struct Publisher {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").finish_non_exhaustive()
    }
}

impl Publisher {
    /// Starts the connection thread; a broker that is down now is retried, never an error.
    pub fn start(url: MqttUrl, capacity: usize) -> Publisher {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                capacity: capacity.max(1),
                in_flight: 0,
                summary: MqttSummary::default(),
                notices: Vec::new(),
                closing: None,
            }),
            wake: Condvar::new(),
        });
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || connection(&url, &shared))
        };
        Publisher {
            shared,
            thread: Some(thread),
        }
    }

    /// Queues one result; when the queue is full the oldest result makes room.
    pub fn publish(&self, payload: &[u8]) {
        let mut s = self.shared.lock();
        if s.queue.len() == s.capacity {
            s.queue.pop_front();
            s.summary.dropped += 1;
        }
        s.queue.push_back(payload.to_vec());
        drop(s);
        self.shared.wake.notify_all();
    }

    /// What the connection thread has to say (lost, back, refused), once each.
    pub fn take_notices(&self) -> Vec<String> {
        std::mem::take(&mut self.shared.lock().notices)
    }

    pub fn summary(&self) -> MqttSummary {
        self.shared.lock().summary
    }

    /// Sends what is queued for up to `flush`, disconnects, and says what became of it all.
    pub fn close(mut self, flush: Duration) -> MqttSummary {
        self.shared.lock().closing = Some(Instant::now() + flush);
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let s = self.shared.lock();
        MqttSummary {
            unsent: (s.queue.len() + s.in_flight) as u64,
            ..s.summary
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        // Not closed explicitly (an error ended the run): stop at once.
        self.shared.lock().closing = Some(Instant::now());
        self.shared.wake.notify_all();
    }
}

/// The connection thread: connect, publish, and on any failure back off and start again, keeping
/// what was not acknowledged.
fn connection(url: &MqttUrl, shared: &Shared) {
    let client_id = format!(
        "kestrel-{}-{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    );
    let mut in_flight: VecDeque<(u16, Vec<u8>)> = VecDeque::new();
    let mut next_id: u16 = 0;
    let mut backoff = FIRST_BACKOFF;
    let mut away: Option<String> = None;
    let mut ever_connected = false;
    loop {
        let closing = shared.lock().closing;
        if closing.is_some_and(|deadline| Instant::now() >= deadline) {
            break;
        }
        let result = connect(url).and_then(|stream| {
            let mut conn = Connection {
                stream,
                buf: Vec::new(),
            };
            conn.handshake(url, &client_id)?;
            if ever_connected {
                shared.lock().summary.reconnects += 1;
            }
            ever_connected = true;
            if let Some(why) = away.take() {
                shared.notice(format!("back on {url} after: {why}; sending what was queued"));
            }
            backoff = FIRST_BACKOFF;
            conn.session(url, shared, &mut in_flight, &mut next_id)
        });
        match result {
            // The session ended because the run is closing.
            Ok(()) => break,
            Err(e) => {
                if away.is_none() {
                    let capacity = shared.lock().capacity;
                    shared.notice(format!(
                        "{url}: {e}; retrying with back-off, keeping up to {capacity} results meanwhile"
                    ));
                    away = Some(e.to_string());
                }
            }
        }
        let s = shared.lock();
        if s.closing.is_none() {
            let _ = shared.wake.wait_timeout(s, backoff);
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    shared.lock().in_flight = in_flight.len();
}

/// The first of the host's addresses that accepts a connection.
fn connect(url: &MqttUrl) -> std::io::Result<TcpStream> {
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, format!("cannot resolve {}", url.host));
    for addr in (url.host.as_str(), url.port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

struct Connection {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Connection {
    /// Reads whatever arrives within the socket's read timeout; Ok(None) if nothing did.
    fn poll(&mut self) -> std::io::Result<Option<packet::Incoming>> {
        if let Some(p) = packet::take(&mut self.buf).map_err(std::io::Error::other)? {
            return Ok(Some(p));
        }
        let mut chunk = [0u8; 512];
        match self.stream.read(&mut chunk) {
            Ok(0) => Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "the broker closed the connection",
            )),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                packet::take(&mut self.buf).map_err(std::io::Error::other)
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn handshake(&mut self, url: &MqttUrl, client_id: &str) -> std::io::Result<()> {
        self.stream.set_write_timeout(Some(CONNECT_TIMEOUT))?;
        self.stream.set_read_timeout(Some(Duration::from_millis(100)))?;
        let user = url.user.as_ref().map(|(u, p)| (u.as_str(), p.as_str()));
        self.stream
            .write_all(&packet::connect(client_id, KEEP_ALIVE.as_secs() as u16, user))?;
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        while Instant::now() < deadline {
            match self.poll()? {
                Some(packet::Incoming::ConnAck(0)) => return Ok(()),
                Some(packet::Incoming::ConnAck(code)) => {
                    let why = match code {
                        1 => "unacceptable protocol version",
                        2 => "client identifier rejected",
                        3 => "server unavailable",
                        4 => "bad user name or password",
                        5 => "not authorised",
                        _ => "refused",
                    };
                    return Err(std::io::Error::other(format!(
                        "the broker refused the connection: {why}"
                    )));
                }
                _ => {}
            }
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "no CONNACK from the broker (is it an MQTT broker?)",
        ))
    }

    fn session(
        &mut self,
        url: &MqttUrl,
        shared: &Shared,
        in_flight: &mut VecDeque<(u16, Vec<u8>)>,
        next_id: &mut u16,
    ) -> std::io::Result<()> {
        self.stream.set_read_timeout(Some(Duration::from_millis(20)))?;
        for (id, payload) in in_flight.iter() {
            self.stream
                .write_all(&packet::publish(&url.topic, *id, payload, true))?;
        }
        let mut last_sent = Instant::now();
        let mut ping_sent: Option<Instant> = None;
        loop {
            let (batch, closing) = {
                let mut s = shared.lock();
                let room = MAX_IN_FLIGHT.saturating_sub(in_flight.len());
                let n = room.min(s.queue.len());
                let batch: Vec<Vec<u8>> = s.queue.drain(..n).collect();
                (batch, s.closing)
            };
            // In flight before they are written: a write that fails leaves them there, to go out
            // again after the reconnect, rather than lost uncounted with the rest of the batch.
            let first_new = in_flight.len();
            for payload in batch {
                *next_id = next_id.checked_add(1).unwrap_or(1);
                in_flight.push_back((*next_id, payload));
            }
            for (id, payload) in in_flight.range(first_new..) {
                self.stream
                    .write_all(&packet::publish(&url.topic, *id, payload, false))?;
                last_sent = Instant::now();
            }
            while let Some(p) = self.poll()? {
                match p {
                    packet::Incoming::PubAck(id) => {
                        if let Some(i) = in_flight.iter().position(|(f, _)| *f == id) {
                            in_flight.remove(i);
                            shared.lock().summary.acknowledged += 1;
                        }
                    }
                    packet::Incoming::PingResp => ping_sent = None,
                    _ => {}
                }
            }
            let drained = in_flight.is_empty() && shared.lock().queue.is_empty();
            if let Some(deadline) = closing
                && (drained || Instant::now() >= deadline)
            {
                let _ = self.stream.write_all(&packet::DISCONNECT);
                return Ok(());
            }
            if ping_sent.is_some_and(|t| t.elapsed() > KEEP_ALIVE) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the broker stopped answering pings",
                ));
            }
            if ping_sent.is_none() && last_sent.elapsed() > KEEP_ALIVE / 2 {
                self.stream.write_all(&packet::PINGREQ)?;
                ping_sent = Some(Instant::now());
                last_sent = Instant::now();
            }
            if in_flight.is_empty() {
                let s = shared.lock();
                if s.queue.is_empty() && s.closing.is_none() {
                    let _ = shared.wake.wait_timeout(s, Duration::from_millis(200));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_their_defaults_and_refuse_what_cannot_work() {
        let u: MqttUrl = "mqtt://pi:secret@broker.local:1884/home/kitchen"
            .parse()
            .expect("valid");
        assert_eq!(u.host, "broker.local");
        assert_eq!(u.port, 1884);
        assert_eq!(u.topic, "home/kitchen");
        assert_eq!(u.user, Some(("pi".into(), "secret".into())));
        assert_eq!(u.to_string(), "mqtt://pi@broker.local:1884/home/kitchen");
        let u: MqttUrl = "mqtt://localhost/k".parse().expect("valid");
        assert_eq!((u.host.as_str(), u.port), ("localhost", 1883));
        let u: MqttUrl = "mqtt://[::1]:1885/k".parse().expect("valid");
        assert_eq!((u.host.as_str(), u.port), ("::1", 1885));
        assert!(matches!("mqtt://host".parse::<MqttUrl>(), Err(MqttError::Url(_))));
        assert!(matches!("mqtt://host/".parse::<MqttUrl>(), Err(MqttError::Url(_))));
        assert!(matches!("host/topic".parse::<MqttUrl>(), Err(MqttError::Url(_))));
        assert!(matches!("mqtt://host:x/t".parse::<MqttUrl>(), Err(MqttError::Url(_))));
        assert!(matches!("mqtts://host/t".parse::<MqttUrl>(), Err(MqttError::Tls(_))));
        assert!(matches!(
            "mqtt://host/a/#".parse::<MqttUrl>(),
            Err(MqttError::Wildcard { .. })
        ));
    }

    /// Reads one whole packet from a socket: (first byte, body).
    fn read_packet(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
        let mut first = [0u8; 1];
        s.read_exact(&mut first).ok()?;
        let (mut len, mut shift) = (0usize, 0);
        loop {
            let mut b = [0u8; 1];
            s.read_exact(&mut b).ok()?;
            len |= usize::from(b[0] & 0x7F) << shift;
            shift += 7;
            if b[0] & 0x80 == 0 {
                break;
            }
        }
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).ok()?;
        Some((first[0], body))
    }

    /// The payload of a PUBLISH body on topic `t`.
    fn payload(body: &[u8]) -> (u16, Vec<u8>) {
        let topic_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
        let id = u16::from_be_bytes([body[2 + topic_len], body[3 + topic_len]]);
        (id, body[4 + topic_len..].to_vec())
    }

    /// A publisher pointed at a loopback socket the test plays the broker on.
    fn scripted_broker(capacity: usize) -> (std::net::TcpListener, Publisher) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let url: MqttUrl = format!("mqtt://127.0.0.1:{port}/t").parse().expect("valid");
        (listener, Publisher::start(url, capacity))
    }

    /// The publisher's next connection, past CONNECT and an accepting CONNACK.
    fn accept_session(listener: &std::net::TcpListener) -> TcpStream {
        let (mut s, _) = listener.accept().expect("accept");
        assert_eq!(read_packet(&mut s).map(|p| p.0), Some(0x10), "CONNECT first");
        s.write_all(&[0x20, 0x02, 0x00, 0x00]).expect("connack");
        s
    }

    /// A connection that dies with publishes unacknowledged: after reconnecting, each is sent
    /// again (DUP set) before anything newer, and counted once when acknowledged. The broker
    /// side is scripted on a loopback socket to make the loss exact, which a real broker's
    /// timing does not allow; tests/cli/mqtt.rs covers a real one.
    #[test]
    fn unacknowledged_results_are_sent_again_after_a_reconnect() {
        let (listener, p) = scripted_broker(10);
        for i in 0..3u8 {
            p.publish(&[i]);
        }
        // First connection: accept, read the three publishes, ack none, hang up.
        let mut s = accept_session(&listener);
        let first: Vec<(u8, (u16, Vec<u8>))> = (0..3)
            .map(|_| read_packet(&mut s).map(|(f, b)| (f, payload(&b))).expect("publish"))
            .collect();
        assert!(first.iter().all(|(f, _)| *f == 0x32));
        drop(s);
        // Second connection: the three again with DUP, then one published after it is up
        // (so it cannot have gone out on the dead socket); ack all.
        let mut s = accept_session(&listener);
        p.publish(&[3]);
        let mut again = Vec::new();
        for _ in 0..4 {
            let (f, body) = read_packet(&mut s).expect("publish");
            let (id, data) = payload(&body);
            s.write_all(&[0x40, 0x02, (id >> 8) as u8, id as u8]).expect("puback");
            again.push((f, data));
        }
        assert_eq!(
            again,
            vec![(0x3A, vec![0]), (0x3A, vec![1]), (0x3A, vec![2]), (0x32, vec![3])]
        );
        let summary = p.close(Duration::from_secs(2));
        assert_eq!(summary.acknowledged, 4);
        assert_eq!((summary.dropped, summary.unsent, summary.reconnects), (0, 0, 1));
    }

    /// A broker that takes publishes and never acknowledges them: at the end of the flush time
    /// they are reported unsent, not lost from the count.
    #[test]
    fn unacknowledged_results_at_exit_are_counted_unsent() {
        let (listener, p) = scripted_broker(10);
        p.publish(&[0]);
        p.publish(&[1]);
        let mut s = accept_session(&listener);
        for _ in 0..2 {
            assert_eq!(read_packet(&mut s).map(|p| p.0), Some(0x32));
        }
        let summary = p.close(Duration::from_millis(300));
        assert_eq!((summary.acknowledged, summary.unsent, summary.dropped), (0, 2, 0));
    }

    #[test]
    fn a_full_queue_drops_the_oldest_and_counts_it() {
        // No broker listens on port 9 of this address: results only queue.
        let url: MqttUrl = "mqtt://127.0.0.1:9/t".parse().expect("valid");
        let p = Publisher::start(url, 3);
        for i in 0..5u8 {
            p.publish(&[i]);
        }
        let queued: Vec<Vec<u8>> = p.shared.lock().queue.iter().cloned().collect();
        assert_eq!(queued, vec![vec![2], vec![3], vec![4]]);
        let summary = p.close(Duration::from_millis(10));
        assert_eq!(summary.dropped, 2);
        assert_eq!(summary.unsent, 3);
        assert_eq!(summary.acknowledged, 0);
    }
}
