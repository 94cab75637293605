//! PKCS#11 load, side by side in one run: SoftHSM loaded directly, p11-kit's
//! RPC (`p11-kit server` + `p11-kit-client.so`, Unix socket) in front of
//! SoftHSM, and libkmsp11 -> kmsd (mTLS 1.3, policy, quotas, durable audit)
//! -> SoftHSM, plus any module given with `--module`. Operations run
//! interleaved: each operation and thread count on every column in turn, so
//! the machine's noise falls on all of them alike.
//!
//!   cargo build --release --workspace
//!   target/release/kmsp11-load --iterations 2000 --threads 1,2
//!
//! Per operation, thread count and column: ops/s over all threads,
//! latency p50/p90/p99/p99.9, errors, and for the columns with a server
//! process (kmsd, p11-kit server) the server's CPU time per call. `--json`
//! prints one JSON object per line instead of the table, `--json-to FILE`
//! appends them to a file as well (`kmsp11-targets` reads it). Machines are
//! shared and noisy: compare ratios within one run, quote medians.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use clap::Parser;
use cryptoki::context::Pkcs11;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectHandle};
use cryptoki::session::Session;
use kmsp11_tests::raw::{self, Raw};
use kmsp11_tests::{Kmsd, ED25519, P256};

/// PKCS#11 load: SoftHSM direct vs p11-kit RPC vs kmsp11, interleaved in one run.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Measured calls per thread, per operation and column (and a tenth
    /// as many unmeasured first).
    #[arg(long, default_value_t = 1000)]
    iterations: usize,
    /// Thread counts to run each operation with, each thread in its own
    /// session (e.g. 1,2,8,32,128).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    threads: Vec<usize>,
    /// Only the operations whose name contains this (e.g. "ECDSA").
    #[arg(long)]
    only: Option<String>,
    /// The built-in columns to run.
    #[arg(long, value_delimiter = ',', default_value = "direct,p11-kit,kmsp11",
          value_parser = ["direct", "p11-kit", "kmsp11"])]
    columns: Vec<String>,
    /// Another module as a column: NAME=PATH, its first slot with a token,
    /// logged in with `--pin` (its environment as this process's).
    #[arg(long, value_name = "NAME=PATH")]
    module: Vec<String>,
    /// The user PIN for `--module` columns.
    #[arg(long, default_value = "123456")]
    pin: String,
    /// AES-GCM and digest payload size in bytes.
    #[arg(long, default_value_t = 1024)]
    payload: usize,
    /// kmsd's `[audit] fsync`: batch (as users run it), always, or off
    /// (to see what durability costs).
    #[arg(long, default_value = "batch", value_parser = ["batch", "always", "off"])]
    fsync: String,
    /// One JSON object per line instead of the table.
    #[arg(long)]
    json: bool,
    /// Also append the JSON lines to this file (with `--tag` and the fsync
    /// mode in each), for `kmsp11-targets`.
    #[arg(long, value_name = "FILE")]
    json_to: Option<PathBuf>,
    /// A name for this run in the `--json-to` lines.
    #[arg(long, default_value = "")]
    tag: String,
    /// After the runs, open this many idle client connections to kmsd
    /// (mTLS, Hello, one client context between them), report kmsd's RSS
    /// and threads, and run kmsp11's operations once more beside them.
    #[arg(long, default_value_t = 0)]
    idle: usize,
}

/// The keys each column's operations use, made once per column.
struct Keys {
    /// A session key pair.
    ec: ObjectHandle,
    ec_pub: ObjectHandle,
    /// A token key: what applications sign with, known to kmsd's inventory.
    ec_token: ObjectHandle,
    rsa: ObjectHandle,
    /// Not every column offers Ed25519 (p11-kit's RPC does not forward
    /// it): then why not, as each call's error.
    ed: Result<ObjectHandle, String>,
    aes: ObjectHandle,
    /// An ECDSA signature of `DIGEST` by `ec`, for verify.
    ec_sig: Vec<u8>,
    /// The payload encrypted with `aes` under `IV` and `AAD`, for decrypt
    /// (or why the column could not).
    gcm_ct: Result<Vec<u8>, String>,
}

const DIGEST: [u8; 32] = [2u8; 32];
const IV: [u8; 12] = [7u8; 12];
const AAD: &[u8] = b"kmsp11-load";

