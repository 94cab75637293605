//! Blocking transport: rustls over `std::net::TcpStream`, one connection per
//! concurrently calling thread, from a bounded pool (`max_connections`;
//! threads beyond it wait for a free connection). No runtime, no thread.
//! What the library answers without a round trip is in [`held`].

mod held;

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kmsp11_proto::frame::FrameHeader;
use kmsp11_proto::{Body, Envelope, Hello, Request, Response, FRAME_HEADER_LEN, PROTOCOL_VERSION};
use parking_lot::{Condvar, Mutex, RwLock};
use rustls::pki_types::ServerName;
use zeroize::Zeroize;

use crate::config::Config;
use crate::error::{Error, Result};

type Stream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// The connections of one library instance.
struct Pool {
    idle: Vec<Stream>,
    /// Connections held: idle, in use, or being opened.
    live: usize,
    /// Threads waiting for one.
    waiting: usize,
}

pub struct Client {
    cfg: Config,
    tls: Arc<rustls::ClientConfig>,
    pool: Mutex<Pool>,
    /// Signalled when a connection is returned or given up.
    freed: Condvar,
    /// The context token kmsd gave us: new connections rejoin it. Held
    /// across each Hello, so that threads reconnecting together after a
    /// kmsd restart open one context between them, not one each.
    context: Mutex<Option<Vec<u8>>>,
    /// Vendor mechanisms kmsd takes as raw bytes (from its last Hello answer).
    raw_mechanisms: RwLock<Option<Vec<u64>>>,
    /// Request ids, unique within this library instance.
    next_id: AtomicU64,
    /// Answers that do not change while this instance lives.
    pub(crate) cache: Cache,
    /// What sessions hold back from kmsd.
    held: held::Held,
}

/// C_GetMechanismList and C_GetMechanismInfo answers by slot: a token's
/// mechanisms are fixed while this library instance lives (a policy
/// reload that takes one away from this identity shows after the next
/// C_Initialize; kmsd refuses its use either way). Java and NSS ask for
/// every mechanism's info at start: one round trip each, once.
#[derive(Default)]
pub(crate) struct Cache {
    pub mechanisms: Mutex<std::collections::HashMap<u64, Vec<u64>>>,
    pub mechanism_info: Mutex<std::collections::HashMap<(u64, u64), kmsp11_proto::MechanismInfo>>,
}

impl Cache {
    /// Bounded: slots x mechanisms; started over if it grows past that.
    pub const MAX: usize = 4096;
}

impl Client {
    /// Builds the TLS configuration (TLS 1.3, our certificate, kmsd's CA).
    /// Fails closed on any unreadable or invalid file; connects lazily.
    pub fn new(cfg: Config) -> std::result::Result<Client, String> {
        let names = ["ca", "cert", "key"];
        let tls = kmsp11_proto::tls::client_config(&cfg.ca, &cfg.cert, &cfg.key, names)?;
        Ok(Client {
            cfg,
            tls: Arc::new(tls),
            pool: Mutex::new(Pool {
                idle: Vec::new(),
                live: 0,
                waiting: 0,
            }),
            freed: Condvar::new(),
            context: Mutex::new(None),
            raw_mechanisms: RwLock::new(None),
            next_id: AtomicU64::new(1),
            cache: Cache::default(),
            held: held::Held::default(),
        })
    }

    /// One call of the application: answered here or sent with what its
    /// session holds ([`held`]).
    pub fn call(&self, request: Request) -> Result<Response> {
        held::call(self, request)
    }

    /// One request, one response. When the connection fails before the
    /// answer arrived (a pooled connection kmsd closed, a reset), the request
    /// is sent once more on a new connection with the same id and marked as
    /// a resend: kmsd answers it from the answer it kept if it ran it
    /// already, so nothing runs twice.
    fn send(&self, request: Request) -> Result<Response> {
        let secret = request.carries_secret();
        let mut env = Envelope {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            resend: false,
            request,
        };
        let (mut conn, reused) = self.checkout()?;
        let answered = send(&mut conn, &env, secret).and_then(|first| match first {
            Ok(r) => Ok(r),
            Err(Failure::Lost(e)) => {
                tracing::debug!(reused, "connection lost before the answer ({e}); resending");
                env.resend = true;
                conn = self.connect()?;
                send(&mut conn, &env, secret)?.map_err(Failure::into_error)
            }
            Err(f) => Err(f.into_error()),
        });
        match answered {
            Ok(resp) => {
                self.checkin(conn);
                Ok(resp)
            }
            Err(e) => {
                self.give_up();
                Err(e)
            }
        }
    }

