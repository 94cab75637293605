//! kmsd's TLS configuration (DESIGN.md "front/tls.rs"): TLS 1.3 only, a
//! client certificate required and verified against the client CA, with the
//! CA's revocation lists when configured. Built once and fails closed; a
//! reload (SIGHUP) builds a new one and keeps the old one if anything is
//! wrong with the files.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use kmsp11_proto::{pem, tls};
use parking_lot::RwLock;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateRevocationListDer;
use tokio_rustls::TlsAcceptor;

use crate::config;
use crate::identity::Presented;

pub struct Tls {
    cfg: config::Tls,
    current: RwLock<Arc<Current>>,
    /// Bumped by every successful reload, so that live connections re-check
    /// their certificate against the new revocation lists.
    generation: AtomicU64,
}

/// A revoked certificate: its issuer (DER name) and serial number.
type Revoked = (Vec<u8>, Vec<u8>);

struct Current {
    acceptor: TlsAcceptor,
    /// Every revoked certificate in the configured CRLs.
    revoked: HashSet<Revoked>,
}

impl Tls {
    pub fn load(cfg: &config::Tls) -> Result<Tls, String> {
        Ok(Tls {
            current: RwLock::new(Arc::new(build(cfg)?)),
            cfg: cfg.clone(),
            generation: AtomicU64::new(0),
        })
    }

    /// Re-reads the certificates, key, CA and CRLs. On any error the old
    /// configuration stays in force and the error is returned.
    pub fn reload(&self) -> Result<usize, String> {
        let new = build(&self.cfg)?;
        let n = new.revoked.len();
        *self.current.write() = Arc::new(new);
        self.generation.fetch_add(1, Ordering::SeqCst);
        Ok(n)
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        self.current.read().acceptor.clone()
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Whether the certificate of a live connection has been revoked since it connected.
    pub fn is_revoked(&self, p: &Presented) -> bool {
        self.current
            .read()
            .revoked
            .contains(&(p.issuer.clone(), p.serial.clone()))
    }
}

fn build(cfg: &config::Tls) -> Result<Current, String> {
    let certs = pem::certificates(&cfg.cert, "tls.cert")?;
    let key = pem::private_key(&cfg.key, "tls.key")?;
    let roots = tls::roots(&cfg.client_ca, "tls.client_ca")?;
    let mut crls = Vec::new();
    let mut revoked = HashSet::new();
    for p in &cfg.crl {
        for crl in revocation_lists(p)? {
            revoked.extend(revoked_serials(&crl, p)?);
            crls.push(crl);
        }
    }
    let mut verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        tls::provider(),
    );
    if !crls.is_empty() {
        verifier = verifier.with_crls(crls);
    }
    let verifier = verifier
        .build()
        .map_err(|e| format!("tls.client_ca / tls.crl: {e}"))?;
    let config = tls::server_builder()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| format!("tls.cert/tls.key: {e}"))?;
    Ok(Current {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        revoked,
    })
}

/// The CRLs of a file, PEM (any number) or DER (one).
fn revocation_lists(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("tls.crl {}: {e}", path.display()))?;
    if bytes.starts_with(b"-----BEGIN") {
        let crls: Vec<_> = CertificateRevocationListDer::pem_slice_iter(&bytes)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("tls.crl {}: {e}", path.display()))?;
        if crls.is_empty() {
            return Err(format!("tls.crl {}: no CRL found", path.display()));
        }
        Ok(crls)
    } else {
        Ok(vec![CertificateRevocationListDer::from(bytes)])
    }
}

fn revoked_serials(
    crl: &CertificateRevocationListDer<'_>,
    path: &Path,
) -> Result<Vec<Revoked>, String> {
    let (_, parsed) = x509_parser::parse_x509_crl(crl.as_ref())
        .map_err(|e| format!("tls.crl {}: {e}", path.display()))?;
    let issuer = parsed.issuer().as_raw().to_vec();
    Ok(parsed
        .iter_revoked_certificates()
        .map(|r| (issuer.clone(), r.raw_serial().to_vec()))
        .collect())
}
