//! Key rotation. A key is its label and its versions: rotating makes the
//! next version on the HSM with the same type, size, usage, label,
//! `CKA_ID`, owner and tags, so stock clients that find the key by label
//! or id (`pkcs11-tool --id`/`--label`, `pkcs11:object=` URIs, Java
//! aliases) use the new version from then on. The version it replaces
//! keeps its material and is renamed: label `label@vN`, `CKA_ID` the
//! key's `CKA_ID` followed by the bytes of `@vN` (N counts from 1, the
//! first version); its expiry is set to now, so it still verifies,
//! decrypts and unwraps, and signs or encrypts no more. A certificate of
//! the pair (same label and `CKA_ID`) is renamed with it: it certifies
//! the old version's key. An operation
//! started on it before the rotation finishes on it.
//!
//! Done by kmsd on its own backend session, all or nothing: if the new
//! version cannot be made, the old one gets its names and its records back.

use kmsp11_proto::{AttrValue, Attribute, MechParam, Mechanism};
use pkcs11_sys::*;

use super::WorkError::{self, Failed, Refused};
use super::{facts, inventory};
use crate::daemon::{Daemon, VToken};
use crate::handles::{BObject, BSession};
use crate::hsm::{Backend, CMechanism, CTemplate};
use crate::store::{KeyId, KeyRecord, KeyState};

/// When kmsd rotates a key by itself: its current version's age, by key
/// type (`[keys] rotate_*_secs`; 0 never), unless the key's tag
/// `rotate=<duration>` or `rotate=never` says otherwise.
#[derive(Debug, Clone, Default)]
pub struct Schedule {
    rsa: u64,
    aes: u64,
    ed25519: u64,
    ec: u64,
    generic_secret: u64,
}

impl From<&crate::config::KeysCfg> for Schedule {
    fn from(c: &crate::config::KeysCfg) -> Schedule {
        Schedule {
            rsa: c.rotate_rsa_secs,
            aes: c.rotate_aes_secs,
            ed25519: c.rotate_ed25519_secs,
            ec: c.rotate_ec_secs,
            generic_secret: c.rotate_generic_secret_secs,
        }
    }
}

impl Schedule {
    /// The key's rotation period in seconds and where it comes from: its
    /// `rotate=` tag, else what the policy says (`by_policy`, asked only
    /// then), else the setting for its type; `None` when it is never
    /// rotated by schedule.
    pub fn period(
        &self,
        k: &KeyRecord,
        by_policy: impl FnOnce() -> Option<(u64, String)>,
    ) -> Option<(u64, String)> {
        if let Some(tag) = k.tags.iter().find_map(|t| t.strip_prefix("rotate=")) {
            return match tag {
                "never" => None,
                d => humantime::parse_duration(d)
                    .ok()
                    .map(|d| (d.as_secs(), format!("tag rotate={tag}")))
                    .filter(|(s, _)| *s > 0),
            };
        }
        if let Some(p) = by_policy() {
            return Some(p);
        }
        let (secs, name) = match k.key_type {
            CKK_RSA => (self.rsa, "rsa"),
            CKK_AES => (self.aes, "aes"),
            CKK_EC_EDWARDS => (self.ed25519, "ed25519"),
            CKK_EC => (self.ec, "ec"),
            CKK_GENERIC_SECRET => (self.generic_secret, "generic_secret"),
            _ => return None,
        };
        (secs > 0).then(|| (secs, format!("keys.rotate_{name}_secs")))
    }

    /// Whether key `k` is a current version whose time has come at `now`.
    pub fn due(
        &self,
        k: &KeyRecord,
        now: u64,
        by_policy: impl FnOnce() -> Option<(u64, String)>,
    ) -> Option<String> {
        let current = matches!(k.class, CKO_PRIVATE_KEY | CKO_SECRET_KEY)
            && k.state == KeyState::Active
            && !k.label.is_empty()
            && !k.label.contains("@v")
            && k.expires.is_none_or(|e| e > now);
        if !current {
            return None;
        }
        let (period, why) = self.period(k, by_policy)?;
        (k.created.saturating_add(period) <= now).then_some(why)
    }
}

/// What a rotation did.
#[derive(Debug)]
pub struct Rotated {
    /// The new version's key (the private key of a pair).
    pub key: KeyId,
    /// The replaced version's new label, `label@vN`.
    pub old_label: String,
    /// N: the replaced version's number; the new one is N + 1.
    pub version: u64,
}

