//! End-to-end test harness: a real kmsd process in dev mode on
//! 127.0.0.1:0 over a fresh SoftHSM token store, the real libkmsp11.so, and
//! SoftHSM loaded directly for comparison.
#![allow(clippy::missing_safety_doc, clippy::undocumented_unsafe_blocks)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod raw;
pub mod wire;

/// The dev/test user PIN (softhsm/init-tokens.sh).
pub const PIN: &str = "123456";
pub const SO_PIN: &str = "87654321";

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The build directory holding kmsd and libkmsp11.so: `KMSP11_BIN`, else
/// next to this executable (a tool in target/<profile>/) or one level up (a
/// test binary in target/<profile>/deps/).
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("KMSP11_BIN") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().unwrap();
    let here = exe.parent().unwrap().to_path_buf();
    if here.join("kmsd").exists() {
        return here;
    }
    here.parent().unwrap().to_path_buf()
}

pub fn libkmsp11() -> PathBuf {
    built("libkmsp11.so")
}

pub fn kmsd_bin() -> PathBuf {
    built("kmsd")
}

pub fn kmsctl_bin() -> PathBuf {
    built("kmsctl")
}

/// An artefact of `cargo build --workspace`.
fn built(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} missing: run `cargo build --workspace` first",
        p.display()
    );
    p
}

/// DER of the P-256 curve's OID (`CKA_EC_PARAMS`).
pub const P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// DER of Ed25519's OID.
pub const ED25519: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];

pub fn softhsm_module() -> PathBuf {
    kmsd::dev::softhsm_module().expect("libsofthsm2.so not found: apt-get install -y softhsm2")
}

