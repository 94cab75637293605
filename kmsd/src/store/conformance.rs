//! What every [`Store`] implementation must do, one function per
//! behaviour. An implementation runs them all as named tests with
//! `kmsd::conformance_tests!(|| make_a_fresh_store())`.

use super::{
    AdminEvent, Approval, ApprovalState, Checkpoint, IdentityRecord, KeyId, KeyRecord, KeyState,
    Revocation, Store, StoreError,
};

/// An active key on `token` with this fingerprint.
pub fn key(token: &str, fingerprint: &[u8]) -> KeyRecord {
    KeyRecord {
        id: KeyId::new(),
        token: token.into(),
        fingerprint: fingerprint.to_vec(),
        label: "signing".into(),
        class: 3,
        key_type: 3,
        owner: "app1".into(),
        created: 1_700_000_000,
        state: KeyState::Active,
        destroy_at: None,
        expires: Some(1_900_000_000),
        tags: vec!["team=payments".into(), "env=prod".into()],
    }
}

/// A key reads back exactly as written, by id and by fingerprint.
pub fn keys_read_back(s: &dyn Store) {
    let k = key("kms-a", b"fp-1");
    s.insert_key(&k).unwrap();
    assert_eq!(s.key(&k.id).unwrap(), Some(k.clone()));
    assert_eq!(s.key_by_fingerprint("kms-a", b"fp-1").unwrap(), Some(k));
    assert_eq!(s.key_by_fingerprint("kms-b", b"fp-1").unwrap(), None);
    assert_eq!(s.key(&KeyId::new()).unwrap(), None);
}

/// A second key with the same id, or the same fingerprint on the same
/// token, is refused; the same fingerprint on another token is another key.
pub fn duplicate_keys_are_refused(s: &dyn Store) {
    let k = key("kms-a", b"fp");
    s.insert_key(&k).unwrap();
    let same_fp = key("kms-a", b"fp");
    assert!(matches!(s.insert_key(&same_fp), Err(StoreError::Exists(_))));
    let mut same_id = key("kms-a", b"other");
    same_id.id = k.id.clone();
    assert!(matches!(s.insert_key(&same_id), Err(StoreError::Exists(_))));
    s.insert_key(&key("kms-b", b"fp")).unwrap();
}

/// Keys are listed per token or all, ordered by id.
pub fn keys_are_listed_by_token(s: &dyn Store) {
    let a1 = key("kms-a", b"1");
    let a2 = key("kms-a", b"2");
    let b1 = key("kms-b", b"1");
    for k in [&a1, &a2, &b1] {
        s.insert_key(k).unwrap();
    }
    let mut want_a = vec![a1, a2];
    want_a.sort_by(|x, y| x.id.cmp(&y.id));
    assert_eq!(s.keys(Some("kms-a")).unwrap(), want_a);
    assert_eq!(s.keys(None).unwrap().len(), 3);
    assert_eq!(s.keys(Some("kms-c")).unwrap(), vec![]);
}

/// Destroy, then cancel: pending with its window, then active again.
pub fn pending_destroy_can_be_cancelled(s: &dyn Store) {
    let k = key("kms-a", b"fp");
    s.insert_key(&k).unwrap();
    let pending = (KeyState::Active, KeyState::PendingDestroy);
    assert!(s
        .transition(&k.id, pending.0, pending.1, Some(2_000))
        .unwrap());
    let got = s.key(&k.id).unwrap().unwrap();
    assert_eq!(
        (got.state, got.destroy_at),
        (KeyState::PendingDestroy, Some(2_000))
    );
    assert!(s
        .transition(&k.id, KeyState::PendingDestroy, KeyState::Active, None)
        .unwrap());
    let got = s.key(&k.id).unwrap().unwrap();
    assert_eq!((got.state, got.destroy_at), (KeyState::Active, None));
}

