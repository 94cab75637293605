//! kmsctl: administer kmsd over its admin API (HTTPS with this
//! administrator's client certificate). What an identity may do is its
//! roles': `admin` changes, `auditor` reads.
//!
//! Exit status: 0 done; 2 bad arguments or configuration; 3 kmsd
//! unreachable; 4 refused (the identity lacks the role); 5 kmsd rejected
//! the request (not found, wrong state, invalid policy, broken audit chain).

mod client;
mod cmd;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use client::{Client, Config, Failure};
use output::Output;

#[derive(Parser, Debug)]
#[command(
    version,
    about,
    after_help = "Configuration: the TOML file KMSCTL_CONFIG (or --config) names, with url, ca, cert and key; flags override it. `kmsd --dev` writes one per administrator (kmsctl-admin.toml, kmsctl-admin2.toml, kmsctl-auditor.toml)."
)]
struct Cli {
    /// kmsctl configuration file.
    #[arg(long, env = "KMSCTL_CONFIG", value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// The admin API, e.g. https://localhost:5697.
    #[arg(long, global = true)]
    url: Option<String>,
    /// CA certificate (PEM) that signed kmsd's server certificate.
    #[arg(long, global = true, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Client certificate (PEM) naming this administrator.
    #[arg(long, global = true, value_name = "FILE")]
    cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long = "key", id = "tls_key", global = true, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    #[arg(long, short, value_enum, default_value = "table", global = true)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Version, tokens, contexts, policies, audit head, readiness.
    Status,
    /// The key inventory and lifecycle.
    #[command(subcommand)]
    Keys(cmd::keys::Keys),
    /// Certificates and trust anchors on the tokens.
    #[command(subcommand)]
    Certs(cmd::certs::Certs),
    /// Dual control: approval requests.
    #[command(subcommand)]
    Approvals(cmd::approvals::Approvals),
    /// The audit log.
    #[command(subcommand)]
    Audit(cmd::audit::Audit),
    /// The Cedar policy.
    #[command(subcommand)]
    Policy(cmd::policy::Policy),
    /// Identities added and disabled at run time.
    #[command(subcommand)]
    Identities(cmd::identities::Identities),
    /// Rate and daily quotas.
    #[command(subcommand)]
    Quotas(cmd::quotas::Quotas),
    /// Print a shell completion script.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

fn config(cli: &Cli) -> Result<Config, Failure> {
    let mut c = match &cli.config {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| Failure::Usage(format!("{}: {e}", p.display())))?;
            toml::from_str(&text).map_err(|e| Failure::Usage(format!("{}: {e}", p.display())))?
        }
        None => Config::default(),
    };
    let base = cli
        .config
        .as_ref()
        .and_then(|p| p.parent().map(PathBuf::from));
    // Paths in the file are relative to it.
    for p in [&mut c.ca, &mut c.cert, &mut c.key].into_iter().flatten() {
        if let (true, Some(b)) = (p.is_relative(), &base) {
            *p = b.join(&*p);
        }
    }
    if cli.url.is_some() {
        c.url = cli.url.clone();
    }
    for (slot, flag) in [
        (&mut c.ca, &cli.ca),
        (&mut c.cert, &cli.cert),
        (&mut c.key, &cli.tls_key),
    ] {
        if flag.is_some() {
            *slot = flag.clone();
        }
    }
    Ok(c)
}

fn run(cli: Cli) -> Result<(), Failure> {
    if let Command::Completions { shell } = cli.command {
        clap_complete::generate(shell, &mut Cli::command(), "kmsctl", &mut std::io::stdout());
        return Ok(());
    }
    let client = Client::new(&config(&cli)?)?;
    let out = cli.output;
    match cli.command {
        Command::Status => cmd::status::run(&client, out),
        Command::Keys(k) => cmd::keys::run(&client, k, out),
        Command::Certs(k) => cmd::certs::run(&client, k, out),
        Command::Approvals(a) => cmd::approvals::run(&client, a, out),
        Command::Audit(a) => cmd::audit::run(&client, a, out),
        Command::Policy(p) => cmd::policy::run(&client, p, out),
        Command::Identities(i) => cmd::identities::run(&client, i, out),
        Command::Quotas(q) => cmd::quotas::run(&client, q, out),
        Command::Completions { .. } => Ok(()),
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kmsctl: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
