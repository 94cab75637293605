//! kmsd: the kmsp11 key management daemon.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;

use kmsd::{config::Config, daemon::Daemon, dev, server};

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
    /// Check the configuration and exit.
    #[arg(long)]
    check: bool,
    /// Read a PIN from standard input and print its Argon2 hash for [[identity]] pin_hash.
    #[arg(long)]
    hash_pin: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KMSD_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
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
    if args.hash_pin {
        let mut pin = String::new();
        std::io::stdin()
            .read_line(&mut pin)
            .map_err(|e| e.to_string())?;
        println!(
            "{}",
            kmsd::authz::hash_pin(pin.trim_end_matches(['\n', '\r']).as_bytes())
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
    let acceptor = server::acceptor(&cfg.tls).map_err(|e| format!("{}: {e}", path.display()))?;
    if args.check {
        println!("{}: OK", path.display());
        return Ok(());
    }
    let daemon = Daemon::start(&cfg).map_err(|e| format!("{}: {e}", path.display()))?;
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&cfg.listen.address)
            .await
            .map_err(|e| format!("listen on {}: {e}", cfg.listen.address))?;
        let bound = listener.local_addr().map_err(|e| e.to_string())?;
        if let Some(f) = &cfg.listen.address_file {
            std::fs::write(f, bound.to_string()).map_err(|e| format!("{}: {e}", f.display()))?;
        }
        tracing::info!(%bound, tokens = daemon.tokens.len(), "kmsd serving");
        if let Some(dir) = dev_dir {
            let client = dev::client_config(&dir, &bound.to_string())?;
            let lib = std::env::current_exe()
                .ok()
                .and_then(|p| p.parent().map(|d| d.join("libkmsp11.so")))
                .filter(|p| p.exists())
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "target/release/libkmsp11.so".into());
            println!("kmsd dev mode: serving virtual tokens kms-a and kms-b on {bound} (user PIN {})", dev::DEV_PIN);
            println!("Point a PKCS#11 client at it:");
            println!("  export KMSP11_CONFIG={}", client.display());
            println!("  pkcs11-tool --module {lib} -L");
            println!("  pkcs11-tool --module {lib} --token-label kms-a -l -p {} --keypairgen --key-type EC:prime256v1 --label demo", dev::DEV_PIN);
        }
        let server = Arc::new(server::Server {
            daemon: Arc::new(daemon),
            acceptor,
            handshake_timeout: Duration::from_secs(cfg.listen.handshake_timeout_secs),
            idle_timeout: Duration::from_secs(cfg.listen.idle_timeout_secs),
        });
        tokio::select! {
            _ = server.run(listener) => {}
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; shutting down"),
        }
        Ok::<(), String>(())
    })
}
