//! kmsd's TOML configuration. Every key is documented, with its default, in
//! `kmsd.example.toml`. Unknown keys are errors: a typo must not silently
//! weaken a deployment.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub listen: Listen,
    pub tls: Tls,
    pub backend: BackendCfg,
    #[serde(default, rename = "token")]
    pub tokens: Vec<TokenCfg>,
    #[serde(default, rename = "identity")]
    pub identities: Vec<IdentityCfg>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// PKCS#11 endpoint, e.g. "127.0.0.1:5696". Port 0 picks a free port.
    pub address: String,
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout_secs: u64,
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_secs: u64,
    #[serde(default = "default_grace")]
    pub context_grace_secs: u64,
    /// Written with the bound address once listening (useful with port 0).
    #[serde(default)]
    pub address_file: Option<PathBuf>,
}

fn default_handshake_timeout() -> u64 {
    10
}
fn default_idle_timeout() -> u64 {
    3600
}
fn default_grace() -> u64 {
    120
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Configured virtual tokens, each mapped onto one backend token.
    Virtual,
    /// Every backend slot exposed 1:1 with its own id and label.
    Transparent,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendCfg {
    pub module: PathBuf,
    #[serde(default = "default_mode")]
    pub mode: Mode,
    /// Transparent mode only: forward C_InitToken, SO login, C_InitPIN and C_SetPIN.
    #[serde(default)]
    pub allow_so_functions: bool,
    /// Environment set before the module is loaded (e.g. SOFTHSM2_CONF).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

fn default_mode() -> Mode {
    Mode::Virtual
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenCfg {
    /// The label clients see (virtual mode); ignored in transparent mode.
    #[serde(default)]
    pub label: Option<String>,
    /// Label of the backend token this maps onto.
    pub backend_label: String,
    /// File holding the backend user PIN (first line).
    #[serde(default)]
    pub pin_file: Option<PathBuf>,
    /// Environment variable holding the backend user PIN.
    #[serde(default)]
    pub pin_env: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityCfg {
    /// Matched against the client certificate's DNS SAN or subject CN.
    pub name: String,
    /// Token labels this identity sees ("*" for all).
    pub tokens: Vec<String>,
    /// Argon2 PHC string of this identity's PIN for C_Login (`kmsd hash-pin`).
    #[serde(default)]
    pub pin_hash: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        let mut cfg: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: shown.clone(),
            message: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        cfg.resolve_paths(base);
        cfg.validate().map_err(|message| ConfigError::Invalid {
            path: shown,
            message,
        })?;
        Ok(cfg)
    }

    /// Relative paths are relative to the config file, not the working directory.
    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.tls.cert);
        fix(&mut self.tls.key);
        fix(&mut self.tls.client_ca);
        if let Some(p) = self.listen.address_file.as_mut() {
            fix(p);
        }
        for t in &mut self.tokens {
            if let Some(p) = t.pin_file.as_mut() {
                fix(p);
            }
        }
    }

    fn validate(&self) -> Result<(), String> {
        if self.backend.mode == Mode::Virtual && self.tokens.is_empty() {
            return Err("virtual mode needs at least one [[token]]".into());
        }
        let mut labels = std::collections::HashSet::new();
        for (i, t) in self.tokens.iter().enumerate() {
            if self.backend.mode == Mode::Virtual {
                let Some(l) = &t.label else {
                    return Err(format!(
                        "[[token]] #{} ({}) has no label",
                        i + 1,
                        t.backend_label
                    ));
                };
                if l.len() > 32 {
                    return Err(format!("[[token]] label {l:?} is longer than 32 bytes"));
                }
                if !labels.insert(l.clone()) {
                    return Err(format!("[[token]] label {l:?} appears twice"));
                }
            }
            if t.pin_file.is_none() && t.pin_env.is_none() && self.backend.mode == Mode::Virtual {
                return Err(format!(
                    "[[token]] {:?} needs pin_file or pin_env",
                    t.backend_label
                ));
            }
        }
        if self.identities.is_empty() {
            return Err("no [[identity]]: no client could ever connect".into());
        }
        for id in &self.identities {
            if let Some(h) = &id.pin_hash {
                argon2::PasswordHash::new(h).map_err(|e| {
                    format!(
                        "[[identity]] {:?}: pin_hash is not a PHC string: {e}",
                        id.name
                    )
                })?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_is_valid() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kmsd.example.toml");
        let cfg = Config::load(&p).unwrap();
        assert_eq!(cfg.tokens.len(), 2);
        assert_eq!(cfg.listen.context_grace_secs, 120);
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let dir = std::env::temp_dir().join(format!("kmsd-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("bad.toml");
        std::fs::write(&p, "[listen]\naddress = \"x\"\nbogus = 1\n").unwrap();
        let e = Config::load(&p).unwrap_err().to_string();
        assert!(
            e.contains("bad.toml") && e.contains("line 3") && e.contains("bogus"),
            "{e}"
        );
        std::fs::write(&p, "[listen]\naddress = \"x\"\n[tls]\ncert=\"a\"\nkey=\"b\"\nclient_ca=\"c\"\n[backend]\nmodule=\"m\"\n").unwrap();
        let e = Config::load(&p).unwrap_err().to_string();
        assert!(e.contains("needs at least one [[token]]"), "{e}");
    }
}
