//! The PKCS#11 door (DESIGN.md "front/pkcs11.rs"): TLS 1.3 with a required,
//! verified client certificate naming exactly one identity; then `Hello`,
//! then one frame in, one frame out. Every network phase has its own timeout
//! and every log line names the phase. A connection that misbehaves is
//! closed with a log line; other clients never notice.
//!
//! Resources are bounded before they are spent: handshakes in progress,
//! connections (in total and per identity), requests executing (in total and
//! per identity; the rest wait, without a thread, up to a queue timeout), and
//! a frame's buffer grows only as its bytes arrive.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kmsp11_proto::frame::FrameHeader;
use kmsp11_proto::{
    Body, Envelope, HelloOk, Request, Response, FRAME_HEADER_LEN, PROTOCOL_VERSION,
};
use parking_lot::Mutex;
use pkcs11_sys::{CKR_DEVICE_MEMORY, CKR_FUNCTION_FAILED};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::timeout;
use zeroize::Zeroize;

use super::tls::Tls;
use crate::config::Listen;
use crate::daemon::{give, take, Admit, Context, Daemon, Identity};
use crate::identity::{self, Presented};

/// The timeout of each network phase.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub handshake: Duration,
    pub first_frame: Duration,
    pub idle: Duration,
    pub request_read: Duration,
    pub response_write: Duration,
    pub queue: Duration,
}

impl Timeouts {
    pub fn new(l: &Listen, queue_secs: u64) -> Timeouts {
        Timeouts {
            handshake: Duration::from_secs(l.handshake_timeout_secs),
            first_frame: Duration::from_secs(l.first_frame_timeout_secs),
            idle: Duration::from_secs(l.idle_timeout_secs),
            request_read: Duration::from_secs(l.request_read_timeout_secs),
            response_write: Duration::from_secs(l.response_write_timeout_secs),
            queue: Duration::from_secs(queue_secs),
        }
    }
}

pub struct Server {
    daemon: Arc<Daemon>,
    tls: Arc<Tls>,
    timeouts: Timeouts,
    pending_handshakes: Arc<Semaphore>,
    /// Handshakes in progress per source address.
    pending_by_address: Mutex<HashMap<IpAddr, usize>>,
    connections: AtomicUsize,
    in_flight: Arc<Semaphore>,
    /// MiB that large requests may hold at once, over all identities.
    large_mib: Arc<Semaphore>,
    refusals: RateLimited,
}

/// Requests whose frame or claimed output exceeds this are large: they hold
/// a share of the memory budgets (`limits.max_large_request_mib*`) while
/// they are read, run and answered.
const SMALL: u64 = 64 << 10;
const MIB: u64 = 1 << 20;

/// Why a connection ended, for its one log line.
type Closed = String;

impl Server {
    pub fn new(daemon: Arc<Daemon>, tls: Arc<Tls>, timeouts: Timeouts) -> Server {
        let l = &daemon.limits;
        Server {
            pending_handshakes: Arc::new(Semaphore::new(l.max_pending_handshakes)),
            pending_by_address: Mutex::new(HashMap::new()),
            in_flight: Arc::new(Semaphore::new(l.max_in_flight)),
            large_mib: Arc::new(Semaphore::new(l.max_large_request_mib)),
            connections: AtomicUsize::new(0),
            refusals: RateLimited::new(),
            daemon,
            tls,
            timeouts,
        }
    }

