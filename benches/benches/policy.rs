//! Cedar policy evaluation per call: one `decide_key` (what kmsd asks for a
//! token-key sign) against kmsd's dev policy grown to 10 and 1,000
//! policies, as a new question (Cedar evaluates it) and repeated (the kept
//! decision). Every extra policy names another identity and token, as a
//! policy file of many teams would.

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use kmsd::authz::policy::{KeyView, Policy, Principal, Situation};
use kmsd::authz::Action;

const DEV_POLICY: &str = include_str!("../../kmsd/src/dev-policy.cedar");

/// The dev policy and then team policies up to `n` in all.
fn policy_of(n: usize) -> Policy {
    let mut text = DEV_POLICY.to_string();
    let base = Policy::parse(Path::new("dev"), &text).unwrap().len();
    for i in base..n {
        text.push_str(&format!(
            "\n@id(\"team-{i}-signs\")\n\
             permit (principal == Kms::Identity::\"svc-{i}\", action == Kms::Action::\"sign\", \
             resource in Kms::Token::\"team-{i}\")\n\
             when {{ context.mechanism == \"CKM_ECDSA\" && resource.tags.contains(\"team-{i}\") }};\n"
        ));
    }
    let p = Policy::parse(Path::new("bench"), &text).unwrap();
    assert_eq!(p.len(), n.max(base));
    p
}

fn decide(c: &mut Criterion) {
    let roles = vec!["user".to_string()];
    let who = Principal {
        name: "dev-client",
        roles: &roles,
    };
    let key = KeyView {
        id: "k-0123456789abcdef".into(),
        label: "release-signing".into(),
        token: "kms-a".into(),
        class: "private-key".into(),
        key_type: "EC".into(),
        size: 256,
        owner: "dev-client".into(),
        state: "active".into(),
        tags: vec!["release".into()],
        session_object: false,
        sensitive: true,
        extractable: false,
    };
    let situation = Situation {
        mechanism: Some(0x1041),
        wrapping_key: None,
        time: 1_800_000_000,
    };
    for n in [10, 1000] {
        let policy = policy_of(n);
        let d = policy.decide_key(&who, Action::Sign, &key, &situation);
        assert!(d.allowed, "the dev policy lets users sign");
        let mut g = c.benchmark_group(format!("cedar decide_key sign, {n} policies"));
        // Cedar's evaluation: another key each time, so no decision is kept.
        let mut i = 0u64;
        g.bench_function("new question", |b| {
            b.iter(|| {
                i += 1;
                let k = KeyView {
                    id: format!("k-{i:016x}"),
                    ..key.clone()
                };
                black_box(policy.decide_key(&who, Action::Sign, &k, &situation))
            })
        });
        // The same key, mechanism and caller again: the kept decision.
        g.bench_function("repeated", |b| {
            b.iter(|| black_box(policy.decide_key(&who, Action::Sign, black_box(&key), &situation)))
        });
        g.finish();
    }
}

criterion_group!(benches, decide);
criterion_main!(benches);
