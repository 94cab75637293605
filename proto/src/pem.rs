//! Certificates and keys from PEM files, for the TLS configurations on both
//! sides. Errors name what the file is for and the file.

use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Every certificate of a PEM file; none at all is an error.
pub fn certificates(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|i| i.collect::<Result<_, _>>())
        .map_err(|e| format!("{what} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{what} {}: no certificate found", path.display()));
    }
    Ok(certs)
}

/// The private key of a PEM file.
pub fn private_key(path: &Path, what: &str) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| format!("{what} {}: {e}", path.display()))
}

/// A byte string in a fixed, blank-padded field of `N` bytes, as PKCS#11's
/// info structures hold text (longer input is cut).
pub fn pad<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut out = [b' '; N];
    let n = b.len().min(N);
    out[..n].copy_from_slice(&b[..n]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pad_fills_with_blanks_and_cuts() {
        assert_eq!(&pad::<4>(b"ab"), b"ab  ");
        assert_eq!(&pad::<2>(b"abc"), b"ab");
    }

    #[test]
    fn errors_name_the_file() {
        let e = certificates(Path::new("/nonexistent.pem"), "tls.cert").unwrap_err();
        assert!(e.contains("tls.cert /nonexistent.pem"), "{e}");
    }
}
