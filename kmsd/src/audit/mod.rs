//! The tamper-evident audit log: JSON Lines, each record carrying the
//! SHA-256 of the line before it, and Ed25519-signed checkpoints in the
//! same chain. [`Chain`] appends; [`verify`] names the first record that
//! was edited, inserted, deleted, reordered or cut.
//!
//! A record never holds a PIN, key material or plaintext: its fields are
//! names, handles, mechanism numbers and CK_RV names only.

pub mod log;
pub mod verify;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use verify::{verify, Bad, Verified};

/// The `prev` of the first record of a chain.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What a record says happened. Every field is optional but `seq`, `time`
/// and `prev`, so one type serves calls, logins, admin actions and
/// checkpoints.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub seq: u64,
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    /// Hex SHA-256 of the previous line (without its newline).
    pub prev: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The client's handle of the key or object the call works on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handle: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mechanism: Option<String>,
    /// `allow` or `deny`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
    /// The policy (or rule) that decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// What an administrative change did (`kmsd keys`, `kmsd identities`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Why a call was refused (`policy`, `key-revoked`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The CK_RV by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rv: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_us: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<CheckpointSig>,
}

/// A checkpoint: the signer's public key and its signature over
/// [`checkpoint_message`] of this record's `seq` and `prev`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointSig {
    pub public_key: String,
    pub signature: String,
}

/// What a checkpoint signs: the chain's head (`prev`) after `seq - 1` records.
pub fn checkpoint_message(seq: u64, prev: &str) -> Vec<u8> {
    format!("kmsp11-audit-checkpoint\n{seq}\n{prev}").into_bytes()
}

/// What a receipt signs: one record, by its sequence number and the hash
/// of its line. Whoever holds the record can check it is the one named;
/// whoever holds the public key can check kmsd named it.
pub fn receipt_message(seq: u64, hash: &str) -> Vec<u8> {
    format!("kmsp11-audit-receipt\n{seq}\n{hash}").into_bytes()
}

pub fn line_hash(line: &[u8]) -> String {
    hex::encode(Sha256::digest(line))
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("audit {0}: cannot continue the chain: {1}")]
    Chain(PathBuf, String),
}

/// The open end of a chain: appends records, each linked to the last.
pub struct Chain {
    path: PathBuf,
    /// Shared with whoever fsyncs it without holding the chain.
    file: std::sync::Arc<File>,
    /// The file's size: what it was when opened plus what was appended
    /// (a failed append makes the log reopen the chain).
    bytes: u64,
    next_seq: u64,
    prev: String,
}

impl Chain {
    /// Opens `path` for appending, continuing the chain it holds (its last
    /// line gives the sequence and hash to follow), or starting one.
    pub fn open(path: &Path) -> Result<Chain, AuditError> {
        let io = |source| AuditError::Io {
            path: path.to_path_buf(),
            source,
        };
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => vec![],
            Err(e) => return Err(io(e)),
        };
        let (next_seq, prev) = match text
            .strip_suffix(b"\n")
            .unwrap_or(&text)
            .rsplit(|b| *b == b'\n')
            .next()
        {
            Some(last) if !last.is_empty() => {
                if !text.ends_with(b"\n") {
                    return Err(AuditError::Chain(
                        path.to_path_buf(),
                        "the last line is cut short".into(),
                    ));
                }
                let r: Record = serde_json::from_slice(last)
                    .map_err(|e| AuditError::Chain(path.to_path_buf(), e.to_string()))?;
                (r.seq + 1, line_hash(last))
            }
            _ => (1, GENESIS.to_string()),
        };
        Chain::resume(path, next_seq, &prev)
    }

    /// Continues a chain whose position is known (`next_seq`, the hash of
    /// its last line) in `path`, appending; a missing file is created.
    pub fn resume(path: &Path, next_seq: u64, prev: &str) -> Result<Chain, AuditError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| AuditError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        let bytes = file
            .metadata()
            .map_err(|source| AuditError::Io {
                path: path.to_path_buf(),
                source,
            })?
            .len();
        Ok(Chain {
            path: path.to_path_buf(),
            file: std::sync::Arc::new(file),
            bytes,
            next_seq,
            prev: prev.to_string(),
        })
    }

    /// Appends `r` (its `seq`, `time` and `prev` are set here) and returns
    /// its sequence number. Not yet durable: see [`Chain::sync`].
    pub fn append(&mut self, mut r: Record) -> Result<u64, AuditError> {
        r.seq = self.next_seq;
        r.prev = self.prev.clone();
        if r.time.is_empty() {
            r.time = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
        }
        let mut line = serde_json::to_vec(&r).expect("a record serialises");
        self.prev = line_hash(&line);
        line.push(b'\n');
        (&*self.file)
            .write_all(&line)
            .map_err(|source| AuditError::Io {
                path: self.path.clone(),
                source,
            })?;
        self.bytes += line.len() as u64;
        self.next_seq += 1;
        Ok(r.seq)
    }

    /// Appends a checkpoint signed by `key` (nothing without one).
    pub fn checkpoint(&mut self, key: Option<&Ed25519KeyPair>) -> Result<Option<u64>, AuditError> {
        let Some(key) = key else {
            return Ok(None);
        };
        let msg = checkpoint_message(self.next_seq, &self.prev);
        let cp = CheckpointSig {
            public_key: hex::encode(key.public_key().as_ref()),
            signature: hex::encode(key.sign(&msg).as_ref()),
        };
        let r = Record {
            checkpoint: Some(cp),
            ..Default::default()
        };
        self.append(r).map(Some)
    }

    /// Makes every appended record durable (fsync).
    pub fn sync(&mut self) -> Result<(), AuditError> {
        self.file.sync_data().map_err(|source| AuditError::Io {
            path: self.path.clone(),
            source,
        })
    }

    /// The hash of the last line (the next record's `prev`).
    pub fn head(&self) -> &str {
        &self.prev
    }

    /// A handle to fsync the file without holding the chain.
    pub fn sync_handle(&self) -> std::sync::Arc<File> {
        self.file.clone()
    }

    /// The sequence number the next record gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The file's size in bytes.
    pub fn len(&self) -> std::io::Result<u64> {
        Ok(self.bytes)
    }

    pub fn is_empty(&self) -> std::io::Result<bool> {
        Ok(self.len()? == 0)
    }
}

/// An Ed25519 signing key from a 32-byte seed.
pub fn signer_from_seed(seed: &[u8; 32]) -> Result<Ed25519KeyPair, String> {
    Ed25519KeyPair::from_seed_unchecked(seed).map_err(|e| format!("audit signing key: {e}"))
}
