//! kmsd's audit log: one [`Chain`] shared by every request, group commit
//! (concurrent callers share one fsync), checkpoints every N records or T
//! seconds, and fail-closed: while the log cannot be written, [`Log::ready`]
//! says so and kmsd refuses operations; every call retries, so the log
//! recovers by itself when writing works again.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use ring::signature::Ed25519KeyPair;

use super::{AuditError, Chain, Record};

/// When appended records reach the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fsync {
    /// Each record, before its call goes on.
    Always,
    /// Before its call goes on, one fsync shared by all records appended
    /// meanwhile (group commit).
    Batch,
    /// Never by kmsd (the kernel writes back when it likes): records of
    /// the last seconds are lost in a crash. Warned at start.
    Off,
}

impl LogCfg {
    /// From `[audit]`: reads the signing key (a 32-byte seed in hex).
    pub fn from_config(c: &crate::config::AuditCfg, instance: String) -> Result<LogCfg, String> {
        let signer = match &c.signing_key {
            None => {
                tracing::warn!("audit.signing_key is not set: no signed checkpoints are written");
                None
            }
            Some(p) => {
                let text = zeroize::Zeroizing::new(
                    std::fs::read_to_string(p)
                        .map_err(|e| format!("audit.signing_key {}: {e}", p.display()))?,
                );
                let mut seed = zeroize::Zeroizing::new([0u8; 32]);
                hex::decode_to_slice(text.trim(), &mut *seed).map_err(|_| {
                    format!("audit.signing_key {}: expected 64 hex digits", p.display())
                })?;
                Some(super::signer_from_seed(&seed)?)
            }
        };
        Ok(LogCfg {
            path: c.path.clone(),
            fsync: c.fsync,
            checkpoint_every: c.checkpoint_every.max(1),
            checkpoint_interval: Duration::from_secs(c.checkpoint_secs.max(1)),
            signer,
            instance,
            max_bytes: c.max_bytes,
        })
    }
}

pub struct LogCfg {
    pub path: PathBuf,
    pub fsync: Fsync,
    pub checkpoint_every: u64,
    pub checkpoint_interval: Duration,
    pub signer: Option<Ed25519KeyPair>,
    /// Written into every record: which kmsd wrote it.
    pub instance: String,
    /// Rotate at this size (0: never).
    pub max_bytes: u64,
}

/// The name a full file is rotated to: the path with the last sequence
/// number it holds, zero-padded, so that `audit.log.* audit.log` lists
/// the chain oldest first.
pub fn rotated_name(path: &Path, last_seq: u64) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{last_seq:012}"));
    PathBuf::from(name)
}

struct Inner {
    chain: Option<Chain>,
    /// The file's identity when opened: a removed or replaced file is noticed.
    inode: (u64, u64),
    /// The chain's position, kept across a reopen.
    next_seq: u64,
    prev: String,
    synced: u64,
    /// When records last reached the disk (an fsync that succeeded).
    last_sync: Option<std::time::SystemTime>,
    syncing: bool,
    last_checkpoint: (u64, Instant),
    failed: Option<String>,
}

/// A record in the chain: its sequence number and the hash of its line
/// (what the next record's `prev` is and a receipt names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    pub hash: String,
}

pub struct Log {
    cfg: LogCfg,
    inner: Mutex<Inner>,
    synced_cv: Condvar,
}

fn inode(p: &Path) -> std::io::Result<(u64, u64)> {
    let m = std::fs::metadata(p)?;
    Ok((m.dev(), m.ino()))
}