impl Rotated {
    /// For the audit record, `old` being the replaced version's key.
    pub fn describe(&self, old: &KeyId) -> String {
        format!(
            "version {} is {old}, now labelled {}; version {} is {}",
            self.version,
            self.old_label,
            self.version + 1,
            self.key
        )
    }
}

/// Attributes a new version copies from the one it replaces, when set.
const SECRET: &[CK_ATTRIBUTE_TYPE] = &[
    CKA_CLASS,
    CKA_KEY_TYPE,
    CKA_VALUE_LEN,
    CKA_TOKEN,
    CKA_PRIVATE,
    CKA_SENSITIVE,
    CKA_EXTRACTABLE,
    CKA_ENCRYPT,
    CKA_DECRYPT,
    CKA_SIGN,
    CKA_VERIFY,
    CKA_WRAP,
    CKA_UNWRAP,
    CKA_DERIVE,
    CKA_ID,
];
const PRIVATE: &[CK_ATTRIBUTE_TYPE] = &[
    CKA_TOKEN,
    CKA_PRIVATE,
    CKA_SENSITIVE,
    CKA_EXTRACTABLE,
    CKA_DECRYPT,
    CKA_SIGN,
    CKA_SIGN_RECOVER,
    CKA_UNWRAP,
    CKA_DERIVE,
    CKA_ID,
];
const PUBLIC: &[CK_ATTRIBUTE_TYPE] = &[
    CKA_TOKEN,
    CKA_ENCRYPT,
    CKA_VERIFY,
    CKA_VERIFY_RECOVER,
    CKA_WRAP,
    CKA_DERIVE,
    CKA_ID,
];

/// The label a replaced version takes.
pub fn version_label(label: &str, n: u64) -> String {
    format!("{label}@v{n}")
}

/// A name as `name@vN` (N from 1) into its key and version; any other
/// name is a key's name as it is.
pub fn split_version(name: &str) -> (&str, Option<u64>) {
    match name.rsplit_once("@v") {
        Some((base, n)) if !base.is_empty() => match n.parse::<u64>() {
            Ok(n) if n > 0 => (base, Some(n)),
            _ => (name, None),
        },
        _ => (name, None),
    }
}

/// Key `base`'s versions among these records, newest first (for a pair,
/// private before public): the current one is labelled `base`, the
/// replaced ones `base@vN`.
pub fn versions<'a>(base: &str, keys: &'a [KeyRecord]) -> Vec<(u64, &'a KeyRecord)> {
    let current = current_version(base, keys);
    let mut v: Vec<(u64, &KeyRecord)> = keys
        .iter()
        .filter_map(|k| match old_version(base, &k.label) {
            Some(n) => Some((n, k)),
            None => (k.label == base).then_some((current, k)),
        })
        .collect();
    v.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.class.cmp(&b.1.class)));
    v
}

/// N when `label` is `base@vN`, a replaced version of key `base`.
pub fn old_version(base: &str, label: &str) -> Option<u64> {
    label.strip_prefix(base)?.strip_prefix("@v")?.parse().ok()
}

/// The number of key `base`'s current version among these records: one
/// more than its replaced versions.
pub fn current_version<'a>(base: &str, keys: impl IntoIterator<Item = &'a KeyRecord>) -> u64 {
    keys.into_iter()
        .filter_map(|k| old_version(base, &k.label))
        .max()
        .unwrap_or(0)
        + 1
}

/// Rotates key `k` (a private or secret key, active, the current version).
pub fn rotate(d: &Daemon, k: &KeyRecord) -> Result<Rotated, WorkError> {
    if !matches!(k.class, CKO_PRIVATE_KEY | CKO_SECRET_KEY) {
        return Err(Refused(format!(
            "{} is a {}: rotate its private or secret key",
            k.id,
            facts::class_name(k.class)
        )));
    }
    if k.state != KeyState::Active {
        return Err(Refused(format!("{} is {}", k.id, k.state.as_str())));
    }
    if k.label.is_empty() || k.label.contains("@v") {
        return Err(Refused(format!(
            "{} is not a key's current version (label {:?})",
            k.id, k.label
        )));
    }
    let t = d
        .token_named(&k.token)
        .ok_or_else(|| Failed(format!("token {:?} is not served", k.token)))?;
    let store = d.inventory.store.as_ref();
    let keys = store
        .keys(Some(&k.token))
        .map_err(|e| Failed(format!("store: {e}")))?;
    // The number the current version gets as it is replaced.
    let version = current_version(&k.label, &keys);
    let b = &d.backend;
    let s = b
        .open_session(t.backend_slot, CKF_SERIAL_SESSION | CKF_RW_SESSION)
        .map_err(|e| Failed(e.to_string()))?;
    let r = rotate_in(d, &t, s, k, version);
    let _ = b.close_session(s);
    r
}

