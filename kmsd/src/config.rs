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
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub login: LoginCfg,
    #[serde(default)]
    pub audit: AuditCfg,
    pub policy: PolicyCfg,
    #[serde(default)]
    pub store: StoreCfg,
    #[serde(default)]
    pub keys: KeysCfg,
    #[serde(default)]
    pub quotas: crate::authz::quota::QuotasCfg,
    #[serde(default)]
    pub dual_control: crate::authz::approvals::DualControlCfg,
}

/// `[policy]`: the Cedar policy file and the creation constraints.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyCfg {
    /// Cedar policy file, relative to this config file. Required: kmsd
    /// denies what no policy permits.
    pub path: PathBuf,
    #[serde(flatten)]
    pub min: crate::authz::constraints::MinSizes,
}

/// `[store]`: kmsd's own state.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreCfg {
    /// SQLite database, relative to this config file.
    pub path: PathBuf,
}

impl Default for StoreCfg {
    fn default() -> StoreCfg {
        StoreCfg {
            path: PathBuf::from("kmsd.db"),
        }
    }
}

/// `[keys]`: the key lifecycle.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysCfg {
    /// How long a destroyed token key stays restorable before its HSM
    /// object is destroyed.
    pub destroy_window_secs: u64,
    /// Scheduled rotation: the age at which kmsd rotates a key's current
    /// version, by key type, in seconds (0: never). A key's tag
    /// `rotate=<duration>` (`30d`, `12h`) or `rotate=never` overrides it.
    pub rotate_rsa_secs: u64,
    pub rotate_aes_secs: u64,
    pub rotate_ed25519_secs: u64,
    pub rotate_ec_secs: u64,
    pub rotate_generic_secret_secs: u64,
}

impl Default for KeysCfg {
    fn default() -> KeysCfg {
        const DAY: u64 = 24 * 3600;
        KeysCfg {
            destroy_window_secs: 7 * DAY,
            rotate_rsa_secs: 90 * DAY,
            rotate_aes_secs: 90 * DAY,
            rotate_ed25519_secs: 365 * DAY,
            rotate_ec_secs: 0,
            rotate_generic_secret_secs: 0,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// PKCS#11 endpoint, e.g. "127.0.0.1:5696". Port 0 picks a free port.
    pub address: String,
    /// TCP accept to the end of the TLS handshake.
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout_secs: u64,
    /// End of the handshake to the whole `Hello` frame.
    #[serde(default = "default_first_frame_timeout")]
    pub first_frame_timeout_secs: u64,
    /// Between requests.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_secs: u64,
    /// First byte of a request to its last.
    #[serde(default = "default_request_read_timeout")]
    pub request_read_timeout_secs: u64,
    /// Writing one response.
    #[serde(default = "default_response_write_timeout")]
    pub response_write_timeout_secs: u64,
    #[serde(default = "default_grace")]
    pub context_grace_secs: u64,
    /// Written with the bound address once listening (useful with port 0).
    #[serde(default)]
    pub address_file: Option<PathBuf>,
    /// The admin API (HTTPS, same TLS and client CA), e.g. "127.0.0.1:5697".
    /// Not served when absent.
    #[serde(default)]
    pub admin_address: Option<String>,
    /// Written with the admin API's bound address once listening.
    #[serde(default)]
    pub admin_address_file: Option<PathBuf>,
}

fn default_handshake_timeout() -> u64 {
    5
}
fn default_first_frame_timeout() -> u64 {
    10
}
fn default_idle_timeout() -> u64 {
    3600
}
fn default_request_read_timeout() -> u64 {
    30
}
fn default_response_write_timeout() -> u64 {
    30
}
fn default_grace() -> u64 {
    120
}

/// Resource limits, per identity and in total. Each per-identity limit is
/// below its total, so that one identity can never take all of it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// TLS handshakes in progress (clients not yet authenticated), in total
    /// and from one source address.
    pub max_pending_handshakes: usize,
    pub max_pending_handshakes_per_address: usize,
    /// Authenticated connections, in total and per identity.
    pub max_connections: usize,
    pub max_connections_per_identity: usize,
    /// Client contexts (library instances) per identity.
    pub max_contexts_per_identity: usize,
    /// Open sessions per identity.
    pub max_sessions_per_identity: usize,
    /// Session objects per identity (created and not yet destroyed).
    pub max_objects_per_identity: usize,
    /// Requests being executed at once, in total and per identity; the rest wait.
    pub max_in_flight: usize,
    pub max_in_flight_per_identity: usize,
    /// How long a request may wait for an execution slot before it is refused.
    pub queue_timeout_secs: u64,
    /// MiB that large requests (over 64 KiB in or out) may hold at once, in
    /// total and per identity; a large request waits for its share.
    pub max_large_request_mib: usize,
    pub max_large_request_mib_per_identity: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_pending_handshakes: 256,
            max_pending_handshakes_per_address: 32,
            max_connections: 4096,
            max_connections_per_identity: 256,
            max_contexts_per_identity: 64,
            max_sessions_per_identity: 1024,
            max_objects_per_identity: 10_000,
            max_in_flight: 64,
            max_in_flight_per_identity: 16,
            queue_timeout_secs: 30,
            max_large_request_mib: 128,
            max_large_request_mib_per_identity: 32,
        }
    }
}