impl Log {
    /// Opens the log, continuing the chain in `cfg.path`.
    pub fn open(cfg: LogCfg) -> Result<Log, AuditError> {
        if let Some(dir) = cfg.path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| AuditError::Io {
                path: cfg.path.clone(),
                source,
            })?;
        }
        let chain = Chain::open(&cfg.path)?;
        let inode = inode(&cfg.path).map_err(|source| AuditError::Io {
            path: cfg.path.clone(),
            source,
        })?;
        if cfg.fsync == Fsync::Off {
            tracing::warn!(path = %cfg.path.display(), "audit fsync is off: the last records are lost if the machine fails");
        }
        let (next_seq, prev) = (chain.next_seq(), chain.head().to_string());
        Ok(Log {
            inner: Mutex::new(Inner {
                chain: Some(chain),
                inode,
                next_seq,
                prev,
                synced: next_seq - 1,
                last_sync: None,
                syncing: false,
                last_checkpoint: (next_seq - 1, Instant::now()),
                failed: None,
            }),
            cfg,
            synced_cv: Condvar::new(),
        })
    }

    /// Whether records can be written now: cheap while they can; after a
    /// failure, tries to recover. (A file removed since the last record is
    /// noticed by the next [`Log::record`].)
    pub fn ready(&self) -> Result<(), String> {
        let mut g = self.inner.lock();
        if g.failed.is_none() && g.chain.is_some() {
            return Ok(());
        }
        self.usable(&mut g).map(|_| ())
    }

    /// The chain, reopened if the file went away or a write failed.
    fn usable<'a>(&self, g: &'a mut Inner) -> Result<&'a mut Chain, String> {
        let same = inode(&self.cfg.path).ok() == Some(g.inode);
        if g.failed.is_some() || !same || g.chain.is_none() {
            if !same && g.failed.is_none() {
                tracing::error!(path = %self.cfg.path.display(), "audit file removed or replaced: continuing the chain in a new file");
            }
            g.chain = None;
            let reopened = Chain::resume(&self.cfg.path, g.next_seq, &g.prev).and_then(|c| {
                Ok((
                    c,
                    inode(&self.cfg.path).map_err(|source| AuditError::Io {
                        path: self.cfg.path.clone(),
                        source,
                    })?,
                ))
            });
            match reopened {
                Ok((c, ino)) => {
                    if g.failed.take().is_some() {
                        tracing::warn!(path = %self.cfg.path.display(), "audit log writable again: operations resume");
                    }
                    g.chain = Some(c);
                    g.inode = ino;
                }
                Err(e) => {
                    let msg = e.to_string();
                    if g.failed.as_deref() != Some(msg.as_str()) {
                        tracing::error!(
                            "audit log cannot be written, every operation is refused: {msg}"
                        );
                    }
                    g.failed = Some(msg.clone());
                    return Err(msg);
                }
            }
        }
        Ok(g.chain.as_mut().expect("set above"))
    }

    /// Appends one record and returns when it is durable as `fsync` says.
    pub fn record(&self, r: Record) -> Result<Entry, String> {
        self.append(r, true)
    }

    /// Appends one record of a call that changed nothing and used no key
    /// (an information or session call, a find, random numbers, an
    /// `*Init`): in `batch` mode its caller does not wait for the disk.
    /// The record is in the file, in chain order, at once; it reaches the
    /// disk with the next record that waits, or [`Log::sync_pending`].
    /// With `fsync = "always"` it is synced like any other.
    pub fn record_lazily(&self, r: Record) -> Result<Entry, String> {
        self.append(r, false)
    }

    /// Syncs records appended without waiting (kmsd's periodic tick).
    pub fn sync_pending(&self) {
        if self.cfg.fsync != Fsync::Batch {
            return;
        }
        let g = self.inner.lock();
        if g.failed.is_some() || g.synced + 1 >= g.next_seq {
            return;
        }
        let upto = g.next_seq - 1;
        let Some(file) = g.chain.as_ref().map(|c| c.sync_handle()) else {
            return;
        };
        let _ = self.group_sync(g, upto, file);
    }

    /// Whether every appended record is on disk (tests, status).
    pub fn all_synced(&self) -> bool {
        let g = self.inner.lock();
        g.synced + 1 >= g.next_seq
    }

    fn append(&self, mut r: Record, wait: bool) -> Result<Entry, String> {
        r.instance = Some(self.cfg.instance.clone());
        let mut g = self.inner.lock();
        self.usable(&mut g)?;
        if self.cfg.max_bytes > 0 {
            self.maybe_rotate(&mut g)?;
        }
        let appended = {
            let chain = match g.chain.as_mut() {
                Some(c) => c,
                None => self.usable(&mut g)?,
            };
            chain
                .append(r)
                .map(|seq| (seq, chain.head().to_string(), chain.sync_handle()))
        };
        let (seq, head, file) = match appended {
            Ok(x) => x,
            Err(e) => return Err(self.fail(&mut g, e)),
        };
        g.next_seq = seq + 1;
        g.prev = head.clone();
        self.maybe_checkpoint(&mut g);
        let entry = Entry { seq, hash: head };
        let durable = match self.cfg.fsync {
            Fsync::Off => Ok(seq),
            Fsync::Always => {
                let synced = file.sync_data();
                match synced {
                    Ok(()) => {
                        g.synced = g.synced.max(seq);
                        g.last_sync = Some(std::time::SystemTime::now());
                        Ok(seq)
                    }
                    Err(e) => Err(self.fail_io(&mut g, e)),
                }
            }
            Fsync::Batch if wait => self.group_sync(g, seq, file),
            Fsync::Batch => Ok(seq),
        };
        durable.map(|_| entry)
    }

    /// Waits until `seq` is on disk; the first waiter to find no fsync
    /// running runs one for everything appended so far.
    fn group_sync(
        &self,
        mut g: parking_lot::MutexGuard<'_, Inner>,
        seq: u64,
        file: std::sync::Arc<File>,
    ) -> Result<u64, String> {
        let mut file = Some(file);
        loop {
            if g.synced >= seq {
                return Ok(seq);
            }
            if let Some(e) = &g.failed {
                return Err(e.clone());
            }
            if !g.syncing {
                g.syncing = true;
                let upto = g.next_seq - 1;
                let f = file
                    .take()
                    .or_else(|| g.chain.as_ref().map(|c| c.sync_handle()))
                    .ok_or_else(|| std::io::Error::other("audit file closed"));
                let r = parking_lot::MutexGuard::unlocked(&mut g, || f.and_then(|f| f.sync_data()));
                g.syncing = false;
                match r {
                    Ok(()) => {
                        g.synced = g.synced.max(upto);
                        g.last_sync = Some(std::time::SystemTime::now());
                    }
                    Err(e) => {
                        let msg = self.fail_io(&mut g, e);
                        self.synced_cv.notify_all();
                        return Err(msg);
                    }
                }
                self.synced_cv.notify_all();
            } else {
                self.synced_cv.wait(&mut g);
            }
        }
    }

    /// Rotates a full file: a signed checkpoint closes it, it is synced and
    /// renamed ([`rotated_name`]), and the chain goes on in a new file.
    /// Expects a usable chain (`record` made sure).
    fn maybe_rotate(&self, g: &mut Inner) -> Result<(), String> {
        let len = match g.chain.as_ref() {
            Some(c) => c.len(),
            None => return self.usable(g).map(|_| ()),
        };
        let full = match len {
            Ok(n) => n >= self.cfg.max_bytes,
            Err(e) => return Err(self.fail_io(g, e)),
        };
        if !full {
            return Ok(());
        }
        let chain = g.chain.as_mut().expect("usable");
        let closed = chain
            .checkpoint(self.cfg.signer.as_ref())
            .and_then(|_| chain.sync());
        if let Err(e) = closed {
            return Err(self.fail(g, e));
        }
        let (next, head) = (chain.next_seq(), chain.head().to_string());
        let to = rotated_name(&self.cfg.path, next - 1);
        if let Err(e) = std::fs::rename(&self.cfg.path, &to) {
            return Err(self.fail_io(g, e));
        }
        g.next_seq = next;
        g.prev = head;
        g.synced = next - 1;
        g.last_checkpoint = (next - 1, Instant::now());
        let resumed = Chain::resume(&self.cfg.path, next, &g.prev).and_then(|c| {
            let ino = inode(&self.cfg.path).map_err(|source| AuditError::Io {
                path: self.cfg.path.clone(),
                source,
            })?;
            Ok((c, ino))
        });
        match resumed {
            Ok((c, ino)) => {
                g.chain = Some(c);
                g.inode = ino;
                tracing::info!(rotated = %to.display(), "audit file rotated; the chain goes on");
                Ok(())
            }
            Err(e) => Err(self.fail(g, e)),
        }
    }

    fn maybe_checkpoint(&self, g: &mut Inner) {
        let (at, when) = g.last_checkpoint;
        let due = g.next_seq - 1 - at >= self.cfg.checkpoint_every
            || when.elapsed() >= self.cfg.checkpoint_interval;
        if !due {
            return;
        }
        let Some(chain) = g.chain.as_mut() else {
            return;
        };
        match chain.checkpoint(self.cfg.signer.as_ref()) {
            Ok(Some(seq)) => {
                g.next_seq = seq + 1;
                g.prev = chain.head().to_string();
                g.last_checkpoint = (seq, Instant::now());
            }
            Ok(None) => g.last_checkpoint = (g.next_seq - 1, Instant::now()),
            Err(e) => {
                let _ = self.fail(g, e);
            }
        }
    }

    fn fail(&self, g: &mut Inner, e: AuditError) -> String {
        let msg = e.to_string();
        tracing::error!("audit log cannot be written, every operation is refused: {msg}");
        g.failed = Some(msg.clone());
        g.chain = None;
        msg
    }

    fn fail_io(&self, g: &mut Inner, e: std::io::Error) -> String {
        let path = self.cfg.path.clone();
        self.fail(g, AuditError::Io { path, source: e })
    }

    /// The file records are appended to.
    pub fn path(&self) -> &Path {
        &self.cfg.path
    }

    /// The log's files, oldest first: the rotated ones, then the current.
    pub fn files(&self) -> Vec<PathBuf> {
        let path = &self.cfg.path;
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return vec![path.clone()];
        };
        let prefix = format!("{}.", name.to_string_lossy());
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter(|e| {
                        let n = e.file_name().to_string_lossy().into_owned();
                        n.strip_prefix(&prefix).is_some_and(|rest| {
                            rest.len() == 12 && rest.bytes().all(|b| b.is_ascii_digit())
                        })
                    })
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v.push(path.clone());
        v
    }

    /// The checkpoint signer's Ed25519 public key, if it signs.
    pub fn public_key(&self) -> Option<Vec<u8>> {
        use ring::signature::KeyPair;
        self.cfg
            .signer
            .as_ref()
            .map(|k| k.public_key().as_ref().to_vec())
    }

    /// A receipt's signature over [`super::receipt_message`] of `e`, by
    /// the checkpoint signer; `None` when no signing key is configured.
    pub fn sign_receipt(&self, e: &Entry) -> Option<Vec<u8>> {
        let msg = super::receipt_message(e.seq, &e.hash);
        self.cfg
            .signer
            .as_ref()
            .map(|k| k.sign(&msg).as_ref().to_vec())
    }

    /// Records appended but not yet on disk, and when records last reached
    /// it (Unix seconds), for metrics.
    pub fn queue(&self) -> (u64, Option<f64>) {
        let g = self.inner.lock();
        let last = g.last_sync.and_then(|t| {
            t.duration_since(std::time::UNIX_EPOCH)
                .ok()
                .map(|d| d.as_secs_f64())
        });
        ((g.next_seq - 1).saturating_sub(g.synced), last)
    }

    /// The chain's head: the last sequence number and its line's hash.
    pub fn head(&self) -> (u64, String) {
        let g = self.inner.lock();
        (g.next_seq - 1, g.prev.clone())
    }

    /// Writes a last checkpoint and syncs (at shutdown).
    pub fn close(&self) {
        let mut g = self.inner.lock();
        if let Some(c) = g.chain.as_mut() {
            let _ = c.checkpoint(self.cfg.signer.as_ref());
            let _ = c.sync();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(path: &Path, fsync: Fsync) -> Log {
        log_rotating(path, fsync, 0)
    }

    fn log_rotating(path: &Path, fsync: Fsync, max_bytes: u64) -> Log {
        Log::open(LogCfg {
            path: path.to_path_buf(),
            fsync,
            checkpoint_every: 50,
            checkpoint_interval: Duration::from_secs(3600),
            signer: Some(super::super::signer_from_seed(&[1; 32]).unwrap()),
            instance: "test".into(),
            max_bytes,
        })
        .unwrap()
    }

    /// The log's files, oldest first.
    fn files(path: &Path) -> Vec<PathBuf> {
        let dir = path.parent().unwrap();
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p != path)
            .collect();
        v.sort();
        v.push(path.to_path_buf());
        v
    }

    // Rotation by size under concurrent writers: several files, one chain
    // that verifies across them; a missing middle file is named.
    #[test]
    fn rotation_keeps_one_chain_across_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let l = log_rotating(&path, Fsync::Batch, 4096);
        std::thread::scope(|s| {
            for t in 0..4 {
                let l = &l;
                s.spawn(move || {
                    for i in 0..100 {
                        let r = Record {
                            request: Some(t * 1000 + i),
                            ..Default::default()
                        };
                        l.record(r).unwrap();
                    }
                });
            }
        });
        let all = files(&path);
        assert!(all.len() > 3, "{all:?}");
        let v = super::super::verify(&all, None, None).unwrap();
        assert_eq!(v.records - v.checkpoints, 400);
        let mut gap = all.clone();
        gap.remove(1);
        assert!(super::super::verify(&gap, None, None).is_err());
    }

    // Eight threads share the group commit: every record lands once, in
    // one chain, with checkpoints every 50.
    #[test]
    fn concurrent_records_make_one_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let l = log(&path, Fsync::Batch);
        std::thread::scope(|s| {
            for t in 0..8 {
                let l = &l;
                s.spawn(move || {
                    for i in 0..100 {
                        let r = Record {
                            request: Some(t * 1000 + i),
                            ..Default::default()
                        };
                        l.record(r).unwrap();
                    }
                });
            }
        });
        let v = super::super::verify(&[path], None, None).unwrap();
        assert_eq!(v.records - v.checkpoints, 800);
        assert_eq!(v.checkpoints, 800 / 50);
    }

    // A record's entry names its line: the hash is the line's, and the
    // receipt's signature checks with the published key.
    #[test]
    fn entries_name_their_line_and_receipts_verify() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let l = log(&path, Fsync::Batch);
        l.record(Record::default()).unwrap();
        let e = l.record(Record::default()).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let line = text
            .lines()
            .find(|x| x.contains(&format!("\"seq\":{},", e.seq)))
            .unwrap();
        assert_eq!(super::super::line_hash(line.as_bytes()), e.hash);
        let sig = l.sign_receipt(&e).expect("a signing key");
        let key = ring::signature::UnparsedPublicKey::new(
            &ring::signature::ED25519,
            l.public_key().unwrap(),
        );
        let msg = super::super::receipt_message(e.seq, &e.hash);
        assert!(key.verify(&msg, &sig).is_ok());
        let other = super::super::receipt_message(e.seq + 1, &e.hash);
        assert!(
            key.verify(&other, &sig).is_err(),
            "a receipt names one record"
        );
    }

    // A record appended lazily is in the file at once but not yet synced;
    // the next record that waits syncs both, and so does sync_pending.
    #[test]
    fn lazy_records_are_synced_by_the_next_waiting_record_or_the_tick() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let l = log(&path, Fsync::Batch);
        let lazy = l.record_lazily(Record::default()).unwrap().seq;
        assert!(!l.all_synced(), "a lazy record does not wait for the disk");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(&format!("\"seq\":{lazy},")), "{text}");
        l.record(Record::default()).unwrap();
        assert!(l.all_synced(), "a waiting record syncs what came before it");
        l.record_lazily(Record::default()).unwrap();
        assert!(!l.all_synced());
        l.sync_pending();
        assert!(l.all_synced(), "the tick syncs lazy records");
        // With fsync = "always" nothing is lazy.
        let strict = log(&dir.path().join("strict.log"), Fsync::Always);
        strict.record_lazily(Record::default()).unwrap();
        assert!(strict.all_synced());
        let v = super::super::verify(&[path], None, None).unwrap();
        assert_eq!(v.records - v.checkpoints, 3);
    }

    // With its folder gone the log refuses, naming the file; once the
    // folder is back it continues the chain by itself.
    #[test]
    fn an_unwritable_log_refuses_then_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("audit");
        std::fs::create_dir(&sub).unwrap();
        let path = sub.join("audit.log");
        let l = log(&path, Fsync::Always);
        l.record(Record::default()).unwrap();
        std::fs::remove_dir_all(&sub).unwrap();
        let e = l.record(Record::default()).unwrap_err();
        assert!(e.contains("audit.log"), "{e}");
        assert!(l.ready().is_err());
        std::fs::create_dir(&sub).unwrap();
        assert_eq!(l.ready(), Ok(()));
        let seq = l.record(Record::default()).unwrap().seq;
        assert_eq!(seq, 2, "the chain goes on where it was");
    }
}
