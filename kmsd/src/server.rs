//! The PKCS#11 listener: TLS 1.3 with a required, verified client
//! certificate; one frame in, one frame out. A connection that fails the
//! handshake, names no known identity or sends a bad frame is closed with a
//! log line; other clients never notice.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kmsp11_proto::frame::{self, FrameHeader};
use kmsp11_proto::{Body, HelloOk, Request, Response, FRAME_HEADER_LEN, PROTOCOL_VERSION};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::daemon::Daemon;

pub struct Server {
    pub daemon: Arc<Daemon>,
    pub acceptor: TlsAcceptor,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
}

impl Server {
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
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let me = self.clone();
            tokio::spawn(async move {
                if let Err(e) = me.connection(tcp, peer).await {
                    tracing::info!(%peer, "connection closed: {e}");
                }
            });
        }
    }

    async fn connection(&self, tcp: tokio::net::TcpStream, peer: SocketAddr) -> Result<(), String> {
        let mut tls = tokio::time::timeout(self.handshake_timeout, self.acceptor.accept(tcp))
            .await
            .map_err(|_| "TLS handshake: timed out".to_string())?
            .map_err(|e| format!("TLS handshake: {e}"))?;
        let names = {
            let (_, conn) = tls.get_ref();
            conn.peer_certificates()
                .and_then(|c| c.first())
                .map(|c| crate::authz::cert_names(c.as_ref()))
                .unwrap_or_default()
        };
        let Some(identity) = self.daemon.identity(&names) else {
            tracing::warn!(%peer, ?names, "client certificate is valid but names no configured [[identity]]; closing");
            return Err("unknown identity".into());
        };
        // The first frame must be Hello.
        let hello = match self.read_request(&mut tls).await? {
            Some(Request::Hello(h)) => h,
            Some(_) => return Err("first frame was not Hello".into()),
            None => return Ok(()),
        };
        if hello.protocol >> 8 != PROTOCOL_VERSION >> 8 {
            return Err(format!("protocol {:#x} not supported", hello.protocol));
        }
        let (ctx, rejoined) =
            self.daemon
                .open_context(&identity, hello.rejoin.as_deref(), hello.pid);
        tracing::debug!(%peer, identity = %identity.name, context = ctx.id, rejoined, pid = hello.pid, "client connected");
        let result = async {
            write_response(
                &mut tls,
                &Response::ok(Body::HelloOk(HelloOk {
                    context: ctx.token.clone(),
                    rejoined,
                })),
            )
            .await?;
            loop {
                let req = match tokio::time::timeout(self.idle_timeout, self.read_request(&mut tls))
                    .await
                {
                    Err(_) => return Err("idle timeout".to_string()),
                    Ok(r) => r?,
                };
                let Some(req) = req else { return Ok(()) };
                let goodbye = matches!(req, Request::Goodbye);
                // The HSM call blocks: block_in_place moves this worker's other
                // tasks elsewhere first, so the runtime keeps serving, without
                // the thread hop of spawn_blocking on every request.
                let resp = tokio::task::block_in_place(|| {
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        crate::handlers::dispatch(&self.daemon, &ctx, req)
                    }))
                    .unwrap_or_else(|_| {
                        tracing::error!(context = ctx.id, "request handler panicked");
                        Response::rv(pkcs11_sys::CKR_GENERAL_ERROR)
                    })
                });
                write_response(&mut tls, &resp).await?;
                if goodbye {
                    return Ok(());
                }
            }
        }
        .await;
        ctx.detach();
        result
    }

    /// Reads one request; `None` on a clean close between frames.
    async fn read_request<S: AsyncReadExt + Unpin>(
        &self,
        s: &mut S,
    ) -> Result<Option<Request>, String> {
        let mut h = [0u8; FRAME_HEADER_LEN];
        match s.read_exact(&mut h).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(format!("read: {e}")),
        }
        let header = FrameHeader::parse(&h).map_err(|e| format!("bad frame: {e}"))?;
        let mut payload = vec![0u8; header.len as usize];
        s.read_exact(&mut payload)
            .await
            .map_err(|e| format!("truncated frame: {e}"))?;
        kmsp11_proto::decode(&payload)
            .map(Some)
            .map_err(|e| format!("bad frame: {e}"))
    }
}

async fn write_response<S: AsyncWriteExt + Unpin>(s: &mut S, r: &Response) -> Result<(), String> {
    let payload = kmsp11_proto::encode(r).map_err(|e| e.to_string())?;
    let bytes = frame::frame(&payload).map_err(|e| e.to_string())?;
    s.write_all(&bytes)
        .await
        .map_err(|e| format!("write: {e}"))?;
    s.flush().await.map_err(|e| format!("write: {e}"))
}

/// Builds the TLS acceptor: TLS 1.3 only, client certificate required and
/// verified against the configured CA.
pub fn acceptor(cfg: &crate::config::Tls) -> Result<TlsAcceptor, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cfg.cert)
        .and_then(|i| i.collect::<Result<_, _>>())
        .map_err(|e| format!("tls.cert {}: {e}", cfg.cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(&cfg.key)
        .map_err(|e| format!("tls.key {}: {e}", cfg.key.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&cfg.client_ca)
        .map_err(|e| format!("tls.client_ca {}: {e}", cfg.client_ca.display()))?
    {
        let c = c.map_err(|e| format!("tls.client_ca {}: {e}", cfg.client_ca.display()))?;
        roots
            .add(c)
            .map_err(|e| format!("tls.client_ca {}: {e}", cfg.client_ca.display()))?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| format!("tls.client_ca: {e}"))?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| format!("tls.cert/tls.key: {e}"))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
