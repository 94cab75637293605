//! `kmsd identities ...`: identities added and disabled at run time, in
//! kmsd's store. The running kmsd reads them every few seconds; the open
//! contexts of an identity disabled there are closed.

use std::path::Path;

use crate::config::Config;
use crate::keys_cli::Output;
use crate::store::sqlite::Sqlite;
use crate::store::{IdentityRecord, Store, StoreError};

#[derive(clap::Subcommand, Debug)]
pub enum IdentitiesCommand {
    /// The configured identities and those added at run time.
    List {
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
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
        /// Who adds it (recorded). Default: $USER.
        #[arg(long)]
        by: Option<String>,
    },
    /// Refuse the identity: its open contexts are closed, new connections refused.
    Disable {
        name: String,
        #[arg(long)]
        by: Option<String>,
    },
    /// Undo `disable`.
    Enable { name: String },
}

use crate::keys_cli::{audit, operator as who};

pub fn run(config: &Path, cmd: IdentitiesCommand) -> Result<(), String> {
    let cfg = Config::load(config).map_err(|e| e.to_string())?;
    let store =
        Sqlite::open(&cfg.store.path).map_err(|e| format!("{}: {e}", cfg.store.path.display()))?;
    let s: &dyn Store = &store;
    let err = |e: StoreError| e.to_string();
    let configured = |name: &str| cfg.identities.iter().any(|i| i.name == name);
    match cmd {
        IdentitiesCommand::List { output } => {
            let records = s.identities().map_err(err)?;
            let mut rows: Vec<serde_json::Value> = cfg
                .identities
                .iter()
                .map(|i| {
                    let disabled = records.iter().any(|r| r.name == i.name && r.disabled);
                    serde_json::json!({
                        "name": i.name, "subject": i.name, "roles": i.roles,
                        "tokens": i.tokens, "source": "config", "disabled": disabled,
                    })
                })
                .collect();
            rows.extend(records.iter().filter(|r| !configured(&r.name)).map(|r| {
                serde_json::json!({
                    "name": r.name, "subject": r.subject, "roles": r.roles,
                    "tokens": r.tokens, "source": "store", "disabled": r.disabled,
                    "added_by": r.added_by,
                })
            }));
            match output {
                Output::Json => println!("{}", serde_json::Value::Array(rows)),
                Output::Table => {
                    println!(
                        "{:<20} {:<30} {:<16} {:<8} STATE",
                        "NAME", "SUBJECT", "ROLES", "SOURCE"
                    );
                    for r in &rows {
                        let list = |k: &str| {
                            r[k].as_array()
                                .map(|a| {
                                    a.iter()
                                        .filter_map(|v| v.as_str())
                                        .collect::<Vec<_>>()
                                        .join(",")
                                })
                                .unwrap_or_default()
                        };
                        println!(
                            "{:<20} {:<30} {:<16} {:<8} {}",
                            r["name"].as_str().unwrap_or_default(),
                            r["subject"].as_str().unwrap_or_default(),
                            list("roles"),
                            r["source"].as_str().unwrap_or_default(),
                            if r["disabled"] == true {
                                "disabled"
                            } else {
                                "enabled"
                            }
                        );
                    }
                }
            }
        }
        IdentitiesCommand::Add {
            name,
            subject,
            roles,
            tokens,
            pin_hash,
            by,
        } => {
            if configured(&name) {
                return Err(format!("{name}: a configured identity of that name exists"));
            }
            if let Some(h) = &pin_hash {
                argon2::PasswordHash::new(h)
                    .map_err(|e| format!("--pin-hash: not a PHC string: {e}"))?;
            }
            let by = who(by);
            let detail = format!(
                "added: roles [{}], tokens [{}]",
                roles.join(","),
                tokens.join(",")
            );
            s.insert_identity(&IdentityRecord {
                subject: subject.unwrap_or_else(|| name.clone()),
                name: name.clone(),
                roles,
                tokens,
                disabled: false,
                added_by: by.clone(),
                added: crate::core::inventory::now(),
                pin_hash,
                spki_sha256: None,
            })
            .map_err(err)?;
            audit(s, Some(by), "identities.add", &name, &detail)?;
            println!("{name}: added");
        }
        IdentitiesCommand::Disable { name, by } => {
            let by = who(by);
            match s.set_identity_disabled(&name, true) {
                Ok(()) => {}
                // A configured identity: disabled by a record of its own.
                Err(StoreError::NotFound(_)) if configured(&name) => s
                    .insert_identity(&IdentityRecord {
                        name: name.clone(),
                        subject: name.clone(),
                        roles: vec![],
                        tokens: vec![],
                        disabled: true,
                        added_by: by.clone(),
                        added: crate::core::inventory::now(),
                        pin_hash: None,
                        spki_sha256: None,
                    })
                    .map_err(err)?,
                Err(e) => return Err(err(e)),
            }
            audit(s, Some(by), "identities.disable", &name, "disabled")?;
            println!("{name}: disabled");
        }
        IdentitiesCommand::Enable { name } => {
            s.set_identity_disabled(&name, false).map_err(err)?;
            audit(s, None, "identities.enable", &name, "enabled")?;
            println!("{name}: enabled");
        }
    }
    Ok(())
}