fn rotate_in(
    d: &Daemon,
    t: &VToken,
    s: BSession,
    k: &KeyRecord,
    version: u64,
) -> Result<Rotated, WorkError> {
    let b = &d.backend;
    let hsm = |e: crate::error::Error| Failed(format!("HSM: {e}"));
    // The key's objects: the one kmsd knows by its fingerprint, and for a
    // private key the public key of the pair (same label and CKA_ID).
    let labelled = b
        .find(
            s,
            &[Attribute {
                kind: CKA_LABEL,
                value: AttrValue::Bytes(k.label.as_bytes().to_vec()),
            }],
        )
        .map_err(hsm)?;
    let read = |o| facts::read(b, s, o);
    let key = labelled
        .iter()
        .copied()
        .find(|o| {
            read(*o).and_then(|f| f.fingerprint).map(|f| f.to_vec()) == Some(k.fingerprint.clone())
        })
        .ok_or_else(|| {
            Failed(format!(
                "{}: no object with label {:?} on the HSM",
                k.id, k.label
            ))
        })?;
    let id = match b.attributes(s, key, &[CKA_ID]).pop() {
        Some(Attribute {
            value: AttrValue::Bytes(v),
            ..
        }) => v,
        _ => vec![],
    };
    let public = if k.class == CKO_PRIVATE_KEY {
        labelled.iter().copied().find(|o| {
            *o != key
                && read(*o).is_some_and(|f| f.class == CKO_PUBLIC_KEY)
                && b.attributes(s, *o, &[CKA_ID])
                    .first()
                    .is_some_and(|a| a.value == AttrValue::Bytes(id.clone()))
        })
    } else {
        None
    };
    // The new version's templates, before anything changes.
    let label = |l: &str| Attribute {
        kind: CKA_LABEL,
        value: AttrValue::Bytes(l.as_bytes().to_vec()),
    };
    let gen = |m| {
        CMechanism::new(
            &Mechanism {
                mechanism: m,
                param: MechParam::None,
            },
            false,
            |h| h,
        )
    };
    let made = if k.class == CKO_SECRET_KEY {
        let mut tmpl = b.attributes(s, key, SECRET);
        tmpl.push(label(&k.label));
        let m = match k.key_type {
            CKK_AES => CKM_AES_KEY_GEN,
            CKK_GENERIC_SECRET => CKM_GENERIC_SECRET_KEY_GEN,
            other => {
                return Err(Refused(format!(
                    "{}: no rotation for {} keys",
                    k.id,
                    facts::key_type_name(other)
                )))
            }
        };
        New::Secret(gen(m), tmpl)
    } else {
        let (m, params) = match k.key_type {
            CKK_RSA => {
                let mut p = b.attributes(s, key, &[CKA_MODULUS, CKA_PUBLIC_EXPONENT]);
                let bits = match p.first() {
                    Some(Attribute {
                        kind: CKA_MODULUS,
                        value: AttrValue::Bytes(n),
                    }) => n.len() as u64 * 8,
                    _ => return Err(Failed(format!("{}: modulus unreadable", k.id))),
                };
                p.retain(|a| a.kind != CKA_MODULUS);
                p.push(Attribute {
                    kind: CKA_MODULUS_BITS,
                    value: AttrValue::Ulong(bits),
                });
                (CKM_RSA_PKCS_KEY_PAIR_GEN, p)
            }
            CKK_EC => (CKM_EC_KEY_PAIR_GEN, b.attributes(s, key, &[CKA_EC_PARAMS])),
            CKK_EC_EDWARDS => (
                CKM_EC_EDWARDS_KEY_PAIR_GEN,
                b.attributes(s, key, &[CKA_EC_PARAMS]),
            ),
            other => {
                return Err(Refused(format!(
                    "{}: no rotation for {} keys",
                    k.id,
                    facts::key_type_name(other)
                )))
            }
        };
        let mut private = b.attributes(s, key, PRIVATE);
        private.push(label(&k.label));
        let mut pub_t = match public {
            Some(p) => b.attributes(s, p, PUBLIC),
            None => b.attributes(s, key, &[CKA_TOKEN, CKA_ID]),
        };
        pub_t.extend(params);
        pub_t.push(label(&k.label));
        New::Pair(gen(m), pub_t, private)
    };
    // Certificates of the pair (same CKA_ID) certify the old version's
    // key: they go with it, so that Java's keystore pairs them right.
    let certificates: Vec<BObject> = if k.class == CKO_PRIVATE_KEY {
        labelled
            .iter()
            .copied()
            .filter(|o| {
                read(*o).is_some_and(|f| f.class == CKO_CERTIFICATE)
                    && b.attributes(s, *o, &[CKA_ID])
                        .first()
                        .is_some_and(|a| a.value == AttrValue::Bytes(id.clone()))
            })
            .collect()
    } else {
        vec![]
    };
    // The old version's records, before its names change.
    let store = d.inventory.store.as_ref();
    let failed = |e: String| Failed(format!("store: {e}"));
    let mut old = Vec::new();
    for o in std::iter::once(key).chain(public).chain(certificates) {
        let rec = d
            .inventory
            .known(b, s, t.backend_slot, &t.name, o, "")
            .map_err(|e| failed(e.to_string()))?
            .and_then(|kn| kn.key.clone())
            .map(|id| store.key(&id))
            .transpose()
            .map_err(|e| failed(e.to_string()))?
            .flatten();
        old.push((o, rec));
    }
    // Rename the old version (HSM, then its records: the new version will
    // show what the old one showed), make the new one, or undo it all.
    let old_label = version_label(&k.label, version);
    let mut old_id = id.clone();
    old_id.extend_from_slice(format!("@v{version}").as_bytes());
    let objects: Vec<BObject> = old.iter().map(|(o, _)| *o).collect();
    rename(b, s, &objects, &old_label, &old_id).map_err(hsm)?;
    let now = inventory::now();
    let renamed = (|| {
        for (o, rec) in &old {
            d.inventory.forget(t.backend_slot, *o);
            let Some(rec) = rec else { continue };
            if let Some(fp) = read(*o).and_then(|f| f.fingerprint) {
                store.set_fingerprint(&rec.id, &fp)?;
            }
            store.set_label(&rec.id, &old_label)?;
            if rec.class != CKO_CERTIFICATE {
                store.set_expires(&rec.id, Some(now))?;
            }
        }
        Ok::<(), crate::store::StoreError>(())
    })();
    let new = match renamed
        .map_err(|e| failed(e.to_string()))
        .and_then(|_| made.generate(b, s).map_err(hsm))
    {
        Ok(v) => v,
        Err(e) => {
            undo(d, t, s, k, &old, &id);
            return Err(e);
        }
    };
    // The new version, adopted with the old one's owner and tags.
    let mut new_key = None;
    for (i, o) in new.iter().enumerate() {
        let known = d
            .inventory
            .known(b, s, t.backend_slot, &t.name, *o, &k.owner)
            .map_err(|e| failed(e.to_string()))?;
        if let Some(id) = known.and_then(|kn| kn.key.clone()) {
            store
                .set_tags(&id, &k.tags)
                .map_err(|e| failed(e.to_string()))?;
            if i == 0 {
                new_key = Some(id);
            }
        }
    }
    let key = new_key.ok_or_else(|| Failed("the new version has no key record".into()))?;
    Ok(Rotated {
        key,
        old_label,
        version,
    })
}