/// What one thread's operation sees.
struct Ctx<'a> {
    s: &'a Session,
    raw: &'a Raw,
    keys: &'a Keys,
    payload: &'a [u8],
}

type OpResult = Result<(), String>;
type Op = (&'static str, fn(&Ctx) -> OpResult);

fn rv(what: &str, r: raw::CK_RV) -> OpResult {
    if r == raw::CKR_OK {
        Ok(())
    } else {
        Err(format!("{what}: {}", raw::rv_name(r)))
    }
}

fn ck<T>(r: cryptoki::error::Result<T>) -> OpResult {
    r.map(|_| ()).map_err(|e| e.to_string())
}

/// Init and one call with a buffer of the right size (what OpenSSL's
/// engines and NSS mostly do).
fn presized_sign(c: &Ctx, mech: raw::CK_MECHANISM_TYPE, key: ObjectHandle, cap: usize) -> OpResult {
    let h = c.s.handle();
    rv("C_SignInit", c.raw.sign_init(h, mech, key.handle()))?;
    let (r, n, _) = c.raw.sign(h, &DIGEST, Some(cap));
    rv("C_Sign", r)?;
    if n == 0 {
        return Err("C_Sign: empty signature".into());
    }
    Ok(())
}

fn gcm(iv: &mut [u8; 12]) -> Mechanism<'_> {
    Mechanism::AesGcm(GcmParams::new(iv, AAD, 128.into()).expect("GCM parameters"))
}

/// Each operation; "(query)" is cryptoki's style: init, a length query
/// (NULL buffer), then the call.
const OPS: &[Op] = &[
    ("C_GenerateRandom 32 B", |c| {
        let mut b = [0u8; 32];
        ck(c.s.generate_random_slice(&mut b))
    }),
    ("C_Digest SHA-256 (query)", |c| {
        ck(c.s.digest(&Mechanism::Sha256, c.payload))
    }),
    ("ECDSA P-256 sign (presized)", |c| {
        presized_sign(c, raw::CKM_ECDSA, c.keys.ec, 64)
    }),
    ("ECDSA P-256 sign (query)", |c| {
        ck(c.s.sign(&Mechanism::Ecdsa, c.keys.ec, &DIGEST))
    }),
    ("ECDSA P-256 sign, token key (presized)", |c| {
        presized_sign(c, raw::CKM_ECDSA, c.keys.ec_token, 64)
    }),
    ("ECDSA P-256 verify", |c| {
        ck(c.s.verify(&Mechanism::Ecdsa, c.keys.ec_pub, &DIGEST, &c.keys.ec_sig))
    }),
    ("RSA-2048 PKCS#1 SHA-256 sign (presized)", |c| {
        presized_sign(c, raw::CKM_SHA256_RSA_PKCS, c.keys.rsa, 256)
    }),
    ("RSA-2048 PKCS#1 SHA-256 sign (query)", |c| {
        ck(c.s.sign(&Mechanism::Sha256RsaPkcs, c.keys.rsa, &DIGEST))
    }),
    ("Ed25519 sign (presized)", |c| {
        presized_sign(c, raw::CKM_EDDSA, c.keys.ed.clone()?, 64)
    }),
    ("AES-256-GCM encrypt (presized)", |c| {
        let h = c.s.handle();
        let (mut iv, mut aad) = (IV, AAD.to_vec());
        let init = c
            .raw
            .gcm_encrypt_init(h, c.keys.aes.handle(), &mut iv, &mut aad, true);
        rv("C_EncryptInit", init)?;
        rv("C_Encrypt", c.raw.encrypt(h, c.payload).0)
    }),
    ("AES-256-GCM encrypt (query)", |c| {
        let mut iv = IV;
        ck(c.s.encrypt(&gcm(&mut iv), c.keys.aes, c.payload))
    }),
    ("AES-256-GCM decrypt (presized)", |c| {
        let h = c.s.handle();
        let (mut iv, mut aad) = (IV, AAD.to_vec());
        let init = c
            .raw
            .gcm_decrypt_init(h, c.keys.aes.handle(), &mut iv, &mut aad);
        rv("C_DecryptInit", init)?;
        let ct = c.keys.gcm_ct.as_ref().map_err(Clone::clone)?;
        // The buffer as long as the input: SoftHSM asks that much for GCM.
        let (r, n, _) = c.raw.decrypt(h, ct, Some(ct.len()));
        rv("C_Decrypt", r)?;
        if n != c.payload.len() {
            return Err(format!("C_Decrypt: {n} bytes"));
        }
        Ok(())
    }),
    ("find one key (init+find+final)", |c| {
        let private = Attribute::Class(cryptoki::object::ObjectClass::PRIVATE_KEY);
        match c
            .s
            .find_objects(&[private, Attribute::Label(b"bench-ec".to_vec())])
        {
            Ok(h) if h.len() == 1 => Ok(()),
            Ok(h) => Err(format!("found {} objects", h.len())),
            Err(e) => Err(e.to_string()),
        }
    }),
    ("C_GetAttributeValue CKA_KEY_TYPE", |c| {
        ck(c.s.get_attributes(c.keys.ec, &[AttributeType::KeyType]))
    }),
    ("AES-256 key generation + destroy", |c| {
        let k = c.s.generate_key(
            &Mechanism::AesKeyGen,
            &[Attribute::ValueLen(32.into()), Attribute::Encrypt(true)],
        );
        let k = k.map_err(|e| e.to_string())?;
        ck(c.s.destroy_object(k))
    }),
];

