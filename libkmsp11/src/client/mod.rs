//! Blocking transport: rustls over `std::net::TcpStream`, one connection per
//! concurrently calling thread, kept in a small pool. No runtime, no thread.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use kmsp11_proto::frame::{self, FrameHeader};
use kmsp11_proto::{Body, Envelope, Hello, Request, Response, FRAME_HEADER_LEN, PROTOCOL_VERSION};
use parking_lot::{Mutex, RwLock};
use rustls::pki_types::ServerName;
use zeroize::Zeroize;

use crate::config::Config;
use crate::error::{Error, Result};

type Stream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

pub struct Client {
    cfg: Config,
    tls: Arc<rustls::ClientConfig>,
    pool: Mutex<Vec<Stream>>,
    /// The context token kmsd gave us: new connections rejoin it. Held
    /// across each Hello, so that threads reconnecting together after a
    /// kmsd restart open one context between them, not one each.
    context: Mutex<Option<Vec<u8>>>,
    /// Vendor mechanisms kmsd takes as raw bytes (from its last Hello answer).
    raw_mechanisms: RwLock<Option<Vec<u64>>>,
    /// Request ids, unique within this library instance.
    next_id: AtomicU64,
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
            pool: Mutex::new(Vec::new()),
            context: Mutex::new(None),
            raw_mechanisms: RwLock::new(None),
            next_id: AtomicU64::new(1),
        })
    }

    /// One request, one response. When the connection fails before the
    /// answer arrived (a pooled connection kmsd closed, a reset), the request
    /// is sent once more on a new connection with the same id and marked as
    /// a resend: kmsd answers it from the answer it kept if it ran it
    /// already, so nothing runs twice.
    pub fn call(&self, request: Request) -> Result<Response> {
        let secret = request.carries_secret();
        let mut env = Envelope {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            resend: false,
            request,
        };
        let pooled = self.pool.lock().pop();
        let (mut conn, reused) = match pooled {
            Some(c) => (c, true),
            None => (self.connect()?, false),
        };
        let first = send(&mut conn, &env, secret)?;
        let resp = match first {
            Ok(r) => r,
            Err(Failure::Lost(e)) => {
                tracing::debug!(reused, "connection lost before the answer ({e}); resending");
                env.resend = true;
                conn = self.connect()?;
                send(&mut conn, &env, secret)?.map_err(Failure::into_error)?
            }
            Err(f) => return Err(f.into_error()),
        };
        let mut pool = self.pool.lock();
        if pool.len() < self.cfg.max_idle_connections {
            pool.push(conn);
        }
        Ok(resp)
    }

    /// Whether kmsd forwards this vendor mechanism's parameter as raw
    /// bytes; asks kmsd (one connection, kept in the pool) if no Hello
    /// happened yet. Unknown (kmsd unreachable) counts as no: the parameter
    /// is then described by its length only and kmsd gives the verdict.
    pub fn raw_vendor(&self, mechanism: u64) -> bool {
        if self.raw_mechanisms.read().is_none() {
            if let Ok(conn) = self.connect() {
                self.pool.lock().push(conn);
            }
        }
        self.raw_mechanisms
            .read()
            .as_ref()
            .is_some_and(|v| v.contains(&mechanism))
    }

    /// Opens a connection and says Hello, rejoining our context if we have one.
    fn connect(&self) -> Result<Stream> {
        let mut last = String::from("no endpoint");
        for ep in &self.cfg.endpoints {
            match self.connect_one(ep) {
                Ok(s) => return Ok(s),
                Err(e) => last = format!("{ep}: {e}"),
            }
        }
        Err(Error::Unreachable(last))
    }

    fn connect_one(&self, ep: &str) -> std::result::Result<Stream, String> {
        let addrs: Vec<_> = ep
            .to_socket_addrs()
            .map_err(|e| format!("resolve: {e}"))?
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
        let tcp = tcp.ok_or(err)?;
        let _ = tcp.set_nodelay(true);
        tcp.set_read_timeout(Some(self.cfg.request_timeout()))
            .map_err(|e| e.to_string())?;
        tcp.set_write_timeout(Some(self.cfg.request_timeout()))
            .map_err(|e| e.to_string())?;
        let host = match &self.cfg.server_name {
            Some(n) => n.clone(),
            None => ep
                .rsplit_once(':')
                .map(|(h, _)| h.trim_matches(['[', ']']))
                .unwrap_or(ep)
                .to_string(),
        };
        let name = ServerName::try_from(host.clone())
            .map_err(|_| format!("invalid server name {host:?}"))?;
        let conn = rustls::ClientConnection::new(self.tls.clone(), name)
            .map_err(|e| format!("TLS setup: {e}"))?;
        let mut s = rustls::StreamOwned::new(conn, tcp);
        // Handshake with the connect timeout, then requests with the request timeout.
        s.sock
            .set_read_timeout(Some(self.cfg.connect_timeout()))
            .map_err(|e| e.to_string())?;
        while s.conn.is_handshaking() {
            s.conn
                .complete_io(&mut s.sock)
                .map_err(|e| format!("TLS handshake: {e}"))?;
        }
        s.sock
            .set_read_timeout(Some(self.cfg.request_timeout()))
            .map_err(|e| e.to_string())?;
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
            .map_err(|e| format!("hello: {e}"))?
            .map_err(|f| format!("hello: {}", f.into_error()))?;
        match resp.body {
            Body::HelloOk(ok) => {
                if context.is_some() && !ok.rejoined {
                    tracing::warn!(
                        "kmsd did not know our context (restarted?): earlier sessions are gone"
                    );
                }
                *context = Some(ok.context);
                *self.raw_mechanisms.write() = Some(ok.raw_mechanisms);
                Ok(s)
            }
            _ => Err(format!("hello refused (CK_RV {:#x})", resp.rv)),
        }
    }

    /// Ends the context at kmsd (C_Finalize). Best effort.
    pub fn goodbye(&self) {
        if self.context.lock().is_none() {
            return;
        }
        if let Some(mut c) = self.pool.lock().pop() {
            let bye = Envelope {
                id: self.next_id.fetch_add(1, Ordering::Relaxed),
                resend: false,
                request: Request::Goodbye(kmsp11_proto::Goodbye),
            };
            let _ = send(&mut c, &bye, false);
            c.conn.send_close_notify();
            let _ = c.flush();
        }
        self.pool.lock().clear();
    }
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
    let mut payload = kmsp11_proto::encode(env).map_err(|e| Error::Transport(e.to_string()))?;
    let framed = frame::frame(&payload);
    if secret {
        payload.zeroize();
    }
    let mut bytes =
        framed.map_err(|_| Error::ArgumentsBad("request larger than the frame limit"))?;
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