    /// A pooled connection, or a new one while fewer than
    /// `max_connections` are held; otherwise waits for one to be returned,
    /// up to the request timeout. `true` with a pooled connection.
    fn checkout(&self) -> Result<(Stream, bool)> {
        let deadline = Instant::now() + self.cfg.request_timeout();
        let mut p = self.pool.lock();
        loop {
            if let Some(c) = p.idle.pop() {
                return Ok((c, true));
            }
            if p.live < self.cfg.max_connections {
                p.live += 1;
                break;
            }
            p.waiting += 1;
            let timed_out = self.freed.wait_until(&mut p, deadline).timed_out();
            p.waiting -= 1;
            if timed_out {
                return Err(Error::Transport(format!(
                    "no connection to kmsd free within the request timeout ({} in use; max_connections)",
                    p.live
                )));
            }
        }
        drop(p);
        match self.connect() {
            Ok(c) => Ok((c, false)),
            Err(e) => {
                self.give_up();
                Err(e)
            }
        }
    }

    /// Returns a connection: to a waiting thread, or kept idle, or closed
    /// when `max_idle_connections` are idle already.
    fn checkin(&self, conn: Stream) {
        let mut p = self.pool.lock();
        if p.waiting == 0 && p.idle.len() >= self.cfg.max_idle_connections {
            p.live -= 1;
        } else {
            p.idle.push(conn);
        }
        self.freed.notify_one();
    }

    /// A held connection is gone (broken, or never opened).
    fn give_up(&self) {
        let mut p = self.pool.lock();
        p.live = p.live.saturating_sub(1);
        self.freed.notify_one();
    }

    /// Whether kmsd forwards this vendor mechanism's parameter as raw
    /// bytes; asks kmsd (one connection, kept in the pool) if no Hello
    /// happened yet. Unknown (kmsd unreachable) counts as no: the parameter
    /// is then described by its length only and kmsd gives the verdict.
    pub fn raw_vendor(&self, mechanism: u64) -> bool {
        if self.raw_mechanisms.read().is_none() {
            if let Ok((conn, _)) = self.checkout() {
                self.checkin(conn);
            }
        }
        self.raw_mechanisms
            .read()
            .as_ref()
            .is_some_and(|v| v.contains(&mechanism))
    }