/// Open + close session is measured on its own: it needs no session.
const OPEN_CLOSE: &str = "open + close session";

/// One column: a module, its logged-in setup session (which keeps the
/// login for the threads' sessions) and keys, and the server process whose
/// CPU time is counted, if any.
struct Column {
    name: String,
    module: PathBuf,
    p: Pkcs11,
    slot: cryptoki::slot::Slot,
    _setup: Session,
    keys: Keys,
    server: Option<u32>,
    /// Whether a second load of the module shares the first one's state:
    /// not so for p11-kit-client.so, whose every C_GetFunctionList is a new
    /// module instance. The "(presized)" operations call the module's
    /// function list directly and need it.
    raw_shared: bool,
}

/// One measured run.
struct Run {
    op: &'static str,
    threads: usize,
    column: String,
    ops_per_s: f64,
    lat: Vec<Duration>,
    errors: usize,
    first_error: Option<String>,
    server_cpu_per_call: Option<Duration>,
}

fn main() {
    let args = Args::parse();
    if args.idle > 0 {
        raise_fd_limit();
    }
    let tmp = std::env::temp_dir().join(format!("kmsp11-load-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let softhsm = kmsp11_tests::softhsm_module();
    let wants = |c: &str| args.columns.iter().any(|x| x == c);

    let mut columns = Vec::new();
    let mut _p11kit = None;
    let mut _kmsd = None;
    if wants("direct") {
        let conf = kmsp11_tests::softhsm_store(&tmp.join("direct"), &["dev-a"]);
        std::env::set_var("SOFTHSM2_CONF", &conf);
        columns.push(Column::open(
            "direct",
            &softhsm,
            Some("dev-a"),
            kmsp11_tests::PIN,
            None,
            &args,
        ));
    }
    if wants("p11-kit") {
        let (server, addr) = p11kit_server(&tmp, &softhsm);
        std::env::set_var("P11_KIT_SERVER_ADDRESS", addr);
        let pid = server.id();
        _p11kit = Some(KillOnDrop(server));
        let module = p11kit_client()
            .expect("p11-kit-client.so not found: apt-get install -y p11-kit-modules");
        columns.push(Column::open(
            "p11-kit",
            &module,
            Some("dev-a"),
            kmsp11_tests::PIN,
            Some(pid),
            &args,
        ));
    }
    if wants("kmsp11") {
        let fsync = format!("fsync = \"{}\"", args.fsync);
        // Load runs go past the default daily limit of 10,000 uses per key.
        let idle = args.idle;
        let kmsd = Kmsd::start_edited(|t, _| {
            assert!(t.contains("fsync = \"batch\""));
            let t = t.replacen("fsync = \"batch\"", &fsync, 1);
            let t = kmsp11_tests::set_in(&t, "quotas", "daily_limit_per_key = 0");
            if idle == 0 {
                return t;
            }
            // Room for the idle connections beside the active ones.
            let room = format!(
                "max_connections = {}\nmax_connections_per_identity = {}",
                idle + 512,
                idle + 256
            );
            kmsp11_tests::set_in(&t, "limits", &room)
        });
        std::env::set_var("KMSP11_CONFIG", kmsd.client_config());
        let pid = kmsd.pid();
        columns.push(Column::open(
            "kmsp11",
            &kmsp11_tests::libkmsp11(),
            Some("kms-a"),
            kmsp11_tests::PIN,
            Some(pid),
            &args,
        ));
        _kmsd = Some(kmsd);
    }
    for m in &args.module {
        let (name, path) = m.split_once('=').expect("--module NAME=PATH");
        columns.push(Column::open(
            name,
            Path::new(path),
            None,
            &args.pin,
            None,
            &args,
        ));
    }

    let only = args.only.clone().unwrap_or_default();
    let payload = vec![5u8; args.payload];
    let mut ops: Vec<&'static str> = OPS.iter().map(|(n, _)| *n).collect();
    ops.push(OPEN_CLOSE);
    let mut runs: Vec<Run> = Vec::new();
    let mut out = Out::new(&args);
    if !args.json {
        header();
    }
    for name in ops.into_iter().filter(|n| n.contains(&*only)) {
        for &threads in &args.threads {
            let first = runs.len();
            for col in &columns {
                let r = col.run(name, threads, args.iterations, &payload);
                out.run(&r);
                runs.push(r);
            }
            if !args.json {
                ratios(&runs[first..]);
            }
        }
    }
    if let (Some(k), true) = (&_kmsd, args.idle > 0) {
        let before = kmsd_state(k.pid());
        let conns = idle_connections(k, args.idle);
        let after = kmsd_state(k.pid());
        let (threads, rss) = (
            proc_status(k.pid(), "Threads").unwrap_or(0),
            proc_status(k.pid(), "VmRSS").unwrap_or(0),
        );
        out.line(serde_json::json!({
            "idle_connections": conns.len(),
            "kmsd_before": before,
            "kmsd_after": after,
            "kmsd_after_threads": threads,
            "kmsd_after_rss_kib": rss,
        }));
        if !args.json {
            println!(
                "\n{} idle connections opened: kmsd before {before}, after {after}",
                conns.len()
            );
        }
        let only = args.only.clone().unwrap_or_default();
        let col = columns
            .iter()
            .find(|c| c.name == "kmsp11")
            .expect("kmsp11 column");
        for name in OPS.iter().map(|(n, _)| *n).filter(|n| n.contains(&*only)) {
            for &threads in &args.threads {
                let mut r = col.run(name, threads, args.iterations, &payload);
                r.column = format!("kmsp11, {} idle", conns.len());
                out.run(&r);
            }
        }
        drop(conns);
    }
    if let Some(k) = &_kmsd {
        let threads = proc_status(k.pid(), "Threads").unwrap_or(0);
        let rss = proc_status(k.pid(), "VmRSS").unwrap_or(0);
        let hwm = proc_status(k.pid(), "VmHWM").unwrap_or(0);
        out.line(serde_json::json!({
            "kmsd": { "threads": threads, "rss_kib": rss, "peak_rss_kib": hwm },
        }));
        if !args.json {
            println!("\nkmsd at the end: {threads} threads, RSS {rss} KiB (peak {hwm} KiB)");
        }
    }
    drop(columns);
    let _ = std::fs::remove_dir_all(tmp);
}

/// Where results go: the table or JSON lines on stdout, and JSON lines
/// appended to `--json-to`.
struct Out {
    stdout_json: bool,
    file: Option<std::fs::File>,
    tag: String,
    fsync: String,
}

impl Out {
    fn new(args: &Args) -> Out {
        let file = args.json_to.as_ref().map(|p| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .unwrap_or_else(|e| panic!("--json-to {}: {e}", p.display()))
        });
        Out {
            stdout_json: args.json,
            file,
            tag: args.tag.clone(),
            fsync: args.fsync.clone(),
        }
    }

    fn run(&mut self, r: &Run) {
        if !self.stdout_json {
            r.row();
        }
        self.line(r.json());
    }

    /// A JSON line: on stdout with `--json`, in the file with the run's
    /// tag and fsync mode.
    fn line(&mut self, mut v: serde_json::Value) {
        if self.stdout_json {
            println!("{v}");
        }
        if let (Some(f), Some(o)) = (&mut self.file, v.as_object_mut()) {
            use std::io::Write;
            o.insert("tag".into(), self.tag.clone().into());
            o.insert("fsync".into(), self.fsync.clone().into());
            writeln!(f, "{v}").expect("--json-to: write");
        }
    }
}

impl Column {
    fn open(
        name: &str,
        module: &Path,
        token: Option<&str>,
        pin: &str,
        server: Option<u32>,
        args: &Args,
    ) -> Column {
        use cryptoki::session::UserType;
        use cryptoki::types::AuthPin;
        let p = kmsp11_tests::initialized(module);
        let slot = match token {
            Some(label) => kmsp11_tests::slot_by_label(&p, label),
            None => p.get_slots_with_token().unwrap()[0],
        };
        let s = p.open_rw_session(slot).unwrap();
        s.login(UserType::User, Some(&AuthPin::new(pin.into())))
            .unwrap_or_else(|e| panic!("{name}: C_Login: {e}"));
        let keys = make_keys(&s, args.payload);
        let raw_shared = {
            let raw = Raw::open(module);
            let (r, _) = raw.attributes(s.handle(), keys.ec.handle(), &[(raw::CKA_CLASS, Some(8))]);
            r == raw::CKR_OK
        };
        Column {
            name: name.to_string(),
            module: module.to_path_buf(),
            p,
            slot,
            _setup: s,
            keys,
            server,
            raw_shared,
        }
    }

    /// `threads` threads, each in its own session, `n` calls each after
    /// `n / 10` unmeasured ones.
    fn run(&self, op: &'static str, threads: usize, n: usize, payload: &[u8]) -> Run {
        if op.contains("(presized)") && !self.raw_shared {
            return Run {
                op,
                threads,
                column: self.name.clone(),
                ops_per_s: 0.0,
                lat: Vec::new(),
                errors: 0,
                first_error: Some(
                    "not measured: a second load of this module is another instance".into(),
                ),
                server_cpu_per_call: None,
            };
        }
        let f = OPS.iter().find(|(name, _)| *name == op).map(|(_, f)| *f);
        // What the threads share (the setup session is not theirs).
        let (p, slot, keys, module) = (&self.p, self.slot, &self.keys, &self.module);
        let barrier = Barrier::new(threads + 1);
        let (mut lat, mut errors, mut first_error) = (Vec::with_capacity(threads * n), 0, None);
        let mut cpu_before = None;
        let wall = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    let barrier = &barrier;
                    scope.spawn(move || {
                        // The module's function list for this thread's raw calls.
                        let raw = Raw::open(module);
                        // A session that cannot be opened makes every
                        // call of this thread an error (with why).
                        let s = f.map(|_| {
                            p.open_rw_session(slot)
                                .map_err(|e| format!("C_OpenSession: {e}"))
                        });
                        let call = || match (f, &s) {
                            (Some(f), Some(Ok(s))) => f(&Ctx {
                                s,
                                raw: &raw,
                                keys,
                                payload,
                            }),
                            (Some(_), Some(Err(e))) => Err(e.clone()),
                            _ => ck(p.open_rw_session(slot).map(drop)),
                        };
                        for _ in 0..n / 10 {
                            let _ = call();
                        }
                        barrier.wait();
                        let mut t = Vec::with_capacity(n);
                        let mut errs = (0, None);
                        for _ in 0..n {
                            let at = Instant::now();
                            let r = call();
                            t.push(at.elapsed());
                            if let Err(e) = r {
                                errs.0 += 1;
                                errs.1.get_or_insert(e);
                            }
                        }
                        (t, errs)
                    })
                })
                .collect();
            barrier.wait();
            cpu_before = self.server.map(process_cpu);
            let start = Instant::now();
            for h in handles {
                let (t, (e, first)) = h.join().expect("load thread panicked");
                lat.extend(t);
                errors += e;
                if first_error.is_none() {
                    first_error = first;
                }
            }
            start.elapsed()
        });
        let calls = (threads * n) as u32;
        let server_cpu_per_call = match (self.server, cpu_before) {
            (Some(pid), Some(before)) => {
                Some(process_cpu(pid).saturating_sub(before) / calls.max(1))
            }
            _ => None,
        };
        lat.sort();
        Run {
            op,
            threads,
            column: self.name.clone(),
            ops_per_s: calls as f64 / wall.as_secs_f64(),
            lat,
            errors,
            first_error,
            server_cpu_per_call,
        }
    }
}