    pub async fn run(self: Arc<Self>, listener: TcpListener) {
        let reaper = self.daemon.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                let d = reaper.clone();
                let _ = tokio::task::spawn_blocking(move || d.reap()).await;
            }
        });
        let accept_errors = RateLimited::new();
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors, typically: wait a little rather than spin.
                    accept_errors.warn(|n| tracing::warn!(suppressed = n, "accept failed: {e}"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Some(pending) = self.pending_handshake(peer) else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let me = self.clone();
            tokio::spawn(async move {
                if let Err(why) = me.connection(tcp, peer, pending).await {
                    tracing::info!(%peer, "connection closed: {why}");
                }
            });
        }
    }

    /// A share of the handshakes in progress, in total and for this source
    /// address; `None` (and the connection dropped) when either is taken.
    fn pending_handshake(self: &Arc<Self>, peer: SocketAddr) -> Option<Pending> {
        let Ok(permit) = self.pending_handshakes.clone().try_acquire_owned() else {
            self.refusals.warn(|n| tracing::warn!(%peer, suppressed = n, "connection refused: limits.max_pending_handshakes reached"));
            return None;
        };
        let mut by = self.pending_by_address.lock();
        let n = by.entry(peer.ip()).or_insert(0);
        if *n >= self.daemon.limits.max_pending_handshakes_per_address {
            drop(by);
            self.refusals.warn(|n| tracing::warn!(%peer, suppressed = n, "connection refused: limits.max_pending_handshakes_per_address reached"));
            return None;
        }
        *n += 1;
        Some(Pending {
            server: self.clone(),
            address: peer.ip(),
            _permit: permit,
        })
    }

    async fn connection(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
        handshake_permit: Pending,
    ) -> Result<(), Closed> {
        let t = self.timeouts;
        let mut tls = timeout(t.handshake, self.tls.acceptor().accept(tcp))
            .await
            .map_err(|_| format!("TLS handshake: timed out after {:?}", t.handshake))?
            .map_err(|e| format!("TLS handshake: {e}"))?;
        drop(handshake_permit);
        let presented = {
            let (_, conn) = tls.get_ref();
            conn.peer_certificates()
                .and_then(|c| c.first())
                .map(|c| Presented::from_der(c.as_ref()))
                .unwrap_or_default()
        };
        let identity = match identity::resolve(&self.daemon.identities(), &presented) {
            identity::Match::One(i) => i,
            identity::Match::None => {
                tracing::warn!(%peer, names = ?presented.names, "connection refused: the client certificate is valid but names no configured [[identity]]");
                return Ok(());
            }
            identity::Match::Several(ids) => {
                tracing::warn!(%peer, names = ?presented.names, identities = ?ids, "connection refused: the client certificate matches several [[identity]] entries");
                return Ok(());
            }
        };
        let Some(_slot) = self.connection_slot(&identity, peer) else {
            return Ok(());
        };
        let first = read_envelope(&mut tls, None, t.request_read, None);
        let ctx = match timeout(t.first_frame, first).await {
            Err(_) => return Err(format!("first frame: no Hello within {:?}", t.first_frame)),
            Ok(Err(e)) => return Err(format!("first frame: {e}")),
            Ok(Ok(None)) => return Ok(()),
            Ok(Ok(Some((env, _)))) => match env.request {
                Request::Hello(h) if h.protocol >> 8 == PROTOCOL_VERSION >> 8 => {
                    let Some((ctx, rejoined)) =
                        self.daemon
                            .open_context(&identity, h.rejoin.as_deref(), h.pid)
                    else {
                        tracing::warn!(%peer, identity = %identity.name, "connection refused: identity holds limits.max_contexts_per_identity contexts");
                        return Ok(());
                    };
                    tracing::info!(%peer, identity = %identity.name, context = ctx.id, rejoined, pid = h.pid, "client connected");
                    let ok = Response::ok(Body::HelloOk(HelloOk {
                        context: ctx.token.clone(),
                        rejoined,
                        raw_mechanisms: self.daemon.raw_vendor.clone(),
                    }));
                    if let Err(e) = write_response(&mut tls, &ok, t.response_write).await {
                        ctx.detach();
                        return Err(e);
                    }
                    ctx
                }
                Request::Hello(h) => {
                    return Err(format!(
                        "first frame: protocol {:#06x} not supported",
                        h.protocol
                    ))
                }
                _ => return Err("first frame: not Hello".into()),
            },
        };
        let result = self.serve(&mut tls, &ctx, &presented, peer).await;
        ctx.detach();
        result
    }

    /// Counts an authenticated connection against the limits; the returned
    /// guard gives it back.
    fn connection_slot(&self, identity: &Arc<Identity>, peer: SocketAddr) -> Option<ConnSlot<'_>> {
        let l = &self.daemon.limits;
        if !take(&self.connections, l.max_connections) {
            self.refusals.warn(|n| tracing::warn!(%peer, identity = %identity.name, suppressed = n, "connection refused: limits.max_connections reached"));
            return None;
        }
        if !take(&identity.usage.connections, l.max_connections_per_identity) {
            give(&self.connections, 1);
            self.refusals.warn(|n| tracing::warn!(%peer, identity = %identity.name, suppressed = n, "connection refused: limits.max_connections_per_identity reached"));
            return None;
        }
        Some(ConnSlot {
            server: self,
            identity: identity.clone(),
        })
    }

    async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        s: &mut S,
        ctx: &Arc<Context>,
        presented: &Presented,
        peer: SocketAddr,
    ) -> Result<(), Closed> {
        let t = self.timeouts;
        let mut tls_generation = self.tls.generation();
        loop {
            let budget = Large::new(&ctx.identity.large_mib, &self.large_mib);
            let (env, large) = match timeout(t.idle, first_byte(s)).await {
                Err(_) => return Err(format!("idle: no request within {:?}", t.idle)),
                Ok(Err(e)) => return Err(format!("idle: {e}")),
                Ok(Ok(None)) => return Ok(()),
                Ok(Ok(Some(b))) => {
                    match read_envelope(s, Some(b), t.request_read, Some(budget)).await {
                        Ok(Some(x)) => x,
                        Ok(None) => return Ok(()),
                        Err(e) => return Err(format!("request read: {e}")),
                    }
                }
            };
            if ctx.ended() {
                return Err("its context was ended by C_Finalize on another connection".into());
            }
            if self.tls.generation() != tls_generation {
                tls_generation = self.tls.generation();
                if self.tls.is_revoked(presented) {
                    tracing::warn!(identity = %ctx.identity.name, context = ctx.id, "client certificate revoked: connection closed");
                    return Err("client certificate revoked".into());
                }
            }
            let mut large =
                large.unwrap_or_else(|| Large::new(&ctx.identity.large_mib, &self.large_mib));
            let goodbye = matches!(env.request, Request::Goodbye(kmsp11_proto::Goodbye));
            let claim = env.request.output_claim();
            let resp = if claim > SMALL && timeout(t.queue, large.grow(claim)).await.is_err() {
                tracing::warn!(identity = %ctx.identity.name, context = ctx.id, claim, "request refused: its memory share is not free within limits.queue_timeout_secs");
                Response::rv(CKR_DEVICE_MEMORY)
            } else {
                self.execute(ctx, env, peer).await
            };
            write_response(s, &resp, t.response_write).await?;
            drop(large);
            if goodbye {
                return Ok(());
            }
        }
    }

    /// Runs one request in an execution slot of its identity and of the
    /// whole daemon, answering a resent request from the kept answer.
    async fn execute(&self, ctx: &Arc<Context>, env: Envelope, peer: SocketAddr) -> Response {
        let t = self.timeouts;
        let permits = timeout(t.queue, async {
            let a = ctx.identity.in_flight.clone().acquire_owned().await;
            let b = self.in_flight.clone().acquire_owned().await;
            (a, b)
        })
        .await;
        let _permits = match permits {
            Ok((Ok(a), Ok(b))) => (a, b),
            _ => {
                tracing::warn!(identity = %ctx.identity.name, context = ctx.id, "request refused: no execution slot within limits.queue_timeout_secs");
                return Response::rv(CKR_FUNCTION_FAILED);
            }
        };
        let kept = !matches!(
            env.request,
            Request::Goodbye(kmsp11_proto::Goodbye) | Request::Hello(_)
        );
        // The HSM call blocks: block_in_place moves this worker's other tasks
        // elsewhere first, so the runtime keeps serving.
        tokio::task::block_in_place(|| {
            if kept {
                if let Admit::Answer(r) = ctx.admit(env.id, env.resend, t.queue) {
                    return *r;
                }
            }
            let id = env.id;
            let origin = crate::core::pipeline::Origin {
                request_id: id,
                peer,
                audited: kept,
            };
            let calls = match &env.request {
                Request::Batch(b) => b.calls.len(),
                _ => 1,
            };
            // The decoder bounds a batch to MAX_BATCH calls.
            const CALLS: [&str; kmsp11_proto::MAX_BATCH + 1] = ["0", "1", "2", "3", "4"];
            let label = CALLS[calls.min(kmsp11_proto::MAX_BATCH)];
            let m = &self.daemon.metrics;
            m.exchanges.with_label_values(&[label]).inc();
            let resp = crate::core::pipeline::Pipeline {
                daemon: &self.daemon,
                ctx,
            }
            .run(env.request, origin);
            if kept {
                ctx.kept(id, &resp);
            }
            resp
        })
    }
}