/// The audit log (`[audit]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditCfg {
    /// JSON Lines file, relative to this config file.
    pub path: PathBuf,
    /// `always` (fsync each record), `batch` (one fsync shared by the
    /// records of concurrent calls, before any of them is answered) or
    /// `off` (warned at start).
    pub fsync: crate::audit::log::Fsync,
    /// A signed checkpoint after this many records...
    pub checkpoint_every: u64,
    /// ...or when this many seconds have passed since the last one.
    pub checkpoint_secs: u64,
    /// File holding the Ed25519 checkpoint key: a 32-byte seed in hex,
    /// mode 0600. Without it no checkpoints are written (warned at start).
    pub signing_key: Option<PathBuf>,
    /// Rotate the file when it reaches this size (0: never). The chain
    /// goes on in the new file.
    pub max_bytes: u64,
}

impl Default for AuditCfg {
    fn default() -> AuditCfg {
        AuditCfg {
            path: PathBuf::from("audit.log"),
            fsync: crate::audit::log::Fsync::Batch,
            checkpoint_every: 1000,
            checkpoint_secs: 60,
            signing_key: None,
            max_bytes: 100 << 20,
        }
    }
}

/// `C_Login` checks made by kmsd (the identities' PINs).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoginCfg {
    /// Wrong PINs in a row before the identity is locked out.
    pub max_failures: u32,
    /// How long a lockout lasts.
    pub lockout_secs: u64,
    /// PIN hashes computed at once (each Argon2 check holds its memory).
    pub max_concurrent_checks: usize,
}