fn make_keys(s: &Session, payload: usize) -> Keys {
    let label = |l: &str| Attribute::Label(l.as_bytes().to_vec());
    let (ec_pub, ec) = s
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[
                Attribute::EcParams(P256.to_vec()),
                Attribute::Verify(true),
                label("bench-ec"),
            ],
            &[Attribute::Sign(true), label("bench-ec")],
        )
        .unwrap();
    let (_, ec_token) = s
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[
                Attribute::Token(true),
                Attribute::EcParams(P256.to_vec()),
                label("bench-ec-token"),
            ],
            &[
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sign(true),
                label("bench-ec-token"),
            ],
        )
        .unwrap();
    let (_, rsa) = s
        .generate_key_pair(
            &Mechanism::RsaPkcsKeyPairGen,
            &[
                Attribute::ModulusBits(2048.into()),
                Attribute::PublicExponent(vec![1, 0, 1]),
            ],
            &[Attribute::Sign(true)],
        )
        .unwrap();
    let ed = s
        .generate_key_pair(
            &Mechanism::EccEdwardsKeyPairGen,
            &[Attribute::EcParams(ED25519.to_vec())],
            &[Attribute::Sign(true)],
        )
        .map(|(_, private)| private)
        .map_err(|e| format!("Ed25519 key generation: {e}"));
    let aes = s
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::ValueLen(32.into()),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
            ],
        )
        .unwrap();
    let ec_sig = s.sign(&Mechanism::Ecdsa, ec, &DIGEST).unwrap();
    let mut iv = IV;
    let gcm_ct = s
        .encrypt(&gcm(&mut iv), aes, &vec![5u8; payload])
        .map_err(|e| format!("AES-GCM encrypt: {e}"));
    if let Ok(ed) = ed {
        // Ed25519 through cryptoki's typed mechanism, once: the key works.
        let pure = Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure));
        s.sign(&pure, ed, b"x").unwrap();
    }
    Keys {
        ec,
        ec_pub,
        ec_token,
        rsa,
        ed,
        aes,
        ec_sig,
        gcm_ct,
    }
}

