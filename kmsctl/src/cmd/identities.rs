//! `kmsctl identities list|add|disable|enable`.

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
        } => {
            let body = json!({"name": name, "subject": subject, "roles": roles, "tokens": tokens, "pin_hash": pin_hash});
            object(&c.post("/v1/identities", Some(body))?, out);
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