/// The new version to make.
enum New {
    Secret(CMechanism, Vec<Attribute>),
    Pair(CMechanism, Vec<Attribute>, Vec<Attribute>),
}

impl New {
    /// Makes it: its objects, the private or secret key first.
    fn generate(self, b: &Backend, s: BSession) -> Result<Vec<BObject>, crate::error::Error> {
        match self {
            New::Secret(mut m, t) => {
                Ok(vec![b.generate_key(s, &mut m, &mut CTemplate::new(&t))?])
            }
            New::Pair(mut m, public, private) => {
                let (p, q) = b.generate_key_pair(
                    s,
                    &mut m,
                    &mut CTemplate::new(&public),
                    &mut CTemplate::new(&private),
                )?;
                Ok(vec![q, p])
            }
        }
    }
}

/// Sets the objects' label and `CKA_ID`.
fn rename(
    b: &Backend,
    s: BSession,
    objects: &[BObject],
    label: &str,
    id: &[u8],
) -> Result<(), crate::error::Error> {
    for o in objects {
        let mut t = CTemplate::new(&[
            Attribute {
                kind: CKA_LABEL,
                value: AttrValue::Bytes(label.as_bytes().to_vec()),
            },
            Attribute {
                kind: CKA_ID,
                value: AttrValue::Bytes(id.to_vec()),
            },
        ]);
        b.set_attribute_value(s, *o, &mut t)?;
    }
    Ok(())
}