/// Starts `p11-kit server` for the token dev-a of a SoftHSM store of its
/// own; returns the process and its `P11_KIT_SERVER_ADDRESS`.
fn p11kit_server(tmp: &Path, softhsm: &Path) -> (Child, String) {
    let conf = kmsp11_tests::softhsm_store(&tmp.join("p11-kit"), &["dev-a"]);
    let sock = tmp.join("p11-kit.sock");
    let mut child = Command::new("p11-kit")
        .args(["server", "-f", "-s", "-n"])
        .arg(&sock)
        .arg("--provider")
        .arg(softhsm)
        .arg("pkcs11:token=dev-a")
        .env("SOFTHSM2_CONF", conf)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run p11-kit server: apt-get install -y p11-kit");
    let out = child.stdout.take().unwrap();
    let mut lines = BufReader::new(out).lines();
    let addr = lines
        .find_map(|l| {
            let l = l.ok()?;
            let v = l.strip_prefix("P11_KIT_SERVER_ADDRESS=")?;
            Some(v.split(';').next()?.to_string())
        })
        .expect("p11-kit server printed no address");
    (child, addr)
}

/// Idle connections are descriptors: the soft limit raised to the hard one.
fn raise_fd_limit() {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `l` is a valid rlimit for both calls.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

/// kmsd's threads and resident memory, for the report.
fn kmsd_state(pid: u32) -> String {
    let threads = proc_status(pid, "Threads").unwrap_or(0);
    let rss = proc_status(pid, "VmRSS").unwrap_or(0);
    format!("{threads} threads, RSS {} MiB", rss / 1024)
}

/// `n` client connections to kmsd, each through its TLS handshake and
/// Hello, rejoining the first one's client context as a library's pooled
/// connections do; kept open, idle, until dropped.
fn idle_connections(kmsd: &Kmsd, n: usize) -> Vec<kmsp11_tests::wire::Wire> {
    let mut v: Vec<kmsp11_tests::wire::Wire> = Vec::with_capacity(n);
    let mut context = None;
    for i in 0..n {
        let mut w = kmsp11_tests::wire::Wire::connect(kmsd);
        match w.try_hello(context.clone()) {
            Some(ok) => context = Some(ok.context),
            None => {
                eprintln!("kmsd refused idle connection {i}: stopping at {}", v.len());
                break;
            }
        }
        v.push(w);
    }
    v
}

fn p11kit_client() -> Option<PathBuf> {
    [
        "/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so",
        "/usr/lib/aarch64-linux-gnu/pkcs11/p11-kit-client.so",
        "/usr/lib64/pkcs11/p11-kit-client.so",
        "/usr/lib/pkcs11/p11-kit-client.so",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// CPU time of a server process and its children (p11-kit server runs a
/// child per client connection).
fn process_cpu(pid: u32) -> Duration {
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    children
        .split_whitespace()
        .filter_map(|c| c.parse::<u32>().ok())
        .map(process_cpu)
        .sum::<Duration>()
        + one_process_cpu(pid)
}

/// CPU time (user + system, all threads, ns precision) of another process
/// of ours, from its process CPU clock.
fn one_process_cpu(pid: u32) -> Duration {
    let mut clock: libc::clockid_t = 0;
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: both out-pointers are valid locals; a failure leaves them
    // zero and is reported as no CPU time.
    let ok = unsafe {
        libc::clock_getcpuclockid(pid as libc::pid_t, &mut clock) == 0
            && libc::clock_gettime(clock, &mut ts) == 0
    };
    if !ok {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn proc_status(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let l = s.lines().find(|l| l.starts_with(&format!("{field}:")))?;
    l.split_whitespace().nth(1)?.parse().ok()
}

fn pct(v: &[Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v[((v.len() as f64 * p / 100.0) as usize).min(v.len() - 1)]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn header() {
    println!(
        "{:<40} {:>4} {:<8} {:>10} {:>10} {:>10} {:>10} {:>10} {:>7} {:>10}",
        "operation",
        "thr",
        "column",
        "ops/s",
        "p50 µs",
        "p90 µs",
        "p99 µs",
        "p99.9 µs",
        "errors",
        "srv CPU µs"
    );
}

impl Run {
    fn row(&self) {
        if self.lat.is_empty() {
            let why = self.first_error.as_deref().unwrap_or("");
            println!(
                "{:<40} {:>4} {:<8} n/a: {why}",
                self.op, self.threads, self.column
            );
            return;
        }
        let [p50, p90, p99, p999] = self.percentiles_us();
        println!(
            "{:<40} {:>4} {:<8} {:>10.0} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>7} {:>10}",
            self.op,
            self.threads,
            self.column,
            self.ops_per_s,
            p50,
            p90,
            p99,
            p999,
            self.errors,
            self.server_cpu_per_call
                .map(|d| format!("{:.1}", us(d)))
                .unwrap_or_else(|| "-".into()),
        );
        if let Some(e) = &self.first_error {
            println!("{:<40} {:>4} {:<8} first error: {e}", "", "", "");
        }
    }

    /// p50, p90, p99 and p99.9 in µs.
    fn percentiles_us(&self) -> [f64; 4] {
        [50.0, 90.0, 99.0, 99.9].map(|p| us(pct(&self.lat, p)))
    }

    fn json(&self) -> serde_json::Value {
        let [p50, p90, p99, p999] = self.percentiles_us();
        serde_json::json!({
            "op": self.op,
            "threads": self.threads,
            "column": self.column,
            "ops_per_s": self.ops_per_s,
            "p50_us": p50,
            "p90_us": p90,
            "p99_us": p99,
            "p999_us": p999,
            "errors": self.errors,
            "first_error": self.first_error,
            "server_cpu_us_per_call": self.server_cpu_per_call.map(us),
        })
    }
}

/// kmsp11 against the other columns of one operation and thread count.
fn ratios(runs: &[Run]) {
    let Some(k) = runs.iter().find(|r| r.column == "kmsp11") else {
        return;
    };
    let mut parts = Vec::new();
    if k.lat.is_empty() {
        return;
    }
    for o in runs
        .iter()
        .filter(|r| r.column != "kmsp11" && r.errors == 0 && !r.lat.is_empty())
    {
        parts.push(format!(
            "ops/s {:.2}x {}, p50 {:.2}x {}",
            k.ops_per_s / o.ops_per_s,
            o.column,
            pct(&k.lat, 50.0).as_secs_f64() / pct(&o.lat, 50.0).as_secs_f64().max(1e-9),
            o.column
        ));
    }
    if !parts.is_empty() {
        println!("{:<40} {:>4} kmsp11: {}", "", "", parts.join("; "));
    }
}
