//! The embedded [`Store`]: one SQLite file (WAL, `synchronous = FULL`, so a
//! committed change survives `kill -9` and power loss), migrated in order by
//! `PRAGMA user_version`.

use std::path::Path;

use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::{
    AdminEvent, Approval, ApprovalState, Checkpoint, IdentityRecord, KeyId, KeyRecord, KeyState,
    Result, Revocation, Store, StoreError,
};

/// Each entry moves the schema from version `i` to `i + 1`. Entries are
/// never edited once released; a change is a new entry.
const MIGRATIONS: &[&str] = &[
    // 1: the inventory, the revocation list, identities, counters, checkpoints.
    "CREATE TABLE keys (
        id TEXT PRIMARY KEY,
        token TEXT NOT NULL,
        fingerprint BLOB NOT NULL,
        label TEXT NOT NULL,
        class INTEGER NOT NULL,
        key_type INTEGER NOT NULL,
        owner TEXT NOT NULL,
        created INTEGER NOT NULL,
        state TEXT NOT NULL,
        destroy_at INTEGER,
        expires INTEGER,
        tags TEXT NOT NULL,
        UNIQUE (token, fingerprint)
    );
    CREATE TABLE usage (
        key TEXT NOT NULL REFERENCES keys(id),
        operation TEXT NOT NULL,
        count INTEGER NOT NULL,
        PRIMARY KEY (key, operation)
    );
    CREATE TABLE revocations (
        key TEXT PRIMARY KEY,
        label TEXT NOT NULL,
        at INTEGER NOT NULL,
        who TEXT NOT NULL,
        reason TEXT NOT NULL,
        seq INTEGER NOT NULL
    );
    CREATE TABLE identities (
        name TEXT PRIMARY KEY,
        subject TEXT NOT NULL,
        roles TEXT NOT NULL,
        tokens TEXT NOT NULL,
        disabled INTEGER NOT NULL,
        added_by TEXT NOT NULL,
        added INTEGER NOT NULL
    );
    CREATE TABLE checkpoints (
        sequence INTEGER PRIMARY KEY,
        head BLOB NOT NULL,
        at INTEGER NOT NULL,
        signature BLOB NOT NULL
    );",
    // 2: a run-time identity's PIN hash for C_Login.
    "ALTER TABLE identities ADD COLUMN pin_hash TEXT;",
    // 3: administrative changes waiting for the audit log.
    "CREATE TABLE admin_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at INTEGER NOT NULL,
        who TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        detail TEXT NOT NULL
    );",
    // 4: uses of each key per UTC day, for the daily limits.
    "CREATE TABLE daily_usage (
        key TEXT NOT NULL,
        day INTEGER NOT NULL,
        count INTEGER NOT NULL,
        PRIMARY KEY (key, day)
    );",
    // 5: dual control: approval requests and their grants.
    "CREATE TABLE approvals (
        id TEXT PRIMARY KEY,
        requester TEXT NOT NULL,
        token TEXT NOT NULL,
        action TEXT NOT NULL,
        key TEXT NOT NULL,
        label TEXT NOT NULL,
        mechanism INTEGER,
        required INTEGER NOT NULL,
        role TEXT NOT NULL,
        created INTEGER NOT NULL,
        expires INTEGER NOT NULL,
        state TEXT NOT NULL,
        approvers TEXT NOT NULL,
        denied_by TEXT
    );",
    // 6: an identity pinned to one certificate key.
    "ALTER TABLE identities ADD COLUMN spki_sha256 TEXT;",
    // 7: the open requests found without reading the history.
    "CREATE INDEX approvals_by_state ON approvals (state);",
];

pub struct Sqlite {
    db: Mutex<Db>,
}

/// The connection, whose `execute` and `query_row` keep their prepared
/// statements (every statement kmsd runs is one of a fixed few; preparing
/// one again per call cost more than running it).
struct Db(Connection);

impl Db {
    fn execute(&self, sql: &str, p: impl rusqlite::Params) -> rusqlite::Result<usize> {
        self.0.prepare_cached(sql)?.execute(p)
    }

    fn query_row<T>(
        &self,
        sql: &str,
        p: impl rusqlite::Params,
        f: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        self.0.prepare_cached(sql)?.query_row(p, f)
    }
}

impl std::ops::Deref for Db {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.0
    }
}