/// A transition from a state the key is not in changes nothing and says so;
/// one the lifecycle does not allow is an error; destroyed is final.
pub fn transitions_are_compare_and_set(s: &dyn Store) {
    let k = key("kms-a", b"fp");
    s.insert_key(&k).unwrap();
    assert!(!s
        .transition(&k.id, KeyState::Disabled, KeyState::Active, None)
        .unwrap());
    assert!(matches!(
        s.transition(&k.id, KeyState::Active, KeyState::Destroyed, None),
        Err(StoreError::Transition(_, _))
    ));
    assert!(s
        .transition(&k.id, KeyState::Active, KeyState::PendingDestroy, Some(10))
        .unwrap());
    assert!(s
        .transition(&k.id, KeyState::PendingDestroy, KeyState::Destroyed, None)
        .unwrap());
    assert!(matches!(
        s.transition(&k.id, KeyState::Destroyed, KeyState::Active, None),
        Err(StoreError::Transition(_, _))
    ));
    assert!(matches!(
        s.transition(&KeyId::new(), KeyState::Active, KeyState::Disabled, None),
        Err(StoreError::NotFound(_))
    ));
}

/// Pending destroys come due when their window ends, earliest first.
pub fn due_destroys_follow_their_window(s: &dyn Store) {
    let (early, late, active) = (key("t", b"1"), key("t", b"2"), key("t", b"3"));
    for k in [&early, &late, &active] {
        s.insert_key(k).unwrap();
    }
    let destroy = |k: &KeyRecord, at| {
        assert!(s
            .transition(&k.id, KeyState::Active, KeyState::PendingDestroy, Some(at))
            .unwrap())
    };
    destroy(&late, 200);
    destroy(&early, 100);
    assert_eq!(s.due_destroys(99).unwrap(), vec![]);
    let due: Vec<KeyId> = s
        .due_destroys(200)
        .unwrap()
        .into_iter()
        .map(|k| k.id)
        .collect();
    assert_eq!(due, vec![early.id, late.id]);
}

/// Labels and tags change; an unknown key is NotFound.
pub fn labels_and_tags_change(s: &dyn Store) {
    let k = key("t", b"1");
    s.insert_key(&k).unwrap();
    s.set_label(&k.id, "renamed").unwrap();
    s.set_tags(&k.id, &[]).unwrap();
    let got = s.key(&k.id).unwrap().unwrap();
    assert_eq!((got.label.as_str(), got.tags.len()), ("renamed", 0));
    assert!(matches!(
        s.set_label(&KeyId::new(), "x"),
        Err(StoreError::NotFound(_))
    ));
}

/// A key moves to a new fingerprint (but never onto another key's), and
/// its expiry is set and cleared.
pub fn fingerprint_and_expiry_change(s: &dyn Store) {
    let a = key("t", b"1");
    let b = key("t", b"2");
    s.insert_key(&a).unwrap();
    s.insert_key(&b).unwrap();
    s.set_fingerprint(&a.id, b"3").unwrap();
    assert_eq!(
        s.key_by_fingerprint("t", b"3").unwrap().map(|k| k.id),
        Some(a.id.clone())
    );
    assert_eq!(s.key_by_fingerprint("t", b"1").unwrap(), None);
    assert!(matches!(
        s.set_fingerprint(&a.id, b"2"),
        Err(StoreError::Exists(_))
    ));
    s.set_expires(&a.id, Some(1000)).unwrap();
    assert_eq!(s.key(&a.id).unwrap().unwrap().expires, Some(1000));
    s.set_expires(&a.id, None).unwrap();
    assert_eq!(s.key(&a.id).unwrap().unwrap().expires, None);
}