/// A fresh SoftHSM token store with the given token labels; returns the
/// softhsm2.conf path. Uses the same script as dev mode and CI.
pub fn softhsm_store(dir: &Path, labels: &[&str]) -> PathBuf {
    let out = Command::new("bash")
        .arg(root().join("softhsm/init-tokens.sh"))
        .arg(dir)
        .args(labels)
        .output()
        .expect("run softhsm/init-tokens.sh");
    assert!(
        out.status.success(),
        "init-tokens.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir.join("softhsm2.conf")
}

/// A kmsd process in dev mode, killed on drop.
pub struct Kmsd {
    pub dir: PathBuf,
    child: Option<Child>,
    pub addr: String,
    custom: bool,
    env: Vec<(String, String)>,
    _tmp: Option<tempfile::TempDir>,
}

impl Kmsd {
    pub fn start() -> Kmsd {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("dev");
        let mut k = Kmsd {
            dir,
            child: None,
            addr: String::new(),
            custom: false,
            env: Vec::new(),
            _tmp: Some(tmp),
        };
        k.spawn("127.0.0.1:0");
        k
    }

    /// kmsd with a configuration of the caller's, written next to a dev
    /// setup (so its certificates and SoftHSM store exist). `cfg` gets the dev
    /// folder's path for `{dir}` and the SoftHSM module for `{module}`.
    pub fn start_with_config(cfg: &str) -> Kmsd {
        let mut k = Kmsd::start();
        k.stop();
        let text = cfg
            .replace("{dir}", &k.dir.display().to_string())
            .replace("{module}", &softhsm_module().display().to_string());
        std::fs::write(k.dir.join("custom.toml"), text).unwrap();
        k.custom = true;
        k.spawn("127.0.0.1:0");
        k
    }

    fn spawn(&mut self, addr: &str) {
        let _ = std::fs::remove_file(self.dir.join("address"));
        let _ = std::fs::remove_file(self.dir.join("admin-address"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.parent().unwrap().join("kmsd.log"))
            .unwrap();
        let mut cmd = Command::new(kmsd_bin());
        if self.custom {
            cmd.arg("--config").arg(self.dir.join("custom.toml"));
        } else {
            cmd.arg("--dev").arg(&self.dir);
        }
        cmd.envs(self.env.iter().map(|(a, b)| (a, b)))
            .arg("--address")
            .arg(addr)
            .stdout(Stdio::null())
            .stderr(log);
        let child = spawn_tied(cmd).expect("spawn kmsd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(a) = std::fs::read_to_string(self.dir.join("address")) {
                if !a.is_empty() && (self.custom || self.dir.join("kmsp11.toml").exists()) {
                    self.addr = a;
                    break;
                }
            }
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("kmsd exited early ({st}); log: {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "kmsd did not start; log: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // The client config is written right after the address; give it a moment to be complete.
        std::thread::sleep(Duration::from_millis(50));
        if self.custom {
            self.rewrite_client_configs();
        }
    }

    /// With a custom config, kmsd writes no client configs: the dev ones
    /// are pointed at this run's addresses (the admin API's, when it serves one).
    fn rewrite_client_configs(&self) {
        kmsd::dev::client_config(&self.dir, &self.addr).unwrap();
        let text = std::fs::read_to_string(self.dir.join("custom.toml")).unwrap_or_default();
        if !text.contains("admin_address") {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(a) = std::fs::read_to_string(self.dir.join("admin-address")) {
                if !a.is_empty() {
                    kmsd::dev::kmsctl_configs(&self.dir, &a).unwrap();
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no admin-address; log: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.parent().unwrap().join("kmsd.log")).unwrap_or_default()
    }

    /// The library config for the dev client.
    pub fn client_config(&self) -> PathBuf {
        self.dir.join("kmsp11.toml")
    }

    /// A library config in `dir` for this kmsd's current address, presenting
    /// `cert` and `key` (the dev client's when `None`).
    pub fn client_config_as(&self, dir: &Path, cert_key: Option<(&Path, &Path)>) -> PathBuf {
        let (cert, key) = match cert_key {
            Some((c, k)) => (c.to_path_buf(), k.to_path_buf()),
            None => (self.dir.join("client.pem"), self.dir.join("client.key")),
        };
        let cfg = dir.join("client.toml");
        let text = format!(
            "endpoints = [\"{}\"]\nserver_name = \"localhost\"\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
            self.addr,
            self.dir.join("ca.pem").display(),
            cert.display(),
            key.display()
        );
        std::fs::write(&cfg, text).unwrap();
        cfg
    }

    pub fn softhsm_conf(&self) -> PathBuf {
        self.dir.join("softhsm/softhsm2.conf")
    }

    /// kmsd in dev mode without dual control for destroying token keys
    /// (dev mode's one guarded operation), for suites about something else.
    pub fn start_unguarded() -> Kmsd {
        Kmsd::start_edited(|t, _| unguarded(&t))
    }

    /// kmsd with the dev configuration changed by `edit`, which also gets
    /// the dev folder (its certificates and SoftHSM store are used as they are).
    pub fn start_edited(edit: impl FnOnce(String, &Path) -> String) -> Kmsd {
        Kmsd::start_edited_env(edit, &[])
    }

    /// As [`Kmsd::start_edited`], with extra environment for kmsd (`KMSD_LOG`, ...).
    pub fn start_edited_env(
        edit: impl FnOnce(String, &Path) -> String,
        env: &[(&str, &str)],
    ) -> Kmsd {
        let mut k = Kmsd::start();
        k.stop();
        let dev = std::fs::read_to_string(k.dir.join("kmsd.toml")).unwrap();
        std::fs::write(k.dir.join("custom.toml"), edit(dev, &k.dir)).unwrap();
        k.custom = true;
        k.env = env
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        k.spawn("127.0.0.1:0");
        k
    }

    /// The admin API's origin, `https://localhost:PORT`.
    pub fn admin_origin(&self) -> String {
        let addr = std::fs::read_to_string(self.dir.join("admin-address")).expect("admin-address");
        format!(
            "https://localhost:{}",
            addr.trim().rsplit(':').next().unwrap()
        )
    }

    /// kmsctl with the dev config `cfg` (`kmsctl-admin.toml`, ...): (exit
    /// status, stdout + stderr).
    pub fn kmsctl(&self, cfg: &str, args: &[&str]) -> (i32, String) {
        let out = Command::new(kmsctl_bin())
            .args(args)
            .env("KMSCTL_CONFIG", self.dir.join(cfg))
            .output()
            .unwrap();
        let mut s = String::from_utf8_lossy(&out.stdout).to_string();
        s.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.code().unwrap_or(-1), s)
    }

    /// pkcs11-tool with the library, logged in on kms-a as the dev client;
    /// must succeed: its output.
    pub fn pkcs11_tool(&self, args: &[&str]) -> String {
        let (ok, out) = run(Command::new("pkcs11-tool")
            .arg("--module")
            .arg(libkmsp11())
            .args(["--token-label", "kms-a", "-l", "-p", PIN])
            .args(args)
            .env("KMSP11_CONFIG", self.client_config()));
        assert!(ok, "pkcs11-tool {args:?}: {out}");
        out
    }

    /// An EC P-256 token key pair made with pkcs11-tool, with its own
    /// `CKA_ID` (kmsd tells EC private keys on SoftHSM apart by it); the
    /// tool's output.
    pub fn ec_pair(&self, id: &str, label: &str) -> String {
        self.pkcs11_tool(&[
            "--keypairgen",
            "--key-type",
            "EC:prime256v1",
            "--id",
            id,
            "--label",
            label,
        ])
    }

    /// kmsctl with dev config `cfg`, `--output json`, which must succeed:
    /// its parsed answer.
    pub fn kmsctl_json(&self, cfg: &str, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.extend(["--output", "json"]);
        let (code, out) = self.kmsctl(cfg, &a);
        assert_eq!(code, 0, "kmsctl {args:?}: {out}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    }

    /// curl on the admin API as dev identity `who` (the name of its
    /// certificate files: `client` for dev-client, `dev-admin`, `dev-user`,
    /// ...), with extra headers (`"Origin: ..."`): (HTTP status, body).
    pub fn admin_api(
        &self,
        who: &str,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[&str],
    ) -> (u16, String) {
        let mut c = Command::new("curl");
        c.args(["-sS", "-X", method, "-w", "\n%{http_code}"])
            .arg("--cacert")
            .arg(self.dir.join("ca.pem"))
            .arg("--cert")
            .arg(self.dir.join(format!("{who}.pem")))
            .arg("--key")
            .arg(self.dir.join(format!("{who}.key")));
        for h in headers {
            c.args(["-H", h]);
        }
        // The body from a file: a large one does not fit an argument list.
        let file = body.map(|b| {
            static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let f = self
                .dir
                .join(format!("request-{}-{n}.json", std::process::id()));
            std::fs::write(&f, b).unwrap();
            f
        });
        if let Some(f) = &file {
            c.args(["-H", "content-type: application/json", "--data-binary"])
                .arg(format!("@{}", f.display()));
        }
        c.arg(format!("{}{path}", self.admin_origin()));
        let (_, out) = run(&mut c);
        if let Some(f) = file {
            let _ = std::fs::remove_file(f);
        }
        let (body, code) = out.trim_end().rsplit_once('\n').unwrap_or(("", out.trim()));
        (code.parse().unwrap_or(0), body.to_string())
    }

    /// The process id of the running kmsd.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("kmsd running").id()
    }

    /// A field of /proc/<pid>/status in KiB (`VmHWM` is the peak resident size).
    pub fn status_kib(&self, field: &str) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        s.lines()
            .find(|l| l.starts_with(&format!("{field}:")))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc status"))
    }

    /// Sends a signal to kmsd (`libc::SIGHUP`, ...).
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.pid() as i32, sig) }, 0);
    }

    /// Waits until the log has a line containing all of `parts`.
    pub fn wait_for_log(&self, parts: &[&str], within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            if let Some(l) = self
                .log()
                .lines()
                .find(|l| parts.iter().all(|p| l.contains(p)))
            {
                return l.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {parts:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops and starts kmsd on the same address and token store.
    pub fn restart(&mut self) {
        self.stop();
        let addr = self.addr.clone();
        self.spawn(&addr);
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Kmsd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A module loaded and initialised with `CKF_OS_LOCKING_OK`, as most clients do.
/// Spawns `cmd` so that it ends with this process: from one thread that
/// lives as long as the process, with `PR_SET_PDEATHSIG` (which fires when
/// the spawning *thread* ends). A kmsd a suite keeps in a static, which is
/// never dropped, then still ends with the test binary.
pub fn spawn_tied(cmd: Command) -> std::io::Result<Child> {
    use std::sync::mpsc;
    type Job = (Command, mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: std::sync::OnceLock<std::sync::Mutex<mpsc::Sender<Job>>> =
        std::sync::OnceLock::new();
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::spawn(move || {
            for (mut cmd, answer) in rx {
                use std::os::unix::process::CommandExt;
                // SAFETY: prctl is async-signal-safe and touches no memory
                // of the parent.
                unsafe {
                    cmd.pre_exec(|| {
                        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                        Ok(())
                    });
                }
                let _ = answer.send(cmd.spawn());
            }
        });
        std::sync::Mutex::new(tx)
    });
    let (answer, result) = mpsc::channel();
    tx.lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((cmd, answer))
        .map_err(|_| std::io::Error::other("spawner thread gone"))?;
    result
        .recv()
        .map_err(|_| std::io::Error::other("spawner thread gone"))?
}

pub fn initialized(module: &Path) -> cryptoki::context::Pkcs11 {
    use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
    let p = Pkcs11::new(module).unwrap();
    p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    p
}

/// A read-write session logged in as the user with the dev PIN.
pub fn user_session(
    p: &cryptoki::context::Pkcs11,
    slot: cryptoki::slot::Slot,
) -> cryptoki::session::Session {
    use cryptoki::session::UserType;
    use cryptoki::types::AuthPin;
    let s = p.open_rw_session(slot).unwrap();
    s.login(UserType::User, Some(&AuthPin::new(PIN.into())))
        .unwrap();
    s
}

/// Runs `f` in a logged-in read-write session on kms-a through
/// libkmsp11, with library config `config`. The library is a
/// process-wide singleton: callers in one test binary take turns.
pub fn through_library<R>(
    config: &Path,
    f: impl FnOnce(&cryptoki::context::Pkcs11, &cryptoki::session::Session) -> R,
) -> R {
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    std::env::set_var("KMSP11_CONFIG", config);
    let p = initialized(&libkmsp11());
    let s = user_session(&p, slot_by_label(&p, "kms-a"));
    let r = f(&p, &s);
    drop(s);
    p.finalize().unwrap();
    r
}

/// A cryptoki result's CK_RV by its name in cryptoki ("Ok" for success).
pub fn ck<T>(r: &Result<T, cryptoki::error::Error>) -> String {
    match r {
        Ok(_) => "Ok".into(),
        Err(cryptoki::error::Error::Pkcs11(e, _)) => format!("{e:?}"),
        Err(e) => format!("{e}"),
    }
}

/// The slot whose token carries this label.
pub fn slot_by_label(p: &cryptoki::context::Pkcs11, label: &str) -> cryptoki::slot::Slot {
    p.get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| {
            p.get_token_info(*s)
                .map(|t| t.label() == label)
                .unwrap_or(false)
        })
        .unwrap_or_else(|| panic!("no token labelled {label}"))
}

/// A dev configuration with no operation under dual control.
pub fn unguarded(toml: &str) -> String {
    let dev = "guarded = [\"destroy\"]";
    assert!(toml.contains(dev), "the dev config guards destroy");
    toml.replacen(dev, "guarded = []", 1)
}

/// Adds `key = value` lines at the top of a table of a TOML text.
pub fn set_in(toml: &str, table: &str, lines: &str) -> String {
    let head = format!("[{table}]\n");
    if toml.contains(&head) {
        toml.replacen(&head, &format!("{head}{lines}\n"), 1)
    } else {
        format!("{toml}\n{head}{lines}\n")
    }
}

/// An Argon2 PIN hash from `kmsd --hash-pin`.
pub fn hash_pin(pin: &str) -> String {
    use std::io::Write;
    let mut ch = Command::new(kmsd_bin())
        .arg("--hash-pin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    ch.stdin.take().unwrap().write_all(pin.as_bytes()).unwrap();
    String::from_utf8(ch.wait_with_output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_string()
}

/// The dev CA of a dev folder, to issue certificates and CRLs with.
fn dev_ca(dir: &Path) -> (rcgen::Certificate, rcgen::KeyPair) {
    use rcgen::{CertificateParams, KeyPair};
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    let key = KeyPair::from_pem(&read("ca.key")).unwrap();
    let ca = CertificateParams::from_ca_cert_pem(&read("ca.pem"))
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (ca, key)
}

/// A client certificate from the dev CA in `dir`, with this CN, these SANs
/// and this serial number; written as `<file>.pem` and `<file>.key` (0600).
pub fn issue_cert(
    dir: &Path,
    file: &str,
    cn: &str,
    sans: &[&str],
    serial: u64,
) -> (PathBuf, PathBuf) {
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, SerialNumber};
    let (ca, ca_key) = dev_ca(dir);
    let key = KeyPair::generate().unwrap();
    let mut p =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.serial_number = Some(SerialNumber::from(serial.to_be_bytes().to_vec()));
    let cert = p.signed_by(&key, &ca, &ca_key).unwrap();
    let (c, k) = (
        dir.join(format!("{file}.pem")),
        dir.join(format!("{file}.key")),
    );
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o600)).unwrap();
    (c, k)
}

/// A CRL from the dev CA in `dir` revoking these serial numbers, written to `crl.pem`.
pub fn write_crl(dir: &Path, revoked: &[u64]) -> PathBuf {
    use rcgen::{CertificateRevocationListParams, KeyIdMethod, RevokedCertParams, SerialNumber};
    let (ca, ca_key) = dev_ca(dir);
    let now = rcgen::date_time_ymd(2020, 1, 1);
    let crl = CertificateRevocationListParams {
        this_update: now,
        next_update: rcgen::date_time_ymd(2099, 1, 1),
        crl_number: SerialNumber::from(vec![1]),
        issuing_distribution_point: None,
        revoked_certs: revoked
            .iter()
            .map(|s| RevokedCertParams {
                serial_number: SerialNumber::from(s.to_be_bytes().to_vec()),
                revocation_time: now,
                reason_code: None,
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&ca, &ca_key)
    .unwrap();
    let p = dir.join("crl.pem");
    std::fs::write(&p, crl.pem().unwrap()).unwrap();
    p
}

/// Runs a command, returning (success, stdout+stderr).
pub fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().expect("run command");
    let mut s = String::from_utf8_lossy(&out.stdout).to_string();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), s)
}

pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success())
}