impl std::ops::DerefMut for Db {
    fn deref_mut(&mut self) -> &mut Connection {
        &mut self.0
    }
}

fn backend(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// A UNIQUE or PRIMARY KEY conflict as `Exists(what)`, anything else as it is.
fn exists(what: String) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |e| match e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            StoreError::Exists(what)
        }
        e => backend(e),
    }
}

/// Lists are kept as one text column, entries separated by newlines.
fn join(v: &[String]) -> String {
    v.join("\n")
}

fn split(s: String) -> Vec<String> {
    if s.is_empty() {
        vec![]
    } else {
        s.split('\n').map(str::to_string).collect()
    }
}

fn secs(v: i64) -> u64 {
    v.max(0) as u64
}

const KEY_COLUMNS: &str = "id, token, fingerprint, label, class, key_type, owner, created, \
                           state, destroy_at, expires, tags";

fn key_row(r: &Row<'_>) -> rusqlite::Result<(KeyRecord, String)> {
    let state: String = r.get(8)?;
    let k = KeyRecord {
        id: KeyId(r.get(0)?),
        token: r.get(1)?,
        fingerprint: r.get(2)?,
        label: r.get(3)?,
        class: r.get::<_, i64>(4)? as u64,
        key_type: r.get::<_, i64>(5)? as u64,
        owner: r.get(6)?,
        created: secs(r.get(7)?),
        state: KeyState::Active,
        destroy_at: r.get::<_, Option<i64>>(9)?.map(secs),
        expires: r.get::<_, Option<i64>>(10)?.map(secs),
        tags: split(r.get(11)?),
    };
    Ok((k, state))
}

fn with_state((mut k, state): (KeyRecord, String)) -> Result<KeyRecord> {
    k.state = KeyState::parse(&state)?;
    Ok(k)
}

impl Sqlite {
    /// Opens (creating if needed) and migrates the store at `path`.
    pub fn open(path: &Path) -> Result<Sqlite> {
        let db = Connection::open(path)
            .map_err(|e| StoreError::Backend(format!("{}: {e}", path.display())))?;
        Sqlite::setup(db)
    }

    /// A store in memory, for tests.
    pub fn in_memory() -> Result<Sqlite> {
        Sqlite::setup(Connection::open_in_memory().map_err(backend)?)
    }

    fn setup(mut db: Connection) -> Result<Sqlite> {
        db.pragma_update(None, "journal_mode", "WAL")
            .map_err(backend)?;
        db.pragma_update(None, "synchronous", "FULL")
            .map_err(backend)?;
        db.pragma_update(None, "foreign_keys", "ON")
            .map_err(backend)?;
        db.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(backend)?;
        let version: i64 = db
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(backend)?;
        if version as usize > MIGRATIONS.len() {
            return Err(StoreError::Corrupt(format!(
                "schema version {version} is newer than this kmsd ({})",
                MIGRATIONS.len()
            )));
        }
        for (i, m) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = db.transaction().map_err(backend)?;
            tx.execute_batch(m).map_err(backend)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)
                .map_err(backend)?;
            tx.commit().map_err(backend)?;
        }
        db.set_prepared_statement_cache_capacity(64);
        Ok(Sqlite {
            db: Mutex::new(Db(db)),
        })
    }

    fn one_key(&self, sql: &str, p: impl rusqlite::Params) -> Result<Option<KeyRecord>> {
        let db = self.db.lock();
        let row = db.query_row(sql, p, key_row).optional().map_err(backend)?;
        row.map(with_state).transpose()
    }

    /// Every row of a query, mapped.
    fn all<T>(
        &self,
        sql: &str,
        p: impl rusqlite::Params,
        f: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>> {
        let db = self.db.lock();
        let mut q = db.prepare_cached(sql).map_err(backend)?;
        let rows = q.query_map(p, f).map_err(backend)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(backend)
    }

    fn changed(n: usize, what: &KeyId) -> Result<()> {
        if n == 0 {
            Err(StoreError::NotFound(what.to_string()))
        } else {
            Ok(())
        }
    }
}

impl Store for Sqlite {
    fn insert_key(&self, k: &KeyRecord) -> Result<()> {
        let db = self.db.lock();
        db.execute(
            &format!("INSERT INTO keys ({KEY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"),
            params![
                k.id.0,
                k.token,
                k.fingerprint,
                k.label,
                k.class as i64,
                k.key_type as i64,
                k.owner,
                k.created as i64,
                k.state.as_str(),
                k.destroy_at.map(|t| t as i64),
                k.expires.map(|t| t as i64),
                join(&k.tags),
            ],
        )
        .map_err(exists(format!("key {} or its fingerprint", k.id)))?;
        Ok(())
    }

