//! Proxy vs SoftHSM direct, side by side in one run: the same operations
//! through SoftHSM loaded directly and through libkmsp11 -> kmsd -> SoftHSM,
//! per-operation latency medians (and p90) and the proxy/direct ratio.
//!
//!   cargo build --release --workspace
//!   target/release/kmsp11-load --iterations 2000
//!
//! Machines are shared and noisy: compare the ratio within one run, and
//! quote medians.

use std::path::Path;
use std::time::{Duration, Instant};

use clap::Parser;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectHandle};
use cryptoki::session::Session;
use kmsp11_tests::Kmsd;

/// Latency of PKCS#11 operations: SoftHSM direct vs through kmsp11.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Iterations per operation and column.
    #[arg(long, default_value_t = 1000)]
    iterations: usize,
    /// kmsd's `[audit] fsync` for the proxy column: batch (as users run
    /// it), always, or off (to see what durability costs).
    #[arg(long, default_value = "batch", value_parser = ["batch", "always", "off"])]
    fsync: String,
    /// Only the operations whose name contains this (e.g. "Random").
    #[arg(long)]
    only: Option<String>,
}

use kmsp11_tests::P256;

struct Keys {
    ec: ObjectHandle,
    /// A token key: what applications sign with, known to kmsd's inventory.
    ec_token: ObjectHandle,
    rsa: ObjectHandle,
    aes: ObjectHandle,
}

type Op = (&'static str, fn(&Session, &Keys));

const OPS: &[Op] = &[
    ("C_GenerateRandom 32 B", |s, _| {
        let mut b = [0u8; 32];
        s.generate_random_slice(&mut b).unwrap();
    }),
    ("C_Digest SHA-256 1 KiB", |s, _| {
        s.digest(&Mechanism::Sha256, &[1u8; 1024]).unwrap();
    }),
    ("ECDSA P-256 sign (init+sign)", |s, k| {
        s.sign(&Mechanism::Ecdsa, k.ec, &[2u8; 32]).unwrap();
    }),
    ("ECDSA P-256 sign, token key", |s, k| {
        s.sign(&Mechanism::Ecdsa, k.ec_token, &[2u8; 32]).unwrap();
    }),
    ("RSA-2048 PKCS#1 sign (init+sign)", |s, k| {
        s.sign(&Mechanism::Sha256RsaPkcs, k.rsa, b"benchmark")
            .unwrap();
    }),
    ("AES-256-CBC-PAD encrypt 1 KiB", |s, k| {
        s.encrypt(&Mechanism::AesCbcPad([0u8; 16]), k.aes, &[3u8; 1024])
            .unwrap();
    }),
    ("find by label + 1 attribute", |s, _| {
        let h = s
            .find_objects(&[Attribute::Label(b"bench-ec".to_vec())])
            .unwrap();
        s.get_attributes(h[0], &[AttributeType::KeyType]).unwrap();
    }),
];

fn main() {
    let args = Args::parse();
    let tmp = tempfile_dir();
    let conf = kmsp11_tests::softhsm_store(&tmp.join("direct"), &["dev-a"]);
    std::env::set_var("SOFTHSM2_CONF", &conf);
    let only = args.only.clone().unwrap_or_default();
    let direct = measure(
        &kmsp11_tests::softhsm_module(),
        "dev-a",
        args.iterations,
        &only,
    );
    let fsync = format!("fsync = \"{}\"", args.fsync);
    // Load runs go past the default daily limit of 10,000 uses per key.
    let kmsd = Kmsd::start_edited(|t, _| {
        assert!(t.contains("fsync = \"batch\""));
        let t = t.replacen("fsync = \"batch\"", &fsync, 1);
        kmsp11_tests::set_in(&t, "quotas", "daily_limit_per_key = 0")
    });
    std::env::set_var("KMSP11_CONFIG", kmsd.client_config());
    let proxy = measure(&kmsp11_tests::libkmsp11(), "kms-a", args.iterations, &only);
    println!(
        "{:<36} {:>12} {:>12} {:>12} {:>12} {:>8}",
        "operation", "direct p50", "direct p90", "proxy p50", "proxy p90", "ratio"
    );
    for ((name, d), (_, p)) in direct.iter().zip(&proxy) {
        println!(
            "{:<36} {:>12} {:>12} {:>12} {:>12} {:>7.1}x",
            name,
            fmt(pct(d, 50)),
            fmt(pct(d, 90)),
            fmt(pct(p, 50)),
            fmt(pct(p, 90)),
            pct(p, 50).as_secs_f64() / pct(d, 50).as_secs_f64()
        );
    }
    let _ = std::fs::remove_dir_all(tmp);
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("kmsp11-load-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn measure(module: &Path, label: &str, n: usize, only: &str) -> Vec<(&'static str, Vec<Duration>)> {
    let p = kmsp11_tests::initialized(module);
    let slot = kmsp11_tests::slot_by_label(&p, label);
    let s = kmsp11_tests::user_session(&p, slot);
    let (_, ec) = s
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[
                Attribute::EcParams(P256.to_vec()),
                Attribute::Label(b"bench-ec".to_vec()),
            ],
            &[
                Attribute::Sign(true),
                Attribute::Label(b"bench-ec".to_vec()),
            ],
        )
        .unwrap();
    let (_, ec_token) = s
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[
                Attribute::Token(true),
                Attribute::EcParams(P256.to_vec()),
                Attribute::Label(b"bench-ec-token".to_vec()),
            ],
            &[
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sign(true),
                Attribute::Label(b"bench-ec-token".to_vec()),
            ],
        )
        .unwrap();
    let (_, rsa) = s
        .generate_key_pair(
            &Mechanism::RsaPkcsKeyPairGen,
            &[
                Attribute::ModulusBits(2048.into()),
                Attribute::PublicExponent(vec![1, 0, 1]),
            ],
            &[Attribute::Sign(true)],
        )
        .unwrap();
    let aes = s
        .generate_key(
            &Mechanism::AesKeyGen,
            &[Attribute::ValueLen(32.into()), Attribute::Encrypt(true)],
        )
        .unwrap();
    let keys = Keys {
        ec,
        ec_token,
        rsa,
        aes,
    };
    let mut out = Vec::new();
    for (name, op) in OPS.iter().filter(|(name, _)| name.contains(only)) {
        for _ in 0..n / 10 {
            op(&s, &keys); // warm-up
        }
        let mut t = Vec::with_capacity(n);
        for _ in 0..n {
            let start = Instant::now();
            op(&s, &keys);
            t.push(start.elapsed());
        }
        t.sort();
        out.push((*name, t));
    }
    drop(s);
    p.finalize().unwrap();
    out
}

fn pct(v: &[Duration], p: usize) -> Duration {
    v[(v.len() * p / 100).min(v.len() - 1)]
}

fn fmt(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}
