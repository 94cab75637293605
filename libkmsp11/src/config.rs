//! The library's configuration file: `KMSP11_CONFIG`, else
//! `~/.config/kmsp11/config.toml`, else `/etc/kmsp11/config.toml`.
//! Environment variables get lost across sudo and ssh; files do not.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// kmsd addresses, "host:port"; tried in order.
    pub endpoints: Vec<String>,
    /// Name the server certificate must carry; default: the endpoint's host.
    #[serde(default)]
    pub server_name: Option<String>,
    /// CA certificate(s) that sign kmsd's certificate (PEM).
    pub ca: PathBuf,
    /// This client's certificate chain (PEM).
    pub cert: PathBuf,
    /// This client's private key (PEM).
    pub key: PathBuf,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
    #[serde(default = "default_request_timeout")]
    pub request_timeout_ms: u64,
    /// Connections to kmsd this library instance holds at most: a thread
    /// that finds none free waits for one (within the request timeout)
    /// rather than opening more. kmsd runs at most
    /// `max_in_flight_per_identity` requests of an identity at once anyway.
    #[serde(default = "default_connections")]
    pub max_connections: usize,
    /// Idle connections kept for reuse when no thread waits for one.
    #[serde(default = "default_pool")]
    pub max_idle_connections: usize,
}

fn default_connect_timeout() -> u64 {
    5_000
}
fn default_request_timeout() -> u64 {
    120_000
}
fn default_pool() -> usize {
    16
}
fn default_connections() -> usize {
    32
}

impl Config {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// Finds and reads the configuration; the error names the file.
    pub fn locate() -> Result<(PathBuf, Config), String> {
        let path = match std::env::var_os("KMSP11_CONFIG") {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => {
                let home = std::env::var_os("HOME")
                    .map(|h| Path::new(&h).join(".config/kmsp11/config.toml"));
                match home.filter(|p| p.exists()) {
                    Some(p) => p,
                    None => PathBuf::from("/etc/kmsp11/config.toml"),
                }
            }
        };
        let cfg = Config::load(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok((path, cfg))
    }

    pub fn load(path: &Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!("cannot read: {e} (set KMSP11_CONFIG to the library's config file)")
        })?;
        let mut cfg: Config = toml::from_str(&text).map_err(|e| e.to_string())?;
        if cfg.endpoints.is_empty() {
            return Err("endpoints is empty".into());
        }
        if cfg.max_connections == 0 {
            return Err("max_connections must be at least 1".into());
        }
        cfg.max_idle_connections = cfg.max_idle_connections.min(cfg.max_connections);
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [&mut cfg.ca, &mut cfg.cert, &mut cfg.key] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(cfg)
    }
}