    /// Opens a connection and says Hello, rejoining our context if we have
    /// one. A connection kmsd accepted and then closed before Hello was
    /// answered (at its limit of handshakes in progress from one address,
    /// when many threads or processes connect at once) is tried again,
    /// after a growing pause, until the connect timeout has passed.
    fn connect(&self) -> Result<Stream> {
        let deadline = Instant::now() + self.cfg.connect_timeout();
        let mut pause = Duration::from_millis(5);
        loop {
            let mut last = String::from("no endpoint");
            let mut dropped = false;
            for ep in &self.cfg.endpoints {
                match self.connect_one(ep) {
                    Ok(s) => return Ok(s),
                    Err(e) => {
                        dropped |= e.dropped;
                        last = format!("{ep}: {}", e.msg);
                    }
                }
            }
            if !dropped || Instant::now() + pause > deadline {
                return Err(Error::Unreachable(last));
            }
            // Threads that were turned away together come back apart.
            let spread = self.next_id.load(Ordering::Relaxed) % 5;
            std::thread::sleep(pause + Duration::from_millis(spread));
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    fn connect_one(&self, ep: &str) -> std::result::Result<Stream, ConnectError> {
        // Before the TCP connection: not a refusal by kmsd's limits.
        let early = |msg: String| ConnectError {
            msg,
            dropped: false,
        };
        let addrs: Vec<_> = ep
            .to_socket_addrs()
            .map_err(|e| early(format!("resolve: {e}")))?
            .collect();
        let mut tcp = None;
        let mut err = String::from("no address");
        for a in addrs {
            match TcpStream::connect_timeout(&a, self.cfg.connect_timeout()) {
                Ok(t) => {
                    tcp = Some(t);
                    break;
                }
                Err(e) => err = format!("connect: {e}"),
            }
        }
        let tcp = tcp.ok_or_else(|| early(err))?;
        let _ = tcp.set_nodelay(true);
        tcp.set_read_timeout(Some(self.cfg.request_timeout()))
            .map_err(|e| early(e.to_string()))?;
        tcp.set_write_timeout(Some(self.cfg.request_timeout()))
            .map_err(|e| early(e.to_string()))?;
        let host = match &self.cfg.server_name {
            Some(n) => n.clone(),
            None => ep
                .rsplit_once(':')
                .map(|(h, _)| h.trim_matches(['[', ']']))
                .unwrap_or(ep)
                .to_string(),
        };
        let name = ServerName::try_from(host.clone())
            .map_err(|_| early(format!("invalid server name {host:?}")))?;
        let conn = rustls::ClientConnection::new(self.tls.clone(), name)
            .map_err(|e| early(format!("TLS setup: {e}")))?;
        let mut s = rustls::StreamOwned::new(conn, tcp);
        // Handshake with the connect timeout, then requests with the request timeout.
        s.sock
            .set_read_timeout(Some(self.cfg.connect_timeout()))
            .map_err(|e| early(e.to_string()))?;
        while s.conn.is_handshaking() {
            s.conn.complete_io(&mut s.sock).map_err(|e| ConnectError {
                dropped: closed(&e),
                msg: format!("TLS handshake: {e}"),
            })?;
        }
        s.sock
            .set_read_timeout(Some(self.cfg.request_timeout()))
            .map_err(|e| early(e.to_string()))?;
        let mut context = self.context.lock();
        let hello = Envelope {
            id: 0,
            resend: false,
            request: Request::Hello(Hello {
                protocol: PROTOCOL_VERSION,
                rejoin: context.clone(),
                pid: std::process::id(),
            }),
        };
        let resp = send(&mut s, &hello, false)
            .map_err(|e| early(format!("hello: {e}")))?
            .map_err(|f| ConnectError {
                dropped: matches!(f, Failure::Lost(_)),
                msg: format!("hello: {}", f.into_error()),
            })?;
        match resp.body {
            Body::HelloOk(ok) => {
                if context.is_some() && !ok.rejoined {
                    tracing::warn!(
                        "kmsd did not know our context (restarted?): earlier sessions are gone"
                    );
                    self.held.forget();
                }
                *context = Some(ok.context);
                *self.raw_mechanisms.write() = Some(ok.raw_mechanisms);
                Ok(s)
            }
            _ => Err(early(format!("hello refused (CK_RV {:#x})", resp.rv))),
        }
    }

    /// Ends the context at kmsd (C_Finalize). Best effort.
    pub fn goodbye(&self) {
        if self.context.lock().is_none() {
            return;
        }
        let idle = {
            let mut p = self.pool.lock();
            p.live -= p.idle.len();
            std::mem::take(&mut p.idle)
        };
        // One Goodbye ends the context for all of them; the rest just close.
        if let Some(mut c) = idle.into_iter().next() {
            let bye = Envelope {
                id: self.next_id.fetch_add(1, Ordering::Relaxed),
                resend: false,
                request: Request::Goodbye(kmsp11_proto::Goodbye),
            };
            let _ = send(&mut c, &bye, false);
            c.conn.send_close_notify();
            let _ = c.flush();
        }
        self.freed.notify_all();
    }
}

/// Why a connection could not be opened; `dropped` when kmsd accepted the
/// TCP connection and closed it before answering Hello (its limits).
struct ConnectError {
    msg: String,
    dropped: bool,
}

/// A connection closed by the other end (not a timeout, not a refusal
/// before it was accepted).
fn closed(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::UnexpectedEof
            | ErrorKind::BrokenPipe
    )
}

enum Failure {
    /// The connection failed before an answer arrived (not a timeout): the
    /// request may or may not have run, and may be resent with its id.
    Lost(String),
    /// A timeout, or an answer that arrived broken: not resent.
    Broken(String),
}

impl Failure {
    fn into_error(self) -> Error {
        match self {
            Failure::Lost(e) | Failure::Broken(e) => Error::Transport(e),
        }
    }

    fn io(what: &str, e: std::io::Error) -> Failure {
        let msg = format!("{what}: {e}");
        match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => Failure::Broken(msg),
            _ => Failure::Lost(msg),
        }
    }
}

/// Encodes and sends one envelope and reads its answer. The outer error is
/// the request itself (too large for a frame); the frame that carried a
/// secret is wiped once sent.
fn send(
    s: &mut Stream,
    env: &Envelope,
    secret: bool,
) -> Result<std::result::Result<Response, Failure>> {
    let mut bytes = Vec::new();
    let framed = kmsp11_proto::encode_framed(env, &mut bytes);
    if framed.is_err() && secret {
        bytes.zeroize();
    }
    framed.map_err(|e| match e {
        kmsp11_proto::CodecError::Frame(_) => {
            Error::ArgumentsBad("request larger than the frame limit")
        }
        e => Error::Transport(e.to_string()),
    })?;
    let r = exchange(s, &bytes);
    if secret {
        bytes.zeroize();
    }
    Ok(r)
}

fn exchange(s: &mut Stream, req: &[u8]) -> std::result::Result<Response, Failure> {
    s.write_all(req)
        .and_then(|_| s.flush())
        .map_err(|e| Failure::io("send", e))?;
    let mut h = [0u8; FRAME_HEADER_LEN];
    s.read_exact(&mut h)
        .map_err(|e| Failure::io("receive", e))?;
    let header = FrameHeader::parse(&h).map_err(|e| Failure::Broken(e.to_string()))?;
    let mut payload = vec![0u8; header.len as usize];
    s.read_exact(&mut payload)
        .map_err(|e| Failure::Broken(format!("receive: {e}")))?;
    kmsp11_proto::decode(&payload).map_err(|e| Failure::Broken(e.to_string()))
}
