//! The TLS profile both ends speak: TLS 1.3 only, the ring provider, and
//! certificates from PEM files on both sides. kmsd adds its client
//! verifier (with CRLs) to [`server_builder`]; the library and test clients
//! use [`client_config`]. Errors name what the file is for and the file.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, ConfigBuilder, RootCertStore, ServerConfig, WantsVerifier};

use crate::pem;

/// The crypto provider of every kmsp11 TLS connection.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The trust anchors of a PEM file.
pub fn roots(path: &Path, what: &str) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for c in pem::certificates(path, what)? {
        roots
            .add(c)
            .map_err(|e| format!("{what} {}: {e}", path.display()))?;
    }
    Ok(roots)
}

/// A server configuration of the profile, before its client verifier.
pub fn server_builder() -> Result<ConfigBuilder<ServerConfig, WantsVerifier>, String> {
    ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())
}

/// A client configuration of the profile: kmsd's CA, our certificate and
/// key. `names` are the file's names in the configuration, for errors.
pub fn client_config(
    ca: &Path,
    cert: &Path,
    key: &Path,
    names: [&str; 3],
) -> Result<ClientConfig, String> {
    let roots = roots(ca, names[0])?;
    let certs = pem::certificates(cert, names[1])?;
    let key = pem::private_key(key, names[2])?;
    ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .map_err(|e| format!("{}/{}: {e}", names[1], names[2]))
}