/// A handshake in progress, counted in total and for its source address.
struct Pending {
    server: Arc<Server>,
    address: IpAddr,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut by = self.server.pending_by_address.lock();
        if let Some(n) = by.get_mut(&self.address) {
            *n -= 1;
            if *n == 0 {
                by.remove(&self.address);
            }
        }
    }
}

/// An authenticated connection counted against the limits.
struct ConnSlot<'a> {
    server: &'a Server,
    identity: Arc<Identity>,
}

impl Drop for ConnSlot<'_> {
    fn drop(&mut self) {
        give(&self.server.connections, 1);
        give(&self.identity.usage.connections, 1);
    }
}

/// Waits for the first byte of the next frame (the idle phase); `None` on
/// a clean close.
async fn first_byte<S: AsyncRead + Unpin>(s: &mut S) -> std::io::Result<Option<u8>> {
    let mut b = [0u8; 1];
    Ok((s.read(&mut b).await? == 1).then_some(b[0]))
}

/// The memory shares one large request holds, from its identity's budget
/// and the daemon's; given back when dropped.
struct Large {
    mine: Arc<Semaphore>,
    all: Arc<Semaphore>,
    held: Vec<OwnedSemaphorePermit>,
    mib: u32,
}

impl Large {
    fn new(mine: &Arc<Semaphore>, all: &Arc<Semaphore>) -> Large {
        Large {
            mine: mine.clone(),
            all: all.clone(),
            held: Vec::new(),
            mib: 0,
        }
    }