impl Default for LoginCfg {
    fn default() -> LoginCfg {
        LoginCfg {
            max_failures: 5,
            lockout_secs: 300,
            max_concurrent_checks: 2,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
    /// Certificate revocation list(s) of the client CA (PEM or DER); re-read on SIGHUP.
    #[serde(default)]
    pub crl: Vec<PathBuf>,
    /// A CA certificate and key kmsd issues client certificates with
    /// (`kmsctl identities issue-cert`); dev mode sets its dev CA. Without
    /// them, register certificates issued elsewhere by SPKI pin.
    #[serde(default)]
    pub issuing_ca_cert: Option<PathBuf>,
    #[serde(default)]
    pub issuing_ca_key: Option<PathBuf>,
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
    /// Vendor mechanisms whose parameter holds no pointer and no handle:
    /// forwarded as raw bytes. Any other vendor parameter is refused.
    #[serde(default)]
    pub raw_vendor_mechanisms: Vec<u64>,
}

fn default_mode() -> Mode {
    Mode::Virtual
}

#[derive(Debug, Clone, Deserialize)]
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
    /// Matched against the client certificate's DNS or URI SANs, or its
    /// subject CN when it has no such SAN. Exactly one identity must match.
    pub name: String,
    /// Token labels this identity sees ("*" for all).
    pub tokens: Vec<String>,
    /// Roles policy knows it by (`Kms::Role::"admin"`): `user`, `admin`,
    /// `auditor`, or any name the policy uses.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Argon2 PHC string of this identity's PIN for C_Login (`kmsd --hash-pin`).
    #[serde(default)]
    pub pin_hash: Option<String>,
    /// SHA-256 (hex) of one certificate's SubjectPublicKeyInfo: only a
    /// certificate with that key (still issued by `client_ca`) is this
    /// identity, whatever names it carries (`kmsctl identities pin CERT`).
    #[serde(default)]
    pub spki_sha256: Option<String>,
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

    /// Files whose contents are secrets: the server key and the backend PIN files.
    pub fn secret_files(&self) -> Vec<&Path> {
        let mut v: Vec<&Path> = vec![&self.tls.key];
        v.extend(self.tokens.iter().filter_map(|t| t.pin_file.as_deref()));
        v.extend(self.audit.signing_key.as_deref());
        v.extend(self.tls.issuing_ca_key.as_deref());
        v
    }

    /// Refuses secret files that group or others may read or write: a
    /// deployment mistake that must stop the start, naming the file.
    pub fn check_secret_files(&self) -> Result<(), String> {
        use std::os::unix::fs::PermissionsExt;
        for p in self.secret_files() {
            let meta = std::fs::metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(format!(
                    "{}: holds a secret but has mode {mode:04o}; allow the owner only (chmod 600)",
                    p.display()
                ));
            }
        }
        Ok(())
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
        for p in &mut self.tls.crl {
            fix(p);
        }
        for p in [&mut self.tls.issuing_ca_cert, &mut self.tls.issuing_ca_key]
            .into_iter()
            .flatten()
        {
            fix(p);
        }
        if let Some(p) = self.listen.address_file.as_mut() {
            fix(p);
        }
        if let Some(p) = self.listen.admin_address_file.as_mut() {
            fix(p);
        }
        fix(&mut self.audit.path);
        fix(&mut self.policy.path);
        fix(&mut self.store.path);
        if let Some(p) = self.audit.signing_key.as_mut() {
            fix(p);
        }
        for t in &mut self.tokens {
            if let Some(p) = t.pin_file.as_mut() {
                fix(p);
            }
        }
    }

    fn validate(&self) -> Result<(), String> {
        self.quotas.validate()?;
        self.dual_control.validate()?;
        if self.tls.issuing_ca_cert.is_some() != self.tls.issuing_ca_key.is_some() {
            return Err("tls.issuing_ca_cert and tls.issuing_ca_key go together".into());
        }
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
        for m in &self.backend.raw_vendor_mechanisms {
            if !kmsp11_proto::mechanism::is_vendor(*m) {
                return Err(format!(
                    "backend.raw_vendor_mechanisms: {m:#x} is not a vendor mechanism (>= 0x80000000)"
                ));
            }
        }
        let l = &self.limits;
        if l.max_large_request_mib_per_identity < 16 {
            return Err(
                "limits.max_large_request_mib_per_identity must be at least 16 (one full frame)"
                    .into(),
            );
        }
        for (what, per, total) in [
            (
                "connections",
                l.max_connections_per_identity,
                l.max_connections,
            ),
            ("in_flight", l.max_in_flight_per_identity, l.max_in_flight),
            (
                "large_request_mib",
                l.max_large_request_mib_per_identity,
                l.max_large_request_mib,
            ),
        ] {
            if per == 0 || per > total {
                return Err(format!(
                    "limits.max_{what}_per_identity ({per}) must be between 1 and limits.max_{what} ({total})"
                ));
            }
        }
        if self.login.max_failures == 0 || self.login.max_concurrent_checks == 0 {
            return Err(
                "login.max_failures and login.max_concurrent_checks must be at least 1".into(),
            );
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
        std::fs::write(&p, "[listen]\naddress = \"x\"\n[tls]\ncert=\"a\"\nkey=\"b\"\nclient_ca=\"c\"\n[backend]\nmodule=\"m\"\n[policy]\npath=\"p.cedar\"\n").unwrap();
        let e = Config::load(&p).unwrap_err().to_string();
        assert!(e.contains("needs at least one [[token]]"), "{e}");
    }
}
