//! kmsd: the kmsp11 key management daemon.
#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

use kmsd::config::Config;
use kmsd::daemon::Daemon;
use kmsd::dev;
use kmsd::front::pkcs11::{Server, Timeouts};
use kmsd::front::tls::Tls;

/// kmsp11 key management daemon: PKCS#11 over mutually authenticated TLS,
/// in front of a real HSM.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Configuration file (see kmsd.example.toml).
    #[arg(short, long, value_name = "FILE", conflicts_with = "dev")]
    config: Option<PathBuf>,
    /// Development mode: create (or reuse) a dev CA, certificates, a SoftHSM
    /// token store and configs in DIR, then serve on loopback.
    #[arg(long, value_name = "DIR", num_args = 0..=1, default_missing_value = "kmsd-dev")]
    dev: Option<PathBuf>,
    /// Override the listen address (e.g. 127.0.0.1:0 for any free port).
    #[arg(long, value_name = "ADDR")]
    address: Option<String>,
    /// Check the configuration (and the files it names) and exit.
    #[arg(long)]
    check: bool,
    /// Read a PIN from standard input and print its Argon2 hash for [[identity]] pin_hash.
    #[arg(long)]
    hash_pin: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// The audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// The key inventory in kmsd's store (needs --config): list, show,
    /// disable, enable, revoke, cancel-destroy, schedule-destroy, tag,
    /// expire, and the revocation list. The running kmsd sees each change
    /// at its next decision.
    #[command(subcommand)]
    Keys(kmsd::keys_cli::KeysCommand),
    /// Identities added, disabled and enabled at run time, in kmsd's store
    /// (needs --config). The running kmsd reads them every few seconds and
    /// closes the open contexts of an identity disabled there.
    #[command(subcommand)]
    Identities(kmsd::identities_cli::IdentitiesCommand),
}

#[derive(clap::Subcommand, Debug)]
enum AuditCommand {
    /// Check audit files as one chain, oldest first: names the first record
    /// that was edited, inserted, deleted, reordered or cut, and checks every
    /// checkpoint's signature. Exit status 0 when the chain holds.
    Verify {
        /// The files, oldest first (rotated files before the current one).
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Count only checkpoints signed by this Ed25519 public key (hex).
        #[arg(long, value_name = "HEX")]
        public_key: Option<String>,
        /// As --public-key, from the `[audit] signing_key` file.
        #[arg(long, value_name = "FILE", conflicts_with = "public_key")]
        signing_key: Option<PathBuf>,
    },
}