/// Approval requests read back, change by compare-and-set only.
pub fn approvals_change_by_compare_and_set(s: &dyn Store) {
    let a = Approval {
        id: "a-1".into(),
        requester: "alice".into(),
        token: "t".into(),
        action: "sign".into(),
        key: "k-1".into(),
        label: "release".into(),
        mechanism: Some(0x1041),
        required: 2,
        role: "admin".into(),
        created: 100,
        expires: 200,
        state: ApprovalState::Pending,
        approvers: vec![],
        denied_by: None,
    };
    s.insert_approval(&a).unwrap();
    assert!(matches!(s.insert_approval(&a), Err(StoreError::Exists(_))));
    assert_eq!(s.approval("a-1").unwrap(), Some(a.clone()));
    let one = Approval {
        approvers: vec!["bob".into()],
        ..a.clone()
    };
    assert!(s.update_approval(&one, ApprovalState::Pending, 0).unwrap());
    // A second writer that saw no approver loses.
    assert!(!s.update_approval(&one, ApprovalState::Pending, 0).unwrap());
    let two = Approval {
        approvers: vec!["bob".into(), "carol".into()],
        state: ApprovalState::Approved,
        ..a.clone()
    };
    // A writer that saw two approvers when there is one loses too.
    assert!(!s.update_approval(&two, ApprovalState::Pending, 2).unwrap());
    assert!(s.update_approval(&two, ApprovalState::Pending, 1).unwrap());
    assert_eq!(s.approvals().unwrap(), vec![two.clone()]);
    // Open: pending and approved; a used grant is history.
    assert_eq!(s.open_approvals().unwrap(), vec![two.clone()]);
    let used = Approval {
        state: ApprovalState::Used,
        ..two.clone()
    };
    assert!(s
        .update_approval(&used, ApprovalState::Approved, 2)
        .unwrap());
    assert!(s.open_approvals().unwrap().is_empty());
    assert_eq!(s.approvals().unwrap(), vec![used]);
    assert_eq!(s.approval("a-2").unwrap(), None);
}

/// Daily uses count up to their limit, per key and day.
pub fn daily_uses_stop_at_the_limit(s: &dyn Store) {
    let a = KeyId::new();
    let b = KeyId::new();
    assert_eq!(s.take_daily(&a, 100, 2).unwrap(), Some(1));
    assert_eq!(s.take_daily(&a, 100, 2).unwrap(), Some(2));
    assert_eq!(s.take_daily(&a, 100, 2).unwrap(), None);
    assert_eq!(s.daily(&a, 100).unwrap(), 2);
    assert_eq!(s.take_daily(&a, 101, 2).unwrap(), Some(1));
    assert_eq!(s.take_daily(&b, 100, 2).unwrap(), Some(1));
    assert_eq!(s.take_daily(&b, 100, 1).unwrap(), None);
    assert_eq!(s.daily(&b, 7).unwrap(), 0);
    let mut used = s.daily_all(100).unwrap();
    used.sort();
    let mut want = vec![(a.clone(), 2), (b.clone(), 1)];
    want.sort();
    assert_eq!(used, want);
    assert!(s.daily_all(7).unwrap().is_empty());
}

/// Administrative events queue in order and are removed up to a point.
pub fn admin_events_queue_in_order(s: &dyn Store) {
    let e = |n: u64| AdminEvent {
        when: n,
        who: "alice".into(),
        action: "keys.revoke".into(),
        target: format!("k-{n}"),
        detail: "leaked".into(),
    };
    for n in 1..=3 {
        s.add_admin_event(&e(n)).unwrap();
    }
    let queued = s.admin_events().unwrap();
    assert_eq!(
        queued.iter().map(|(_, x)| x.clone()).collect::<Vec<_>>(),
        vec![e(1), e(2), e(3)]
    );
    s.remove_admin_events(queued[1].0).unwrap();
    let rest = s.admin_events().unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].1, e(3));
}

/// Usage counters add up per operation; an unknown key is NotFound.
pub fn usage_counts_add_up(s: &dyn Store) {
    let k = key("t", b"1");
    s.insert_key(&k).unwrap();
    s.count_use(&k.id, "sign", 1).unwrap();
    s.count_use(&k.id, "sign", 2).unwrap();
    s.count_use(&k.id, "decrypt", 5).unwrap();
    assert_eq!(
        s.usage(&k.id).unwrap(),
        vec![("decrypt".to_string(), 5), ("sign".to_string(), 3)]
    );
    assert!(matches!(
        s.count_use(&KeyId::new(), "sign", 1),
        Err(StoreError::NotFound(_))
    ));
}

