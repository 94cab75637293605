//! `kmsctl identities list|add|disable|enable|issue-cert`.

use serde_json::json;

use crate::client::{Client, Failure};
use crate::output::{object, rows, Output};

#[derive(clap::Subcommand, Debug)]
pub enum Identities {
    /// Identities in force, and the disabled ones.
    List,
    /// Add an identity at run time.
    Add {
        name: String,
        /// The certificate name it matches (DNS or URI SAN, else CN). Default: NAME.
        #[arg(long)]
        subject: Option<String>,
        /// A role (repeat for several).
        #[arg(long = "role")]
        roles: Vec<String>,
        /// A token it sees (repeat for several; "*" for all).
        #[arg(long = "token", required = true)]
        tokens: Vec<String>,
        /// Argon2 hash of its PIN (`kmsd --hash-pin`).
        #[arg(long)]
        pin_hash: Option<String>,
        /// Pin it to the key of this PEM certificate (issued by a CA kmsd
        /// trusts): only that key is this identity, whatever names it carries.
        #[arg(long, value_name = "FILE", conflicts_with = "spki_sha256")]
        pin_cert: Option<std::path::PathBuf>,
        /// Pin it to a key by the SHA-256 (hex) of its SubjectPublicKeyInfo.
        #[arg(long, value_name = "HEX")]
        spki_sha256: Option<String>,
    },
    /// Get a client certificate for an identity from kmsd's issuing CA:
    /// the key is made here and never leaves; writes NAME.pem, NAME.key
    /// (mode 0600) and ca.pem into --out.
    IssueCert {
        name: String,
        /// Folder to write the files into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: std::path::PathBuf,
        /// Days the certificate is valid (1 to 825).
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
    /// Refuse an identity: its open contexts are closed at once.
    Disable { name: String },
    /// Undo `disable`.
    Enable { name: String },
}

pub fn run(c: &Client, cmd: Identities, out: Output) -> Result<(), Failure> {
    match cmd {
        Identities::List => {
            let v = c.get("/v1/identities")?;
            if out == Output::Json {
                println!("{v}");
            } else {
                rows(
                    &v["enabled"],
                    out,
                    &[
                        ("NAME", "name"),
                        ("SUBJECT", "subject"),
                        ("ROLES", "roles"),
                        ("TOKENS", "tokens"),
                    ],
                );
                let disabled = v["disabled"].as_array().cloned().unwrap_or_default();
                if !disabled.is_empty() {
                    let names: Vec<String> = disabled
                        .iter()
                        .filter_map(|n| n.as_str().map(str::to_string))
                        .collect();
                    println!("disabled: {}", names.join(", "));
                }
            }
        }
        Identities::Add {
            name,
            subject,
            roles,
            tokens,
            pin_hash,
            pin_cert,
            spki_sha256,
        } => {
            let certificate = pin_cert
                .map(|p| {
                    std::fs::read_to_string(&p)
                        .map_err(|e| Failure::Usage(format!("{}: {e}", p.display())))
                })
                .transpose()?;
            let body = json!({"name": name, "subject": subject, "roles": roles, "tokens": tokens,
                "pin_hash": pin_hash, "certificate": certificate, "spki_sha256": spki_sha256});
            object(&c.post("/v1/identities", Some(body))?, out);
        }
        Identities::IssueCert {
            name,
            out: dir,
            days,
        } => {
            issue_cert(c, &name, &dir, days, out)?;
        }
        Identities::Disable { name } => object(
            &c.post(&format!("/v1/identities/{name}/disable"), None)?,
            out,
        ),
        Identities::Enable { name } => object(
            &c.post(&format!("/v1/identities/{name}/enable"), None)?,
            out,
        ),
    }
    Ok(())
}

fn issue_cert(
    c: &Client,
    name: &str,
    dir: &std::path::Path,
    days: u32,
    out: Output,
) -> Result<(), Failure> {
    let err = |e: rcgen::Error| Failure::Usage(format!("key generation: {e}"));
    let key = rcgen::KeyPair::generate().map_err(err)?;
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    p.distinguished_name.push(rcgen::DnType::CommonName, name);
    let csr = p.serialize_request(&key).map_err(err)?.pem().map_err(err)?;
    let v = c.post(
        &format!("/v1/identities/{name}/certificate"),
        Some(json!({"csr": csr, "days": days})),
    )?;
    let io =
        |p: &std::path::Path, e: std::io::Error| Failure::Usage(format!("{}: {e}", p.display()));
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let files = [
        (format!("{name}.key"), key.serialize_pem(), true),
        (
            format!("{name}.pem"),
            v["certificate"].as_str().unwrap_or_default().to_string(),
            false,
        ),
        (
            "ca.pem".to_string(),
            v["ca"].as_str().unwrap_or_default().to_string(),
            false,
        ),
    ];
    for (file, body, secret) in files {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let p = dir.join(file);
        if secret {
            // Never into a file others could already read.
            let _ = std::fs::remove_file(&p);
        }
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(if secret { 0o600 } else { 0o644 })
            .open(&p)
            .and_then(|mut f| f.write_all(body.as_bytes()))
            .map_err(|e| io(&p, e))?;
    }
    let mut shown = v.clone();
    shown["certificate"] = json!(dir.join(format!("{name}.pem")).display().to_string());
    shown["key"] = json!(dir.join(format!("{name}.key")).display().to_string());
    shown["ca"] = json!(dir.join("ca.pem").display().to_string());
    object(&shown, out);
    Ok(())
}
