//! Key lifecycle work kmsd does by itself: carrying out pending destroys
//! whose window ended (the HSM object destroyed, the key `destroyed`, an
//! audit record written before the HSM acts), rotating keys whose time
//! has come, and writing usage counts.

use kmsp11_proto::{AttrValue, Attribute};
use pkcs11_sys::*;

use super::facts;
use crate::audit::Record;
use crate::daemon::Daemon;
use crate::store::{KeyRecord, KeyState};

/// Runs the periodic lifecycle work once.
pub fn tick(d: &Daemon) {
    d.inventory.flush();
    admin_events(d);
    expire_approvals(d);
    let due = match d.inventory.store.due_destroys(super::inventory::now()) {
        Ok(v) => v,
        Err(e) => {
            tracing::error!("store: {e}; pending destroys wait");
            return;
        }
    };
    for k in due {
        if let Err(e) = destroy(d, &k) {
            tracing::error!(key = %k.id, "pending destroy not carried out: {e}; retried later");
        }
    }
    rotate_due(d);
}

/// The rotation period the policy gives key `k`: the `@rotate_every` of
/// the policies that permit identity `kmsd` the action `rotate` on it.
/// Policy sees the key as kmsd's records know it: its size is 0 there,
/// and it counts as sensitive and not extractable.
fn policy_period(d: &Daemon, k: &KeyRecord, now: u64) -> Option<(u64, String)> {
    use crate::authz::policy::{KeyView, Principal, Situation};
    let view = KeyView {
        id: k.id.0.clone(),
        label: k.label.clone(),
        token: k.token.clone(),
        class: super::facts::class_name(k.class).into(),
        key_type: super::facts::key_type_name(k.key_type),
        size: 0,
        owner: k.owner.clone(),
        state: k.state.as_str().into(),
        tags: k.tags.clone(),
        session_object: false,
        sensitive: true,
        extractable: false,
    };
    let who = Principal {
        name: "kmsd",
        roles: &[],
    };
    let s = Situation {
        time: now as i64,
        ..Default::default()
    };
    let dec = d
        .policy()
        .decide_key(&who, crate::authz::Action::Rotate, &view, &s);
    let every = dec.rotate_every.filter(|_| dec.allowed)?;
    Some((every, format!("policy {} @rotate_every", dec.rule())))
}

/// Rotates the keys whose current version reached its rotation age
/// (a key's `rotate=` tag, a policy's `@rotate_every`, `[keys]
/// rotate_*_secs`), each with an audit
/// record of what was done or why not; a failed one is tried again an
/// hour later.
fn rotate_due(d: &Daemon) {
    const RETRY_SECS: u64 = 3600;
    use super::rotate;
    let now = super::inventory::now();
    let keys = match d.inventory.store.keys(None) {
        Ok(v) => v,
        Err(e) => {
            tracing::error!("store: {e}; scheduled rotations wait");
            return;
        }
    };
    for k in keys {
        let Some(why) = d
            .inventory
            .rotation
            .due(&k, now, || policy_period(d, &k, now))
        else {
            continue;
        };
        let retry = d.inventory.rotation_retry.lock().get(&k.id).copied();
        if retry.is_some_and(|at| at > now) {
            continue;
        }
        let (rv, detail) = match rotate::rotate(d, &k) {
            Ok(r) => {
                tracing::info!(key = %k.id, label = %k.label, new = %r.key, "scheduled rotation");
                ("CKR_OK", r.describe(&k.id))
            }
            Err(e) => {
                tracing::error!(key = %k.id, "scheduled rotation failed: {e}; tried again in an hour");
                d.inventory
                    .rotation_retry
                    .lock()
                    .insert(k.id.clone(), now + RETRY_SECS);
                ("failed", format!("failed: {e}"))
            }
        };
        let r = d.audit.record(Record {
            identity: Some("kmsd".into()),
            token: Some(k.token.clone()),
            op: Some("keys.rotate".into()),
            key: Some(k.id.0.clone()),
            label: Some(k.label.clone()),
            decision: Some("allow".into()),
            policy: Some(why),
            detail: Some(detail),
            rv: Some(rv.into()),
            ..Default::default()
        });
        if let Err(e) = r {
            tracing::error!("audit: {e}; scheduled rotations wait");
            return;
        }
    }
}