/// The revocation list keeps each key once, in the order revoked.
pub fn revocations_are_kept_in_order(s: &dyn Store) {
    let r = |label: &str, when| Revocation {
        key: KeyId::new(),
        label: label.into(),
        when,
        who: "admin1".into(),
        reason: "compromised".into(),
    };
    let (first, second) = (r("b", 20), r("a", 10));
    s.revoke(&first).unwrap();
    s.revoke(&second).unwrap();
    assert!(matches!(s.revoke(&first), Err(StoreError::Exists(_))));
    assert_eq!(s.revocation(&first.key).unwrap(), Some(first.clone()));
    assert_eq!(s.revocations().unwrap(), vec![first, second]);
}

/// A key's status: the key and its revocation (if any) together; none
/// for a key the store does not hold, revoked or not.
pub fn key_status_reads_key_and_revocation(s: &dyn Store) {
    let k = key("t", b"fp-status");
    s.insert_key(&k).unwrap();
    assert_eq!(s.key_status(&k.id).unwrap(), Some((k.clone(), None)));
    let r = Revocation {
        key: k.id.clone(),
        label: k.label.clone(),
        when: 30,
        who: "admin1".into(),
        reason: "superseded".into(),
    };
    s.revoke(&r).unwrap();
    assert_eq!(s.key_status(&k.id).unwrap(), Some((k, Some(r.clone()))));
    let stranger = Revocation {
        key: KeyId::new(),
        ..r.clone()
    };
    s.revoke(&stranger).unwrap();
    assert_eq!(s.key_status(&stranger.key).unwrap(), None);
}

/// Identities added at run time read back, can be disabled and enabled,
/// and their names are unique.
pub fn identities_can_be_disabled(s: &dyn Store) {
    let i = IdentityRecord {
        name: "batch".into(),
        subject: "spiffe://example/batch".into(),
        roles: vec!["user".into()],
        tokens: vec!["kms-a".into()],
        disabled: false,
        added_by: "admin1".into(),
        added: 1_700_000_000,
        pin_hash: Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into()),
        spki_sha256: Some("ab".repeat(32)),
    };
    s.insert_identity(&i).unwrap();
    assert!(matches!(s.insert_identity(&i), Err(StoreError::Exists(_))));
    s.set_identity_disabled("batch", true).unwrap();
    assert!(s.identities().unwrap()[0].disabled);
    s.set_identity_disabled("batch", false).unwrap();
    assert_eq!(s.identities().unwrap(), vec![i]);
    assert!(matches!(
        s.set_identity_disabled("nobody", true),
        Err(StoreError::NotFound(_))
    ));
}

/// The last checkpoint is the one with the highest sequence.
pub fn the_last_checkpoint_is_the_highest(s: &dyn Store) {
    assert_eq!(s.last_checkpoint().unwrap(), None);
    let c = |sequence, b| Checkpoint {
        sequence,
        head: [b; 32],
        when: 1_700_000_000 + sequence,
        signature: vec![b; 64],
    };
    s.insert_checkpoint(&c(1000, 1)).unwrap();
    s.insert_checkpoint(&c(2000, 2)).unwrap();
    assert!(matches!(
        s.insert_checkpoint(&c(2000, 3)),
        Err(StoreError::Exists(_))
    ));
    assert_eq!(s.last_checkpoint().unwrap(), Some(c(2000, 2)));
}

/// One named test per conformance case for the store `$make` builds
/// (a fresh, empty store each call).
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@cases $make;
            keys_read_back duplicate_keys_are_refused keys_are_listed_by_token
            pending_destroy_can_be_cancelled transitions_are_compare_and_set
            due_destroys_follow_their_window labels_and_tags_change fingerprint_and_expiry_change usage_counts_add_up admin_events_queue_in_order daily_uses_stop_at_the_limit
            approvals_change_by_compare_and_set
            revocations_are_kept_in_order key_status_reads_key_and_revocation identities_can_be_disabled
            the_last_checkpoint_is_the_highest);
    };
    (@cases $make:expr; $($case:ident)*) => {
        mod conformance {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[test]
                fn $case() {
                    let store = ($make)();
                    $crate::store::conformance::$case(&store);
                }
            )*
        }
    };
}