fn audit_verify(
    files: &[PathBuf],
    public_key: Option<String>,
    signing_key: Option<PathBuf>,
) -> Result<(), String> {
    use ring::signature::KeyPair;
    let key = match (public_key, signing_key) {
        (Some(h), _) => Some(hex::decode(h.trim()).map_err(|_| "--public-key: not hex")?),
        (None, Some(p)) => {
            let c = kmsd::config::AuditCfg {
                signing_key: Some(p),
                ..Default::default()
            };
            let cfg = kmsd::audit::log::LogCfg::from_config(&c, String::new())?;
            cfg.signer.map(|k| k.public_key().as_ref().to_vec())
        }
        (None, None) => None,
    };
    let v = kmsd::audit::verify(files, key.as_deref(), None).map_err(|b| b.to_string())?;
    let by = match (v.checkpoints, key.is_some()) {
        (0, _) => "",
        (_, true) => ", signed by the given key",
        (_, false) => ", signatures good (no key given to trust)",
    };
    println!(
        "OK: records {} to {}, {} checkpoints{by}",
        v.first_seq, v.last_seq, v.checkpoints
    );
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KMSD_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kmsd: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    if let Some(Command::Keys(cmd)) = args.command {
        let config = args
            .config
            .ok_or("kmsd keys needs --config FILE (the kmsd configuration naming the store)")?;
        return kmsd::keys_cli::run(&config, cmd);
    }
    if let Some(Command::Identities(cmd)) = args.command {
        let config = args.config.ok_or(
            "kmsd identities needs --config FILE (the kmsd configuration naming the store)",
        )?;
        return kmsd::identities_cli::run(&config, cmd);
    }
    if let Some(Command::Audit(AuditCommand::Verify {
        files,
        public_key,
        signing_key,
    })) = args.command
    {
        return audit_verify(&files, public_key, signing_key);
    }
    if args.hash_pin {
        let mut pin = zeroize::Zeroizing::new(String::new());
        std::io::stdin()
            .read_line(&mut pin)
            .map_err(|e| e.to_string())?;
        println!(
            "{}",
            kmsd::pin::hash_pin(pin.trim_end_matches(['\n', '\r']).as_bytes())?
        );
        return Ok(());
    }
    let (path, dev_dir) = match (&args.config, &args.dev) {
        (Some(c), None) => (c.clone(), None),
        (None, Some(dir)) => {
            let addr = args
                .address
                .clone()
                .unwrap_or_else(|| "127.0.0.1:5696".into());
            (
                dev::setup(dir, &addr)?,
                Some(dir.canonicalize().map_err(|e| e.to_string())?),
            )
        }
        _ => return Err("give --config FILE or --dev [DIR] (see --help)".into()),
    };
    let mut cfg = Config::load(&path).map_err(|e| e.to_string())?;
    if let Some(a) = &args.address {
        cfg.listen.address = a.clone();
    }
    cfg.check_secret_files()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let tls = Tls::load(&cfg.tls).map_err(|e| format!("{}: {e}", path.display()))?;
    if args.check {
        kmsd::audit::log::LogCfg::from_config(&cfg.audit, String::new())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let policy = kmsd::authz::policy::Policy::load(&cfg.policy.path)
            .map_err(|e| format!("policy: {e}"))?;
        println!("{}: OK", path.display());
        println!(
            "{}: OK, {} policies",
            cfg.policy.path.display(),
            policy.len()
        );
        return Ok(());
    }
    descriptors(&cfg);
    let daemon = Arc::new(Daemon::start(&cfg).map_err(|e| format!("{}: {e}", path.display()))?);
    let tls = Arc::new(tls);
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&cfg.listen.address)
            .await
            .map_err(|e| format!("listen on {}: {e}", cfg.listen.address))?;
        let bound = listener.local_addr().map_err(|e| e.to_string())?;
        if let Some(f) = &cfg.listen.address_file {
            std::fs::write(f, bound.to_string()).map_err(|e| format!("{}: {e}", f.display()))?;
        }
        tracing::info!(%bound, tokens = daemon.token_count(), "kmsd serving");
        if let Some(a) = &cfg.listen.admin_address {
            let admin = tokio::net::TcpListener::bind(a)
                .await
                .map_err(|e| format!("listen (admin) on {a}: {e}"))?;
            let bound = admin.local_addr().map_err(|e| e.to_string())?;
            if let Some(f) = &cfg.listen.admin_address_file {
                std::fs::write(f, bound.to_string())
                    .map_err(|e| format!("{}: {e}", f.display()))?;
            }
            tracing::info!(%bound, "admin API serving");
            let door = Arc::new(kmsd::front::admin::Admin::new(daemon.clone(), tls.clone()));
            tokio::spawn(door.run(admin));
        }
        if let Some(dir) = dev_dir {
            dev::announce(&dir, &bound.to_string())?;
        }
        let server = Arc::new(Server::new(
            daemon.clone(),
            tls.clone(),
            Timeouts::new(&cfg.listen, cfg.limits.queue_timeout_secs),
        ));
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
        let mut hup = signal(SignalKind::hangup()).map_err(|e| e.to_string())?;
        let serving = server.run(listener);
        tokio::pin!(serving);
        loop {
            tokio::select! {
                _ = &mut serving => break,
                _ = tokio::signal::ctrl_c() => {
                    tracing::info!("interrupted; shutting down");
                    break;
                }
                _ = term.recv() => {
                    tracing::info!("SIGTERM; shutting down");
                    break;
                }
                _ = hup.recv() => {
                    match tls.reload() {
                        Ok(revoked) => tracing::info!(revoked, "SIGHUP: TLS certificates and CRLs reloaded"),
                        Err(e) => tracing::error!("SIGHUP: reload failed, the previous TLS configuration stays: {e}"),
                    }
                    match daemon.reload_policy() {
                        Ok(n) => tracing::info!(policies = n, "SIGHUP: policy reloaded"),
                        Err(e) => tracing::error!("SIGHUP: policy refused, the previous policy stays: {e}"),
                    }
                }
            }
        }
        // A last signed checkpoint, so that a verifier can tell the log
        // ended here and was not cut.
        daemon.audit.close();
        Ok::<(), String>(())
    })
}

/// Raises the descriptor limit to what the connection limits need (up to
/// the hard limit) and warns when it stays too low.
fn descriptors(cfg: &Config) {
    let l = &cfg.limits;
    let need = (l.max_connections + l.max_pending_handshakes + 256) as u64;
    match rlimit::increase_nofile_limit(need) {
        Ok(n) if n < need => tracing::warn!(
            limit = n,
            need,
            "the descriptor limit is below limits.max_connections + limits.max_pending_handshakes: raise it (ulimit -n, LimitNOFILE) or lower those limits"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot read the descriptor limit: {e}"),
    }
}
