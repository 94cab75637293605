//! The admin API over HTTPS with a client certificate (ureq, rustls).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;
use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig};

/// How kmsctl reaches kmsd: `KMSCTL_CONFIG` (or `--config`), then flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `https://host:port` of the admin API.
    pub url: Option<String>,
    /// The CA that signed kmsd's server certificate.
    pub ca: Option<PathBuf>,
    /// This administrator's client certificate and key (PEM).
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// What went wrong, with the exit status it means.
#[derive(Debug)]
pub enum Failure {
    /// Bad configuration or arguments (exit 2).
    Usage(String),
    /// kmsd could not be reached (exit 3).
    Unreachable(String),
    /// kmsd refused: the caller lacks the role (exit 4).
    Refused(String),
    /// kmsd answered with another error (exit 5).
    Rejected(String),
}

impl Failure {
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Usage(_) => 2,
            Failure::Unreachable(_) => 3,
            Failure::Refused(_) => 4,
            Failure::Rejected(_) => 5,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Usage(m) => write!(f, "{m}"),
            Failure::Unreachable(m) => write!(f, "kmsd unreachable: {m}"),
            Failure::Refused(m) => write!(f, "refused: {m}"),
            Failure::Rejected(m) => write!(f, "{m}"),
        }
    }
}

pub struct Client {
    agent: ureq::Agent,
    url: String,
}

fn read(p: &Path, what: &str) -> Result<Vec<u8>, Failure> {
    std::fs::read(p).map_err(|e| Failure::Usage(format!("{what} {}: {e}", p.display())))
}

impl Client {
    pub fn new(cfg: &Config) -> Result<Client, Failure> {
        let need = |v: &Option<PathBuf>, what: &str| {
            v.clone().ok_or_else(|| {
                Failure::Usage(format!(
                    "no {what}: set it in the file KMSCTL_CONFIG names, or give --{what}"
                ))
            })
        };
        let url = cfg.url.clone().ok_or_else(|| {
            Failure::Usage("no url: set it in the file KMSCTL_CONFIG names, or give --url".into())
        })?;
        let ca = read(&need(&cfg.ca, "ca")?, "ca")?;
        let cert = read(&need(&cfg.cert, "cert")?, "cert")?;
        let key = read(&need(&cfg.key, "key")?, "key")?;
        let roots: Vec<Certificate<'static>> = ureq::tls::parse_pem(&ca)
            .filter_map(|i| match i {
                Ok(PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        let chain: Vec<Certificate<'static>> = ureq::tls::parse_pem(&cert)
            .filter_map(|i| match i {
                Ok(PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        let key: PrivateKey<'static> = ureq::tls::parse_pem(&key)
            .find_map(|i| match i {
                Ok(PemItem::PrivateKey(k)) => Some(k),
                _ => None,
            })
            .ok_or_else(|| Failure::Usage("key: no private key in the file".into()))?;
        if roots.is_empty() || chain.is_empty() {
            return Err(Failure::Usage(
                "ca or cert: no certificate in the file".into(),
            ));
        }
        let tls = TlsConfig::builder()
            .root_certs(RootCerts::Specific(Arc::new(roots)))
            .client_cert(Some(ClientCert::new_with_certs(&chain, key)))
            .build();
        let agent = ureq::Agent::config_builder()
            .tls_config(tls)
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(30)))
            .build()
            .new_agent();
        Ok(Client {
            agent,
            url: url.trim_end_matches('/').to_string(),
        })
    }

    /// GET a JSON answer.
    pub fn get(&self, path: &str) -> Result<Value, Failure> {
        let r = self.agent.get(format!("{}{path}", self.url)).call();
        answer(r)
    }

    /// GET a text answer.
    pub fn get_text(&self, path: &str) -> Result<String, Failure> {
        let r = self
            .agent
            .get(format!("{}{path}", self.url))
            .call()
            .map_err(|e| Failure::Unreachable(e.to_string()))?;
        let status = r.status().as_u16();
        let mut body = r.into_body();
        let text = body
            .read_to_string()
            .map_err(|e| Failure::Unreachable(e.to_string()))?;
        if status >= 400 {
            return Err(error_of(status, &text));
        }
        Ok(text)
    }

    /// POST JSON (or nothing) and read a JSON answer.
    pub fn post(&self, path: &str, body: Option<Value>) -> Result<Value, Failure> {
        let req = self.agent.post(format!("{}{path}", self.url));
        let r = match body {
            Some(b) => req.send_json(b),
            None => req.send_empty(),
        };
        answer(r)
    }

    /// POST text and read a JSON answer.
    pub fn post_text(&self, path: &str, text: &str) -> Result<Value, Failure> {
        let r = self
            .agent
            .post(format!("{}{path}", self.url))
            .header("content-type", "text/plain")
            .send(text);
        answer(r)
    }
}

fn answer(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<Value, Failure> {
    let r = r.map_err(|e| Failure::Unreachable(e.to_string()))?;
    let status = r.status().as_u16();
    let text = r
        .into_body()
        .read_to_string()
        .map_err(|e| Failure::Unreachable(e.to_string()))?;
    if status >= 400 {
        return Err(error_of(status, &text));
    }
    serde_json::from_str(&text)
        .map_err(|e| Failure::Rejected(format!("kmsd answered what is not JSON: {e}")))
}

/// kmsd's `{"error", "message"}` as a failure.
fn error_of(status: u16, text: &str) -> Failure {
    let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let message = v["message"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| format!("HTTP {status}"));
    if status == 403 {
        Failure::Refused(message)
    } else {
        Failure::Rejected(message)
    }
}