/// Requests nobody decided and grants nobody used in time become
/// `expired`, each with an audit record (written first: a record twice is
/// better than none).
fn expire_approvals(d: &Daemon) {
    use crate::store::ApprovalState;
    let store = d.inventory.store.as_ref();
    let now = super::inventory::now();
    let due = match store.open_approvals() {
        Ok(v) => v
            .into_iter()
            .filter(|a| {
                matches!(a.state, ApprovalState::Pending | ApprovalState::Approved)
                    && a.expires <= now
            })
            .collect::<Vec<_>>(),
        Err(e) => {
            tracing::error!("store: {e}; expired approvals not yet recorded");
            return;
        }
    };
    for a in due {
        let r = Record {
            identity: Some("kmsd".into()),
            op: Some("approvals.expire".into()),
            token: (!a.token.is_empty()).then(|| a.token.clone()),
            key: a.key.starts_with("k-").then(|| a.key.clone()),
            label: (!a.label.is_empty()).then(|| a.label.clone()),
            decision: Some("deny".into()),
            reason: Some("approval-expired".into()),
            detail: Some(format!(
                "{}: {} by {} expired {} at {} ({} of {} approvals)",
                a.id,
                a.action,
                a.requester,
                if a.state == ApprovalState::Pending {
                    "undecided"
                } else {
                    "granted, unused"
                },
                rfc3339(a.expires),
                a.approvers.len(),
                a.required
            )),
            ..Default::default()
        };
        if d.audit.record(r).is_err() {
            return;
        }
        let expired = crate::store::Approval {
            state: ApprovalState::Expired,
            ..a.clone()
        };
        if let Err(e) = store.update_approval(&expired, a.state, a.approvers.len()) {
            tracing::error!("store: {e}; approval {} stays as it was", a.id);
        }
    }
}

/// Moves administrative changes made through the store (`kmsd keys`,
/// `kmsd identities`) into the audit log, oldest first; what cannot be
/// written yet stays queued.
fn admin_events(d: &Daemon) {
    let store = &d.inventory.store;
    let events = match store.admin_events() {
        Ok(e) => e,
        Err(e) => {
            tracing::error!("store: {e}; administrative changes not yet audited");
            return;
        }
    };
    let mut done = None;
    for (n, e) in events {
        let r = Record {
            identity: Some(e.who.clone()),
            op: Some(e.action.clone()),
            key: e.target.starts_with("k-").then(|| e.target.clone()),
            label: (!e.target.starts_with("k-")).then(|| e.target.clone()),
            decision: Some("allow".into()),
            policy: Some("store administrator".into()),
            detail: Some(format!("{} (at {})", e.detail, rfc3339(e.when))),
            ..Default::default()
        };
        if d.audit.record(r).is_err() {
            break;
        }
        done = Some(n);
    }
    if let Some(n) = done {
        if let Err(e) = store.remove_admin_events(n) {
            tracing::error!("store: {e}; audited administrative changes stay queued");
        }
    }
}

fn rfc3339(secs: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
        .to_string()
}

/// Destroys the HSM object of a key whose window ended.
fn destroy(d: &Daemon, k: &KeyRecord) -> Result<(), String> {
    let Some(t) = d.token_named(&k.token) else {
        return Err(format!("token {:?} is not served", k.token));
    };
    let record = Record {
        identity: Some("kmsd".into()),
        token: Some(k.token.clone()),
        op: Some("destroy (window ended)".into()),
        key: Some(k.id.0.clone()),
        label: (!k.label.is_empty()).then(|| k.label.clone()),
        decision: Some("allow".into()),
        policy: Some("keys.destroy_window_secs".into()),
        rv: Some("pending".into()),
        ..Default::default()
    };
    d.audit
        .record(record.clone())
        .map_err(|e| format!("audit: {e}"))?;
    let b = &d.backend;
    let s = b
        .open_session(t.backend_slot, CKF_SERIAL_SESSION | CKF_RW_SESSION)
        .map_err(|e| e.to_string())?;
    let result = (|| {
        let found = b.find(
            s,
            &[Attribute {
                kind: CKA_CLASS,
                value: AttrValue::Ulong(k.class),
            }],
        );
        let mut gone = 0;
        for h in found.map_err(|e| e.to_string())? {
            let Some(f) = facts::read(b, s, h) else {
                continue;
            };
            if f.fingerprint.as_ref().map(|x| x.as_slice()) == Some(k.fingerprint.as_slice()) {
                b.destroy_object(s, h).map_err(|e| e.to_string())?;
                d.inventory.forget(t.backend_slot, h);
                gone += 1;
            }
        }
        Ok::<usize, String>(gone)
    })();
    let _ = b.close_session(s);
    let gone = result?;
    let moved = d
        .inventory
        .store
        .transition(&k.id, KeyState::PendingDestroy, KeyState::Destroyed, None)
        .map_err(|e| e.to_string())?;
    tracing::info!(key = %k.id, label = %k.label, objects = gone, moved, "pending destroy carried out");
    let _ = d.audit.record(Record {
        rv: Some(crate::error::rv_name(CKR_OK).into_owned()),
        ..record
    });
    Ok(())
}