    fn key(&self, id: &KeyId) -> Result<Option<KeyRecord>> {
        self.one_key(
            &format!("SELECT {KEY_COLUMNS} FROM keys WHERE id = ?1"),
            params![id.0],
        )
    }

    fn key_by_fingerprint(&self, token: &str, fingerprint: &[u8]) -> Result<Option<KeyRecord>> {
        self.one_key(
            &format!("SELECT {KEY_COLUMNS} FROM keys WHERE token = ?1 AND fingerprint = ?2"),
            params![token, fingerprint],
        )
    }

    fn keys(&self, token: Option<&str>) -> Result<Vec<KeyRecord>> {
        let sql =
            format!("SELECT {KEY_COLUMNS} FROM keys WHERE ?1 IS NULL OR token = ?1 ORDER BY id");
        let rows = self.all(&sql, params![token], key_row)?;
        rows.into_iter().map(with_state).collect()
    }

    fn transition(
        &self,
        id: &KeyId,
        from: KeyState,
        to: KeyState,
        destroy_at: Option<u64>,
    ) -> Result<bool> {
        if !from.may_become(to) {
            return Err(StoreError::Transition(from.as_str(), to.as_str()));
        }
        let destroy_at = destroy_at.filter(|_| to == KeyState::PendingDestroy);
        let db = self.db.lock();
        let n = db
            .execute(
                "UPDATE keys SET state = ?3, destroy_at = ?4 WHERE id = ?1 AND state = ?2",
                params![
                    id.0,
                    from.as_str(),
                    to.as_str(),
                    destroy_at.map(|t| t as i64)
                ],
            )
            .map_err(backend)?;
        if n == 0 {
            let known: bool = db
                .query_row("SELECT 1 FROM keys WHERE id = ?1", params![id.0], |_| {
                    Ok(true)
                })
                .optional()
                .map_err(backend)?
                .unwrap_or(false);
            if !known {
                return Err(StoreError::NotFound(id.to_string()));
            }
        }
        Ok(n == 1)
    }

    fn due_destroys(&self, now: u64) -> Result<Vec<KeyRecord>> {
        let sql = format!(
            "SELECT {KEY_COLUMNS} FROM keys WHERE state = 'pending-destroy' \
             AND destroy_at <= ?1 ORDER BY destroy_at, id"
        );
        let rows = self.all(&sql, params![now as i64], key_row)?;
        rows.into_iter().map(with_state).collect()
    }

    fn set_label(&self, id: &KeyId, label: &str) -> Result<()> {
        let db = self.db.lock();
        let n = db
            .execute(
                "UPDATE keys SET label = ?2 WHERE id = ?1",
                params![id.0, label],
            )
            .map_err(backend)?;
        Sqlite::changed(n, id)
    }

    fn set_tags(&self, id: &KeyId, tags: &[String]) -> Result<()> {
        let db = self.db.lock();
        let n = db
            .execute(
                "UPDATE keys SET tags = ?2 WHERE id = ?1",
                params![id.0, join(tags)],
            )
            .map_err(backend)?;
        Sqlite::changed(n, id)
    }

    fn set_fingerprint(&self, id: &KeyId, fingerprint: &[u8]) -> Result<()> {
        let db = self.db.lock();
        let n = db
            .execute(
                "UPDATE keys SET fingerprint = ?2 WHERE id = ?1",
                params![id.0, fingerprint],
            )
            .map_err(exists(format!("a key with the fingerprint of {id}")))?;
        Sqlite::changed(n, id)
    }

    fn set_expires(&self, id: &KeyId, expires: Option<u64>) -> Result<()> {
        let db = self.db.lock();
        let n = db
            .execute(
                "UPDATE keys SET expires = ?2 WHERE id = ?1",
                params![id.0, expires.map(|t| t as i64)],
            )
            .map_err(backend)?;
        Sqlite::changed(n, id)
    }

