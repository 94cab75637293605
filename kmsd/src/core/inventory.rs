//! The key inventory (DESIGN.md decision 13): every key and certificate on
//! a kmsd token has a key id in the store, found again by its fingerprint
//! ([`super::facts`]) after a restart and the same for every client. Keys
//! created outside kmsd are adopted (owner empty) when first seen. What
//! kmsd read of each backend object is kept here, per backend object,
//! until kmsd destroys or changes it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use pkcs11_sys::CK_SLOT_ID;

use super::facts::{self, Facts};
use crate::handles::{BObject, BSession};
use crate::hsm::Backend;
use crate::store::{KeyId, KeyRecord, KeyState, Revocation, Store, StoreError};

/// What kmsd knows of one backend object.
#[derive(Debug, Clone)]
pub struct Known {
    pub facts: Facts,
    /// Token keys and certificates; `None` for session objects and data.
    pub key: Option<KeyId>,
}

/// A key's state as decisions see it.
#[derive(Debug, Clone)]
pub struct Status {
    pub record: KeyRecord,
    pub revoked: Option<Revocation>,
}

pub struct Inventory {
    pub store: Arc<dyn Store>,
    /// How long a destroyed key stays restorable.
    pub destroy_window: Duration,
    /// When kmsd rotates keys by itself.
    pub rotation: super::rotate::Schedule,
    /// Keys whose scheduled rotation failed, and when to try again.
    pub rotation_retry: Mutex<HashMap<KeyId, u64>>,
    known: Mutex<HashMap<(CK_SLOT_ID, BObject), Arc<Known>>>,
    /// Uses counted since the last flush to the store.
    usage: Mutex<HashMap<(KeyId, &'static str), u64>>,
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Inventory {
    pub fn new(store: Arc<dyn Store>, destroy_window: Duration) -> Inventory {
        Inventory {
            store,
            destroy_window,
            rotation: Default::default(),
            rotation_retry: Mutex::new(HashMap::new()),
            known: Mutex::new(HashMap::new()),
            usage: Mutex::new(HashMap::new()),
        }
    }

    /// What kmsd knows of backend object `o` on `slot` (token `token`),
    /// read through session `s` on first sight. A new token key is adopted
    /// with `owner` (the identity creating it, or empty).
    pub fn known(
        &self,
        b: &Backend,
        s: BSession,
        slot: CK_SLOT_ID,
        token: &str,
        o: BObject,
        owner: &str,
    ) -> Result<Option<Arc<Known>>, StoreError> {
        if let Some(k) = self.known.lock().get(&(slot, o)) {
            return Ok(Some(k.clone()));
        }
        let Some(f) = facts::read(b, s, o) else {
            return Ok(None);
        };
        let key = match (f.token, f.fingerprint) {
            (true, Some(fp)) => Some(self.identify(token, &f, &fp, owner)?),
            _ => None,
        };
        let k = Arc::new(Known { facts: f, key });
        self.known.lock().insert((slot, o), k.clone());
        Ok(Some(k))
    }

    /// The cached knowledge of an object, without reading it.
    pub fn cached(&self, slot: CK_SLOT_ID, o: BObject) -> Option<Arc<Known>> {
        self.known.lock().get(&(slot, o)).cloned()
    }

    /// Forgets an object kmsd destroyed or changed.
    pub fn forget(&self, slot: CK_SLOT_ID, o: BObject) {
        self.known.lock().remove(&(slot, o));
    }

    fn identify(
        &self,
        token: &str,
        f: &Facts,
        fp: &[u8; 32],
        owner: &str,
    ) -> Result<KeyId, StoreError> {
        if let Some(k) = self.store.key_by_fingerprint(token, fp)? {
            if k.label != f.label {
                self.store.set_label(&k.id, &f.label)?;
            }
            return Ok(k.id);
        }
        let record = KeyRecord {
            id: KeyId::new(),
            token: token.to_string(),
            fingerprint: fp.to_vec(),
            label: f.label.clone(),
            class: f.class,
            key_type: f.key_type.unwrap_or(u64::MAX),
            owner: owner.to_string(),
            created: now(),
            state: KeyState::Active,
            destroy_at: None,
            expires: None,
            tags: vec![],
        };
        match self.store.insert_key(&record) {
            Ok(()) => {
                tracing::info!(key = %record.id, token, label = %record.label, owner, "key added to the inventory");
                Ok(record.id)
            }
            // Another instance or thread adopted it first.
            Err(StoreError::Exists(_)) => self
                .store
                .key_by_fingerprint(token, fp)?
                .map(|k| k.id)
                .ok_or_else(|| StoreError::NotFound(format!("key with fingerprint on {token}"))),
            Err(e) => Err(e),
        }
    }

    /// Re-reads an object kmsd changed (label, `CKA_ID`): its record
    /// follows it to the new fingerprint.
    pub fn changed(
        &self,
        b: &Backend,
        s: BSession,
        slot: CK_SLOT_ID,
        o: BObject,
    ) -> Result<(), StoreError> {
        let Some(old) = self.known.lock().remove(&(slot, o)) else {
            return Ok(());
        };
        let Some(f) = facts::read(b, s, o) else {
            return Ok(());
        };
        if let (Some(id), Some(fp)) = (&old.key, f.fingerprint) {
            if old.facts.fingerprint != Some(fp) {
                self.store.set_fingerprint(id, &fp)?;
            }
            if old.facts.label != f.label {
                self.store.set_label(id, &f.label)?;
            }
        }
        self.known.lock().insert(
            (slot, o),
            Arc::new(Known {
                facts: f,
                key: old.key.clone(),
            }),
        );
        Ok(())
    }

    /// A key's record and revocation.
    pub fn status(&self, id: &KeyId) -> Result<Option<Status>, StoreError> {
        Ok(self
            .store
            .key_status(id)?
            .map(|(record, revoked)| Status { record, revoked }))
    }

    /// Counts one use of a key (kept in memory, written by [`Self::flush`]).
    pub fn count(&self, id: &KeyId, operation: &'static str) {
        *self
            .usage
            .lock()
            .entry((id.clone(), operation))
            .or_insert(0) += 1;
    }

    /// Writes the uses counted since the last flush.
    pub fn flush(&self) {
        let pending: Vec<_> = self.usage.lock().drain().collect();
        for ((id, op), n) in pending {
            if let Err(e) = self.store.count_use(&id, op, n) {
                tracing::warn!(key = %id, "usage count not written: {e}");
            }
        }
    }

    /// Puts a key in pending-destroy: hidden from every client at once, its
    /// HSM object destroyed when the window ends unless restored first.
    pub fn schedule_destroy(&self, id: &KeyId) -> Result<bool, StoreError> {
        let at = now() + self.destroy_window.as_secs();
        for from in [KeyState::Active, KeyState::Disabled] {
            if self
                .store
                .transition(id, from, KeyState::PendingDestroy, Some(at))?
            {
                return Ok(true);
            }
        }
        Ok(false)
    }
}
