//! `kmsctl keys list|show|disable|enable|revoke|rotate|versions|csr|self-sign|schedule-destroy|cancel-destroy|tag|expire|revoked`.

use serde_json::json;

use crate::client::{Client, Failure};
use crate::output::{object, rows, Output};

#[derive(clap::Subcommand, Debug)]
pub enum Keys {
    /// The inventory.
    List,
    /// One key (by id, or a label only one key has) with its usage.
    Show { key: String },
    /// Refuse every operation with the key until enabled.
    Disable { key: String },
    /// Undo `disable`.
    Enable { key: String },
    /// Put the key on the revocation list, for good.
    Revoke {
        key: String,
        #[arg(long)]
        reason: String,
    },
    /// Make the key's next version under its label and CKA_ID (same type,
    /// size and usage); the current version is renamed LABEL@vN (CKA_ID
    /// followed by "@vN") and from then on only verifies, decrypts and
    /// unwraps. KEY: the private or secret key's id, or the key's label.
    Rotate { key: String },
    /// A PKCS#10 certificate request signed by the key on the HSM (PEM on
    /// stdout with the table output). KEY: the private key's id or label.
    Csr {
        key: String,
        /// E.g. "CN=web.example,O=Example,C=DE" (CN, O, OU, C, ST, L).
        #[arg(long)]
        subject: String,
    },
    /// A self-signed certificate made by the key on the HSM, put on the
    /// token beside it (the key's label and CKA_ID).
    SelfSign {
        key: String,
        #[arg(long)]
        subject: String,
        /// Validity in days from now.
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
    /// A key's versions by its label, newest first.
    Versions { label: String },
    /// Destroy the key after kmsd's destroy window; restorable until then.
    ScheduleDestroy { key: String },
    /// Restore a key pending destroy.
    CancelDestroy { key: String },
    /// Replace the key's tags.
    Tag {
        key: String,
        #[arg(value_name = "TAG")]
        tags: Vec<String>,
    },
    /// After this time only verify, decrypt and unwrap stay allowed.
    Expire {
        key: String,
        /// RFC 3339, e.g. 2027-01-01T00:00:00Z.
        #[arg(long, conflicts_with = "never", required_unless_present = "never")]
        at: Option<String>,
        #[arg(long)]
        never: bool,
    },
    /// The key revocation list (KRL).
    Revoked,
}

const COLUMNS: &[(&str, &str)] = &[
    ("KEY", "id"),
    ("TOKEN", "token"),
    ("LABEL", "label"),
    ("CLASS", "class"),
    ("TYPE", "key_type"),
    ("STATE", "state"),
    ("OWNER", "owner"),
    ("TAGS", "tags"),
];

pub fn run(c: &Client, cmd: Keys, out: Output) -> Result<(), Failure> {
    let act = |key: &str, action: &str, body: Option<serde_json::Value>| {
        c.post(&format!("/v1/keys/{key}/{action}"), body)
            .map(|v| object(&v, out))
    };
    match cmd {
        Keys::List => rows(&c.get("/v1/keys")?, out, COLUMNS),
        Keys::Show { key } => object(&c.get(&format!("/v1/keys/{key}"))?, out),
        Keys::Disable { key } => act(&key, "disable", None)?,
        Keys::Enable { key } => act(&key, "enable", None)?,
        Keys::Revoke { key, reason } => act(&key, "revoke", Some(json!({"reason": reason})))?,
        Keys::Rotate { key } => act(&key, "rotate", None)?,
        Keys::Csr { key, subject } => {
            let v = c.post(
                &format!("/v1/keys/{key}/csr"),
                Some(json!({"subject": subject})),
            )?;
            match out {
                Output::Json => object(&v, out),
                Output::Table => print!("{}", v["csr"].as_str().unwrap_or_default()),
            }
        }
        Keys::SelfSign { key, subject, days } => {
            let v = c.post(
                &format!("/v1/keys/{key}/self-sign"),
                Some(json!({"subject": subject, "days": days})),
            )?;
            rows(
                &v,
                out,
                &[
                    ("SHA256", "sha256"),
                    ("LABEL", "label"),
                    ("SUBJECT", "subject"),
                    ("NOT AFTER", "not_after"),
                ],
            )
        }
        Keys::Versions { label } => {
            let mut columns = vec![("VERSION", "version")];
            columns.extend_from_slice(COLUMNS);
            rows(
                &c.get(&format!("/v1/keys/{label}/versions"))?,
                out,
                &columns,
            )
        }
        Keys::ScheduleDestroy { key } => act(&key, "schedule-destroy", None)?,
        Keys::CancelDestroy { key } => act(&key, "cancel-destroy", None)?,
        Keys::Tag { key, tags } => act(&key, "tag", Some(json!({"tags": tags})))?,
        Keys::Expire { key, at, never } => {
            let at = if never { None } else { at };
            act(&key, "expire", Some(json!({"at": at})))?
        }
        Keys::Revoked => rows(
            &c.get("/v1/revocations")?,
            out,
            &[
                ("KEY", "key"),
                ("LABEL", "label"),
                ("WHEN", "when"),
                ("WHO", "who"),
                ("REASON", "reason"),
            ],
        ),
    }
    Ok(())
}