    fn count_use(&self, id: &KeyId, operation: &str, n: u64) -> Result<()> {
        let db = self.db.lock();
        db.execute(
            "INSERT INTO usage (key, operation, count) VALUES (?1, ?2, ?3)
             ON CONFLICT (key, operation) DO UPDATE SET count = count + excluded.count",
            params![id.0, operation, n as i64],
        )
        .map_err(|e| match e {
            rusqlite::Error::SqliteFailure(f, _)
                if f.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                StoreError::NotFound(id.to_string())
            }
            e => backend(e),
        })?;
        Ok(())
    }

    fn usage(&self, id: &KeyId) -> Result<Vec<(String, u64)>> {
        self.all(
            "SELECT operation, count FROM usage WHERE key = ?1 ORDER BY operation",
            params![id.0],
            |r| Ok((r.get(0)?, secs(r.get(1)?))),
        )
    }

    fn revoke(&self, r: &Revocation) -> Result<()> {
        let db = self.db.lock();
        db.execute(
            "INSERT INTO revocations (key, label, at, who, reason, seq)
             VALUES (?1, ?2, ?3, ?4, ?5, (SELECT COUNT(*) FROM revocations))",
            params![r.key.0, r.label, r.when as i64, r.who, r.reason],
        )
        .map_err(exists(format!("revocation of {}", r.key)))?;
        Ok(())
    }

    fn revocation(&self, id: &KeyId) -> Result<Option<Revocation>> {
        let db = self.db.lock();
        db.query_row(
            "SELECT key, label, at, who, reason FROM revocations WHERE key = ?1",
            params![id.0],
            revocation_row,
        )
        .optional()
        .map_err(backend)
    }

    fn key_status(&self, id: &KeyId) -> Result<Option<(KeyRecord, Option<Revocation>)>> {
        let db = self.db.lock();
        let row = db
            .query_row(
                "SELECT k.id, k.token, k.fingerprint, k.label, k.class, k.key_type, k.owner,
                        k.created, k.state, k.destroy_at, k.expires, k.tags,
                        r.key, r.label, r.at, r.who, r.reason
                 FROM keys k LEFT JOIN revocations r ON r.key = k.id WHERE k.id = ?1",
                params![id.0],
                |r| {
                    let revoked = match r.get::<_, Option<String>>(12)? {
                        Some(_) => Some(revocation_at(r, 12)?),
                        None => None,
                    };
                    Ok((key_row(r)?, revoked))
                },
            )
            .optional()
            .map_err(backend)?;
        row.map(|(k, revoked)| Ok((with_state(k)?, revoked)))
            .transpose()
    }

    fn revocations(&self) -> Result<Vec<Revocation>> {
        self.all(
            "SELECT key, label, at, who, reason FROM revocations ORDER BY seq",
            [],
            revocation_row,
        )
    }

    fn insert_identity(&self, i: &IdentityRecord) -> Result<()> {
        let db = self.db.lock();
        db.execute(
            "INSERT INTO identities (name, subject, roles, tokens, disabled, added_by, added, pin_hash, spki_sha256)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                i.name,
                i.subject,
                join(&i.roles),
                join(&i.tokens),
                i.disabled,
                i.added_by,
                i.added as i64,
                i.pin_hash,
                i.spki_sha256
            ],
        )
        .map_err(exists(format!("identity {}", i.name)))?;
        Ok(())
    }

    fn identities(&self) -> Result<Vec<IdentityRecord>> {
        let sql =
            "SELECT name, subject, roles, tokens, disabled, added_by, added, pin_hash, spki_sha256
                   FROM identities ORDER BY name";
        self.all(sql, [], |r| {
            Ok(IdentityRecord {
                name: r.get(0)?,
                subject: r.get(1)?,
                roles: split(r.get(2)?),
                tokens: split(r.get(3)?),
                disabled: r.get(4)?,
                added_by: r.get(5)?,
                added: secs(r.get(6)?),
                pin_hash: r.get(7)?,
                spki_sha256: r.get(8)?,
            })
        })
    }

    fn set_identity_disabled(&self, name: &str, disabled: bool) -> Result<()> {
        let db = self.db.lock();
        let n = db
            .execute(
                "UPDATE identities SET disabled = ?2 WHERE name = ?1",
                params![name, disabled],
            )
            .map_err(backend)?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("identity {name}")));
        }
        Ok(())
    }

    fn insert_checkpoint(&self, c: &Checkpoint) -> Result<()> {
        let db = self.db.lock();
        db.execute(
            "INSERT INTO checkpoints (sequence, head, at, signature) VALUES (?1, ?2, ?3, ?4)",
            params![
                c.sequence as i64,
                c.head.as_slice(),
                c.when as i64,
                c.signature
            ],
        )
        .map_err(exists(format!("checkpoint {}", c.sequence)))?;
        Ok(())
    }

    fn last_checkpoint(&self) -> Result<Option<Checkpoint>> {
        let db = self.db.lock();
        let row = db
            .query_row(
                "SELECT sequence, head, at, signature FROM checkpoints
                 ORDER BY sequence DESC LIMIT 1",
                [],
                |r| {
                    Ok((
                        secs(r.get(0)?),
                        r.get::<_, Vec<u8>>(1)?,
                        secs(r.get(2)?),
                        r.get::<_, Vec<u8>>(3)?,
                    ))
                },
            )
            .optional()
            .map_err(backend)?;
        row.map(|(sequence, head, when, signature)| {
            let head = <[u8; 32]>::try_from(head.as_slice())
                .map_err(|_| StoreError::Corrupt(format!("checkpoint {sequence}: head")))?;
            Ok(Checkpoint {
                sequence,
                head,
                when,
                signature,
            })
        })
        .transpose()
    }

    fn take_daily(&self, id: &KeyId, day: u64, limit: u64) -> Result<Option<u64>> {
        let db = self.db.lock();
        // A crash of kmsd loses nothing written to the WAL; only this hot
        // counter skips the fsync a power loss would need.
        db.pragma_update(None, "synchronous", "NORMAL")
            .map_err(backend)?;
        let r = db
            .query_row(
                "INSERT INTO daily_usage (key, day, count) VALUES (?1, ?2, 1)
                 ON CONFLICT (key, day) DO UPDATE SET count = count + 1 WHERE count < ?3
                 RETURNING count",
                params![id.0, day as i64, limit as i64],
                |r| r.get::<_, i64>(0),
            )
            .optional();
        db.pragma_update(None, "synchronous", "FULL")
            .map_err(backend)?;
        match r.map_err(backend)? {
            Some(n) if (n as u64) <= limit => Ok(Some(n as u64)),
            _ => Ok(None),
        }
    }

    fn daily(&self, id: &KeyId, day: u64) -> Result<u64> {
        let db = self.db.lock();
        let n: Option<i64> = db
            .query_row(
                "SELECT count FROM daily_usage WHERE key = ?1 AND day = ?2",
                params![id.0, day as i64],
                |r| r.get(0),
            )
            .optional()
            .map_err(backend)?;
        Ok(n.unwrap_or(0) as u64)
    }

    fn daily_all(&self, day: u64) -> Result<Vec<(KeyId, u64)>> {
        self.all(
            "SELECT key, count FROM daily_usage WHERE day = ?1 ORDER BY key",
            params![day as i64],
            |r| Ok((KeyId(r.get(0)?), r.get::<_, i64>(1)? as u64)),
        )
    }

    fn insert_approval(&self, a: &Approval) -> Result<()> {
        let db = self.db.lock();
        db.execute(
            "INSERT INTO approvals (id, requester, token, action, key, label, mechanism, required,
                                    role, created, expires, state, approvers, denied_by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            params![
                a.id,
                a.requester,
                a.token,
                a.action,
                a.key,
                a.label,
                a.mechanism.map(|m| m as i64),
                a.required,
                a.role,
                a.created as i64,
                a.expires as i64,
                a.state.as_str(),
                join(&a.approvers),
                a.denied_by
            ],
        )
        .map_err(exists(format!("approval {}", a.id)))?;
        Ok(())
    }

    fn approval(&self, id: &str) -> Result<Option<Approval>> {
        Ok(self
            .approval_rows("WHERE id = ?1", params![id])?
            .into_iter()
            .next())
    }

    fn approvals(&self) -> Result<Vec<Approval>> {
        self.approval_rows("ORDER BY created DESC, id", [])
    }

    fn open_approvals(&self) -> Result<Vec<Approval>> {
        self.approval_rows(
            "WHERE state IN ('pending', 'approved') ORDER BY created DESC, id",
            [],
        )
    }

    fn update_approval(
        &self,
        a: &Approval,
        from: ApprovalState,
        approvers_before: usize,
    ) -> Result<bool> {
        let db = self.db.lock();
        let n = db
            .execute(
                "UPDATE approvals SET state = ?2, approvers = ?3, expires = ?4, denied_by = ?5
                 WHERE id = ?1 AND state = ?6
                   AND CASE WHEN approvers = '' THEN 0
                            ELSE length(approvers) - length(replace(approvers, char(10), '')) + 1 END = ?7",
                params![
                    a.id,
                    a.state.as_str(),
                    join(&a.approvers),
                    a.expires as i64,
                    a.denied_by,
                    from.as_str(),
                    approvers_before as i64
                ],
            )
            .map_err(backend)?;
        Ok(n == 1)
    }

    fn add_admin_event(&self, e: &AdminEvent) -> Result<()> {
        let db = self.db.lock();
        db.execute(
            "INSERT INTO admin_events (at, who, action, target, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![e.when as i64, e.who, e.action, e.target, e.detail],
        )
        .map_err(backend)?;
        Ok(())
    }

    fn admin_events(&self) -> Result<Vec<(u64, AdminEvent)>> {
        self.events()
    }

    fn remove_admin_events(&self, upto: u64) -> Result<()> {
        let db = self.db.lock();
        db.execute(
            "DELETE FROM admin_events WHERE id <= ?1",
            params![upto as i64],
        )
        .map_err(backend)?;
        Ok(())
    }
}