/// Puts the old version back as it was: names on the HSM, records in the
/// store. Logged, not returned: the rotation's own error is the answer.
fn undo(
    d: &Daemon,
    t: &VToken,
    s: BSession,
    k: &KeyRecord,
    old: &[(BObject, Option<KeyRecord>)],
    id: &[u8],
) {
    let objects: Vec<BObject> = old.iter().map(|(o, _)| *o).collect();
    if let Err(e) = rename(&d.backend, s, &objects, &k.label, id) {
        tracing::error!(key = %k.id, "rotation undone: names not restored: {e}");
    }
    let store = d.inventory.store.as_ref();
    for (o, rec) in old {
        d.inventory.forget(t.backend_slot, *o);
        let Some(rec) = rec else { continue };
        let r = store
            .set_fingerprint(&rec.id, &rec.fingerprint)
            .and_then(|_| store.set_label(&rec.id, &rec.label))
            .and_then(|_| store.set_expires(&rec.id, rec.expires));
        if let Err(e) = r {
            tracing::error!(key = %rec.id, "rotation undone: record not restored: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(key_type: u64, label: &str, tags: &[&str]) -> KeyRecord {
        KeyRecord {
            id: KeyId::new(),
            token: "t".into(),
            fingerprint: vec![],
            label: label.into(),
            class: if key_type == CKK_AES {
                CKO_SECRET_KEY
            } else {
                CKO_PRIVATE_KEY
            },
            key_type,
            owner: String::new(),
            created: 1_000,
            state: KeyState::Active,
            destroy_at: None,
            expires: None,
            tags: tags.iter().map(|t| t.to_string()).collect(),
        }
    }

    #[test]
    fn defaults_rotate_rsa_and_aes_quarterly_and_ed25519_yearly() {
        let s = Schedule::from(&crate::config::KeysCfg::default());
        let day = 24 * 3600;
        assert!(s
            .due(&key(CKK_RSA, "r", &[]), 1_000 + 90 * day, || None)
            .is_some());
        assert!(s
            .due(&key(CKK_RSA, "r", &[]), 1_000 + 89 * day, || None)
            .is_none());
        assert!(s
            .due(&key(CKK_AES, "a", &[]), 1_000 + 90 * day, || None)
            .is_some());
        assert!(s
            .due(&key(CKK_EC_EDWARDS, "e", &[]), 1_000 + 364 * day, || None)
            .is_none());
        assert!(s
            .due(&key(CKK_EC_EDWARDS, "e", &[]), 1_000 + 365 * day, || None)
            .is_some());
        assert!(
            s.due(&key(CKK_EC, "c", &[]), u64::MAX / 2, || None)
                .is_none(),
            "EC: never by default"
        );
    }

    #[test]
    fn tags_override_and_old_versions_are_never_due() {
        let s = Schedule::from(&crate::config::KeysCfg::default());
        let later = 1_000 + 400 * 24 * 3600;
        assert!(s
            .due(&key(CKK_RSA, "r", &["rotate=never"]), later, || None)
            .is_none());
        let tagged = key(CKK_EC, "c", &["rotate=1h"]);
        assert_eq!(
            s.due(&tagged, 1_000 + 3600, || None).as_deref(),
            Some("tag rotate=1h")
        );
        assert!(s.due(&tagged, 1_000 + 3599, || None).is_none());
        assert!(s.due(&key(CKK_RSA, "r@v1", &[]), later, || None).is_none());
        let mut public = key(CKK_RSA, "r", &[]);
        public.class = CKO_PUBLIC_KEY;
        assert!(s.due(&public, later, || None).is_none());
        let mut expired = key(CKK_RSA, "r", &[]);
        expired.expires = Some(2_000);
        assert!(s.due(&expired, later, || None).is_none());
    }
}
