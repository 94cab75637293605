//! `kmsctl certs import|list|remove`.

use std::path::PathBuf;

use serde_json::json;

use crate::client::{Client, Failure};
use crate::output::{object, rows, Output};

#[derive(clap::Subcommand, Debug)]
pub enum Certs {
    /// Put certificates on a token, checked first (parse, validity, chain
    /// order, and the leaf's public key against KEY's). FILE: PEM (leaf
    /// first, then its CAs) or one DER certificate.
    Import {
        file: PathBuf,
        /// The key the leaf certifies (id or label): the leaf takes its
        /// label and CKA_ID. Without it every certificate is an authority
        /// (trust anchors, CAs).
        #[arg(long = "for-key", value_name = "KEY")]
        key: Option<String>,
        /// The token, when no key names it (default: the first served).
        #[arg(long)]
        token: Option<String>,
    },
    /// The certificates on the tokens, soonest to expire first.
    List,
    /// Remove a certificate, named by the SHA-256 `list` shows.
    Remove { sha256: String },
}

const COLUMNS: &[(&str, &str)] = &[
    ("SHA256", "sha256"),
    ("TOKEN", "token"),
    ("LABEL", "label"),
    ("CATEGORY", "category"),
    ("TRUSTED", "trusted"),
    ("SUBJECT", "subject"),
    ("NOT AFTER", "not_after"),
    ("DAYS", "days_left"),
];

pub fn run(c: &Client, cmd: Certs, out: Output) -> Result<(), Failure> {
    match cmd {
        Certs::Import { file, key, token } => {
            let bytes = std::fs::read(&file)
                .map_err(|e| Failure::Usage(format!("{}: {e}", file.display())))?;
            let mut body = match String::from_utf8(bytes) {
                Ok(pem) if pem.starts_with("-----BEGIN") => json!({ "pem": pem }),
                Ok(text) => json!({ "der_hex": hex::encode(text.into_bytes()) }),
                Err(e) => json!({ "der_hex": hex::encode(e.into_bytes()) }),
            };
            if let Some(k) = key {
                body["key"] = k.into();
            }
            if let Some(t) = token {
                body["token"] = t.into();
            }
            rows(&c.post("/v1/certs", Some(body))?, out, COLUMNS)
        }
        Certs::List => rows(&c.get("/v1/certs")?, out, COLUMNS),
        Certs::Remove { sha256 } => {
            object(&c.post(&format!("/v1/certs/{sha256}/remove"), None)?, out)
        }
    }
    Ok(())
}