impl Sqlite {
    fn approval_rows(&self, tail: &str, p: impl rusqlite::Params) -> Result<Vec<Approval>> {
        let sql = format!(
            "SELECT id, requester, token, action, key, label, mechanism, required, role, created,
                    expires, state, approvers, denied_by FROM approvals {tail}"
        );
        let rows = self.all(&sql, p, |r| {
            Ok((
                Approval {
                    id: r.get(0)?,
                    requester: r.get(1)?,
                    token: r.get(2)?,
                    action: r.get(3)?,
                    key: r.get(4)?,
                    label: r.get(5)?,
                    mechanism: r.get::<_, Option<i64>>(6)?.map(|m| m as u64),
                    required: r.get(7)?,
                    role: r.get(8)?,
                    created: secs(r.get(9)?),
                    expires: secs(r.get(10)?),
                    state: ApprovalState::Pending,
                    approvers: split(r.get(12)?),
                    denied_by: r.get(13)?,
                },
                r.get::<_, String>(11)?,
            ))
        })?;
        rows.into_iter()
            .map(|(mut a, state)| {
                a.state = ApprovalState::parse(&state)?;
                Ok(a)
            })
            .collect()
    }

    fn events(&self) -> Result<Vec<(u64, AdminEvent)>> {
        self.all(
            "SELECT id, at, who, action, target, detail FROM admin_events ORDER BY id",
            [],
            |r| {
                Ok((
                    secs(r.get(0)?),
                    AdminEvent {
                        when: secs(r.get(1)?),
                        who: r.get(2)?,
                        action: r.get(3)?,
                        target: r.get(4)?,
                        detail: r.get(5)?,
                    },
                ))
            },
        )
    }
}