    /// Holds shares for `bytes` in total (nothing for a small request).
    async fn grow(&mut self, bytes: u64) -> Result<(), String> {
        if bytes <= SMALL {
            return Ok(());
        }
        let want = bytes.div_ceil(MIB) as u32;
        if want <= self.mib {
            return Ok(());
        }
        let more = want - self.mib;
        let closed = |_| "shutting down".to_string();
        self.held.push(
            self.mine
                .clone()
                .acquire_many_owned(more)
                .await
                .map_err(closed)?,
        );
        self.held.push(
            self.all
                .clone()
                .acquire_many_owned(more)
                .await
                .map_err(closed)?,
        );
        self.mib = want;
        Ok(())
    }
}

/// Reads one frame (within `limit`) and decodes its envelope; `None` on a
/// clean close before the first byte. `first` is the header's first byte
/// when the idle phase already read it. A large frame first takes its
/// memory share from `budget` (without one, as for `Hello`, it is refused).
/// The payload buffer grows as bytes arrive, so a frame that promises
/// 16 MiB and sends ten bytes holds ten.
async fn read_envelope<S: AsyncRead + Unpin>(
    s: &mut S,
    first: Option<u8>,
    limit: Duration,
    budget: Option<Large>,
) -> Result<Option<(Envelope, Option<Large>)>, String> {
    let read = async {
        let mut h = [0u8; FRAME_HEADER_LEN];
        let start = match first {
            Some(b) => {
                h[0] = b;
                1
            }
            None => 0,
        };
        if let Err(e) = s.read_exact(&mut h[start..]).await {
            return if e.kind() == std::io::ErrorKind::UnexpectedEof && start == 0 {
                Ok(None)
            } else {
                Err(format!("{e}"))
            };
        }
        let header = FrameHeader::parse(&h).map_err(|e| format!("bad frame: {e}"))?;
        let len = header.len as usize;
        let mut budget = budget;
        match budget.as_mut() {
            Some(b) => b.grow(len as u64).await?,
            None if len as u64 > SMALL => return Err(format!("frame of {len} bytes before Hello")),
            None => {}
        }
        let mut payload = Vec::with_capacity(len.min(64 << 10));
        (&mut *s)
            .take(len as u64)
            .read_to_end(&mut payload)
            .await
            .map_err(|e| format!("{e}"))?;
        if payload.len() != len {
            return Err(format!(
                "truncated frame ({} of {len} bytes)",
                payload.len()
            ));
        }
        let decoded = kmsp11_proto::decode::<Envelope>(&payload);
        if decoded.as_ref().is_ok_and(|e| e.request.carries_secret()) {
            payload.zeroize();
        }
        decoded
            .map(|e| Some((e, budget)))
            .map_err(|e| format!("bad frame: {e}"))
    };
    timeout(limit, read)
        .await
        .map_err(|_| format!("frame not complete within {limit:?}"))?
}

/// Writes one response as one buffer, within `limit`. An answer too large
/// for a frame becomes `CKR_DEVICE_MEMORY`.
async fn write_response<S: AsyncWrite + Unpin>(
    s: &mut S,
    r: &Response,
    limit: Duration,
) -> Result<(), Closed> {
    let mut bytes = Vec::new();
    if kmsp11_proto::encode_framed(r, &mut bytes).is_err() {
        tracing::warn!("answer larger than a frame: sent as CKR_DEVICE_MEMORY");
        // A bare CK_RV always fits.
        let _ = kmsp11_proto::encode_framed(&Response::rv(CKR_DEVICE_MEMORY), &mut bytes);
    }
    let write = async {
        s.write_all(&bytes).await?;
        s.flush().await
    };
    match timeout(limit, write).await {
        Err(_) => Err(format!("response write: not taken within {limit:?}")),
        Ok(Err(e)) => Err(format!("response write: {e}")),
        Ok(Ok(())) => Ok(()),
    }
}

/// A log line at most once a second, counting the ones suppressed.
pub struct RateLimited {
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl RateLimited {
    pub fn new() -> RateLimited {
        RateLimited {
            last: Mutex::new(None),
            suppressed: AtomicU64::new(0),
        }
    }

    pub fn warn(&self, log: impl FnOnce(u64)) {
        let mut last = self.last.lock();
        if last.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        *last = Some(Instant::now());
        log(self.suppressed.swap(0, Ordering::Relaxed));
    }
}

impl Default for RateLimited {
    fn default() -> Self {
        Self::new()
    }
}
