//! `kmsd keys ...`: the key inventory in kmsd's store, read and changed
//! directly (the running kmsd sees every change at its next decision).
//! kmsctl will do the same through the admin API.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::Config;
use crate::core::facts;
use crate::store::sqlite::Sqlite;
use crate::store::{AdminEvent, KeyId, KeyRecord, KeyState, Revocation, Store};

#[derive(clap::Subcommand, Debug)]
pub enum KeysCommand {
    /// The inventory: key id, token, label, class, type, state, owner, tags.
    List {
        /// Only this token's keys.
        #[arg(long)]
        token: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// One key with its usage counts and revocation.
    Show {
        /// Key id, or a label that names one key.
        key: String,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Refuse every operation with the key until enabled again.
    Disable { key: String },
    /// Undo `disable`.
    Enable { key: String },
    /// Put the key on the revocation list: refused for every operation, for good.
    Revoke {
        key: String,
        #[arg(long)]
        reason: String,
        /// Who revokes (recorded in the list). Default: $USER.
        #[arg(long)]
        by: Option<String>,
    },
    /// Restore a key pending destroy (C_DestroyObject) before its window ends.
    CancelDestroy { key: String },
    /// Destroy a key: pending for `[keys] destroy_window_secs`, then gone.
    ScheduleDestroy { key: String },
    /// Replace the key's tags (policy sees them as `resource.tags`).
    Tag {
        key: String,
        #[arg(value_name = "TAG")]
        tags: Vec<String>,
    },
    /// After this time only verify, decrypt and unwrap stay allowed.
    Expire {
        key: String,
        /// RFC 3339 time, e.g. 2027-01-01T00:00:00Z.
        #[arg(long, conflicts_with = "never", required_unless_present = "never")]
        at: Option<String>,
        /// Remove the expiry.
        #[arg(long)]
        never: bool,
    },
    /// The key revocation list (KRL): key id, label, when, who, reason.
    Revoked {
        #[arg(long, value_enum, default_value = "json")]
        output: Output,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Table,
    Json,
}

pub fn run(config: &Path, cmd: KeysCommand) -> Result<(), String> {
    let cfg = Config::load(config).map_err(|e| e.to_string())?;
    let store =
        Sqlite::open(&cfg.store.path).map_err(|e| format!("{}: {e}", cfg.store.path.display()))?;
    let s: &dyn Store = &store;
    let err = |e: crate::store::StoreError| e.to_string();
    match cmd {
        KeysCommand::List { token, output } => {
            let keys = s.keys(token.as_deref()).map_err(err)?;
            match output {
                Output::Json => println!(
                    "{}",
                    serde_json::Value::Array(keys.iter().map(json).collect())
                ),
                Output::Table => {
                    println!(
                        "{:<34} {:<10} {:<20} {:<12} {:<10} {:<16} {:<12} TAGS",
                        "KEY", "TOKEN", "LABEL", "CLASS", "TYPE", "STATE", "OWNER"
                    );
                    for k in &keys {
                        println!(
                            "{:<34} {:<10} {:<20} {:<12} {:<10} {:<16} {:<12} {}",
                            k.id,
                            k.token,
                            k.label,
                            facts::class_name(k.class),
                            facts::key_type_name(k.key_type),
                            k.state.as_str(),
                            k.owner,
                            k.tags.join(",")
                        );
                    }
                }
            }
        }
        KeysCommand::Show { key, output } => {
            let k = find(s, &key)?;
            let mut v = json(&k);
            let usage = s.usage(&k.id).map_err(err)?;
            v["usage"] = usage
                .into_iter()
                .map(|(op, n)| (op, serde_json::Value::from(n)))
                .collect::<serde_json::Map<_, _>>()
                .into();
            if let Some(r) = s.revocation(&k.id).map_err(err)? {
                v["revocation"] = revocation_json(&r);
            }
            match output {
                Output::Json => println!("{v}"),
                Output::Table => {
                    for (name, value) in v.as_object().into_iter().flatten() {
                        println!("{name:<12} {value}");
                    }
                }
            }
        }
        KeysCommand::Disable { key } => {
            let id = change(s, &key, KeyState::Active, KeyState::Disabled)?;
            audit(s, None, "keys.disable", &id.0, "disabled")?;
        }
        KeysCommand::Enable { key } => {
            let id = change(s, &key, KeyState::Disabled, KeyState::Active)?;
            audit(s, None, "keys.enable", &id.0, "enabled")?;
        }
        KeysCommand::CancelDestroy { key } => {
            let id = change(s, &key, KeyState::PendingDestroy, KeyState::Active)?;
            audit(s, None, "keys.cancel-destroy", &id.0, "restored")?;
        }
        KeysCommand::ScheduleDestroy { key } => {
            let k = find(s, &key)?;
            let at = now() + cfg.keys.destroy_window_secs;
            if !s
                .transition(&k.id, k.state, KeyState::PendingDestroy, Some(at))
                .map_err(err)?
            {
                return Err(format!("{}: its state changed meanwhile; try again", k.id));
            }
            audit(
                s,
                None,
                "keys.schedule-destroy",
                &k.id.0,
                &format!("pending destroy until {}", rfc3339(at)),
            )?;
            println!("{}: pending-destroy until {}", k.id, rfc3339(at));
        }
        KeysCommand::Revoke { key, reason, by } => {
            let k = find(s, &key)?;
            let who = operator(by);
            s.revoke(&Revocation {
                key: k.id.clone(),
                label: k.label.clone(),
                when: now(),
                who: who.clone(),
                reason: reason.clone(),
            })
            .map_err(err)?;
            audit(
                s,
                Some(who),
                "keys.revoke",
                &k.id.0,
                &format!("revoked: {reason}"),
            )?;
            println!("{}: revoked", k.id);
        }
        KeysCommand::Tag { key, tags } => {
            let k = find(s, &key)?;
            s.set_tags(&k.id, &tags).map_err(err)?;
            audit(
                s,
                None,
                "keys.tag",
                &k.id.0,
                &format!("tags [{}]", tags.join(",")),
            )?;
            println!("{}: tags {}", k.id, tags.join(","));
        }
        KeysCommand::Expire { key, at, never } => {
            let k = find(s, &key)?;
            let when = match (at, never) {
                (_, true) => None,
                (Some(t), false) => Some(
                    humantime::parse_rfc3339_weak(&t)
                        .map_err(|e| format!("--at {t:?}: {e}"))?
                        .duration_since(UNIX_EPOCH)
                        .map_err(|_| "--at: before 1970")?
                        .as_secs(),
                ),
                (None, false) => unreachable!("clap requires --at or --never"),
            };
            s.set_expires(&k.id, when).map_err(err)?;
            let what = when.map_or("no expiry".into(), |t| format!("expires {}", rfc3339(t)));
            audit(s, None, "keys.expire", &k.id.0, &what)?;
            match when {
                Some(t) => println!("{}: expires {}", k.id, rfc3339(t)),
                None => println!("{}: no expiry", k.id),
            }
        }
        KeysCommand::Revoked { output } => {
            let list = s.revocations().map_err(err)?;
            match output {
                Output::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::Value::Array(
                        list.iter().map(revocation_json).collect()
                    ))
                    .map_err(|e| e.to_string())?
                ),
                Output::Table => {
                    println!(
                        "{:<34} {:<20} {:<22} {:<12} REASON",
                        "KEY", "LABEL", "WHEN", "WHO"
                    );
                    for r in &list {
                        println!(
                            "{:<34} {:<20} {:<22} {:<12} {}",
                            r.key,
                            r.label,
                            rfc3339(r.when),
                            r.who,
                            r.reason
                        );
                    }
                }
            }
        }
    }
    Ok(())
}

/// A key by id, or by a label only one key has.
pub fn find(s: &dyn Store, key: &str) -> Result<KeyRecord, String> {
    if let Some(k) = s.key(&KeyId(key.to_string())).map_err(|e| e.to_string())? {
        return Ok(k);
    }
    let mut by_label: Vec<KeyRecord> = s
        .keys(None)
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|k| k.label == key && k.state != KeyState::Destroyed)
        .collect();
    match by_label.len() {
        0 => Err(format!("no key {key:?} (neither an id nor a label)")),
        1 => Ok(by_label.remove(0)),
        n => Err(format!(
            "{n} keys are labelled {key:?}: name one by id ({})",
            by_label
                .iter()
                .map(|k| k.id.0.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// As [`find`], a label a key pair shares naming its private key (what
/// rotating a key pair names).
pub fn find_private(s: &dyn Store, key: &str) -> Result<KeyRecord, String> {
    let e = match find(s, key) {
        Ok(k) => return Ok(k),
        Err(e) => e,
    };
    let mut private: Vec<KeyRecord> = s
        .keys(None)
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|k| {
            k.label == key
                && k.state != KeyState::Destroyed
                && matches!(
                    k.class,
                    pkcs11_sys::CKO_PRIVATE_KEY | pkcs11_sys::CKO_SECRET_KEY
                )
        })
        .collect();
    if private.len() == 1 {
        Ok(private.remove(0))
    } else {
        Err(e)
    }
}

/// Who runs the command: `--by`, else the login name.
pub fn operator(by: Option<String>) -> String {
    by.or_else(|| std::env::var("SUDO_USER").ok())
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "unknown".into())
}

/// Queues the change for kmsd's audit log (kmsd writes it within seconds).
pub fn audit(
    s: &dyn Store,
    by: Option<String>,
    action: &str,
    target: &str,
    detail: &str,
) -> Result<(), String> {
    s.add_admin_event(&AdminEvent {
        when: now(),
        who: operator(by),
        action: action.into(),
        target: target.into(),
        detail: detail.into(),
    })
    .map_err(|e| format!("the change is made but not queued for the audit log: {e}"))
}

fn change(s: &dyn Store, key: &str, from: KeyState, to: KeyState) -> Result<KeyId, String> {
    let k = find(s, key)?;
    if k.state != from {
        return Err(format!(
            "{}: is {}, not {}",
            k.id,
            k.state.as_str(),
            from.as_str()
        ));
    }
    if !s
        .transition(&k.id, from, to, None)
        .map_err(|e| e.to_string())?
    {
        return Err(format!("{}: its state changed meanwhile; try again", k.id));
    }
    println!("{}: {}", k.id, to.as_str());
    Ok(k.id)
}

fn now() -> u64 {
    crate::core::inventory::now()
}

pub fn rfc3339(secs: u64) -> String {
    humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
        .to_string()
}

pub fn json(k: &KeyRecord) -> serde_json::Value {
    serde_json::json!({
        "id": k.id.0,
        "token": k.token,
        "label": k.label,
        "class": facts::class_name(k.class),
        "key_type": facts::key_type_name(k.key_type),
        "state": k.state.as_str(),
        "owner": k.owner,
        "created": rfc3339(k.created),
        "destroy_at": k.destroy_at.map(rfc3339),
        "expires": k.expires.map(rfc3339),
        "tags": k.tags,
    })
}

pub fn revocation_json(r: &Revocation) -> serde_json::Value {
    serde_json::json!({
        "key": r.key.0,
        "label": r.label,
        "when": rfc3339(r.when),
        "who": r.who,
        "reason": r.reason,
    })
}