fn revocation_row(r: &Row<'_>) -> rusqlite::Result<Revocation> {
    revocation_at(r, 0)
}

/// A revocation from the five columns starting at `i`.
fn revocation_at(r: &Row<'_>, i: usize) -> rusqlite::Result<Revocation> {
    Ok(Revocation {
        key: KeyId(r.get(i)?),
        label: r.get(i + 1)?,
        when: secs(r.get(i + 2)?),
        who: r.get(i + 3)?,
        reason: r.get(i + 4)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::conformance_tests!(|| Sqlite::in_memory().unwrap());

    // State written through one handle is there after the file is opened
    // again, and the schema is not migrated twice.
    #[test]
    fn state_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kmsd.db");
        let k = crate::store::conformance::key("a", b"fp");
        Sqlite::open(&path).unwrap().insert_key(&k).unwrap();
        let again = Sqlite::open(&path).unwrap();
        assert_eq!(again.key(&k.id).unwrap(), Some(k));
    }

    // A store written by a newer kmsd is refused, not silently misread.
    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kmsd.db");
        drop(Sqlite::open(&path).unwrap());
        let db = Connection::open(&path).unwrap();
        db.pragma_update(None, "user_version", 99).unwrap();
        drop(db);
        assert!(matches!(Sqlite::open(&path), Err(StoreError::Corrupt(_))));
    }
}
