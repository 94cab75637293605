//! The performance targets, judged from one comparison run: reads the JSON
//! lines `kmsp11-load --json-to FILE --tag TAG` appended (compare.sh tags
//! its runs `all`, `scaling`, `fsync-off` and `idle`) and prints a
//! markdown table: each target, what the run measured, met or missed by how
//! much. A target whose runs are missing says so.
//!
//!   target/release/kmsp11-targets runs.jsonl

use serde_json::Value;

const RANDOM: &str = "C_GenerateRandom 32 B";
const ECDSA_QUERY: &str = "ECDSA P-256 sign (query)";
const ECDSA_PRESIZED: &str = "ECDSA P-256 sign (presized)";
const RSA_QUERY: &str = "RSA-2048 PKCS#1 SHA-256 sign (query)";
const GCM: &str = "AES-256-GCM encrypt (presized)";
/// kmsd's execution slots for HSM calls (`[limits] max_in_flight`).
const SLOTS: u64 = 64;

struct Runs(Vec<Value>);

impl Runs {
    fn find(&self, tag: &str, op: &str, threads: u64, column: &str) -> Option<&Value> {
        self.0.iter().find(|v| {
            v["tag"] == tag && v["op"] == op && v["threads"] == threads && v["column"] == column
        })
    }

    fn num(&self, tag: &str, op: &str, threads: u64, column: &str, field: &str) -> Option<f64> {
        self.find(tag, op, threads, column)?[field].as_f64()
    }
}

/// One row: the target, what was measured, the verdict.
struct Row(String, String, String);

fn verdict(met: bool, miss: impl FnOnce() -> String) -> String {
    if met {
        "met".into()
    } else {
        format!("missed: {}", miss())
    }
}

fn missing(target: &str) -> Row {
    Row(target.into(), "not in this run".into(), "-".into())
}

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: kmsp11-targets RUNS.jsonl");
        std::process::exit(2);
    };
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        eprintln!("kmsp11-targets: {path}: {e}");
        std::process::exit(2);
    });
    let runs = Runs(
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect(),
    );
    let mut rows = Vec::new();
    let r = &runs;

    // Random at one thread: kmsp11's p50 against p11-kit's.
    let t = "C_GenerateRandom 32 B, 1 thread: kmsp11 p50 ≤ p11-kit p50";
    rows.push(
        match (
            r.num("all", RANDOM, 1, "kmsp11", "p50_us"),
            r.num("all", RANDOM, 1, "p11-kit", "p50_us"),
        ) {
            (Some(k), Some(p)) => Row(
                t.into(),
                format!("{k:.0} µs vs {p:.0} µs"),
                verdict(k <= p, || format!("{:.1}× p11-kit's p50", k / p)),
            ),
            _ => missing(t),
        },
    );

    // One round trip: sign p50 within direct's plus one random round trip.
    for op in [ECDSA_QUERY, ECDSA_PRESIZED] {
        let t = format!("{op}, 1 thread: p50 ≤ direct p50 + one random round trip");
        rows.push(
            match (
                r.num("all", op, 1, "kmsp11", "p50_us"),
                r.num("all", op, 1, "direct", "p50_us"),
                r.num("all", RANDOM, 1, "kmsp11", "p50_us"),
            ) {
                (Some(k), Some(d), Some(rt)) => Row(
                    t,
                    format!("{k:.0} µs vs {d:.0} + {rt:.0} µs"),
                    verdict(k <= d + rt, || format!("by {:.0} µs", k - d - rt)),
                ),
                _ => missing(&t),
            },
        );
    }

    // Throughput at two threads, as ratios.
    let ratio = |op: &str, threads: u64, other: &str, at_least: f64| {
        let t = format!("{op}, {threads} thread(s): ≥ {at_least}× {other} ops/s");
        match (
            r.num("all", op, threads, "kmsp11", "ops_per_s"),
            r.num("all", op, threads, other, "ops_per_s"),
        ) {
            (Some(k), Some(o)) => Row(
                t,
                format!("{k:.0}/s vs {o:.0}/s: {:.2}×", k / o),
                verdict(k / o >= at_least, || {
                    format!("{:.2}× short", at_least - k / o)
                }),
            ),
            _ => missing(&t),
        }
    };
    rows.push(ratio(ECDSA_QUERY, 2, "direct", 0.5));
    rows.push(ratio(ECDSA_QUERY, 2, "p11-kit", 2.0));
    rows.push(ratio(RSA_QUERY, 2, "direct", 0.9));
    rows.push(ratio(GCM, 1, "direct", 0.25));

    // kmsd's CPU per cheap call.
    let t = "kmsd CPU per C_GenerateRandom 32 B ≤ 15 µs";
    rows.push(
        match r.num("all", RANDOM, 1, "kmsp11", "server_cpu_us_per_call") {
            Some(c) => Row(
                t.into(),
                format!("{c:.0} µs"),
                verdict(c <= 15.0, || format!("{:.1}× the target", c / 15.0)),
            ),
            None => missing(t),
        },
    );

    // Durable audit against audit off.
    let t = "durable audit costs ≤ 10 % (ECDSA query, 2 threads, fsync batch vs off)";
    rows.push(
        match (
            r.num("scaling", ECDSA_QUERY, 2, "kmsp11", "ops_per_s"),
            r.num("fsync-off", ECDSA_QUERY, 2, "kmsp11", "ops_per_s"),
        ) {
            (Some(on), Some(off)) => {
                let cost = 100.0 * (1.0 - on / off);
                Row(
                    t.into(),
                    format!("{on:.0}/s vs {off:.0}/s: {cost:.0} %"),
                    verdict(cost <= 10.0, || format!("{:.0} points over", cost - 10.0)),
                )
            }
            _ => missing(t),
        },
    );

    // Idle connections.
    let idle =
        r.0.iter()
            .find(|v| v["tag"] == "idle" && v["idle_connections"].is_u64());
    let t = "1,000 idle connections: kmsd RSS ≤ 100 MB, threads ≤ 2 × pool";
    rows.push(match idle {
        Some(v) => {
            let n = v["idle_connections"].as_u64().unwrap_or(0);
            let rss = v["kmsd_after_rss_kib"].as_u64().unwrap_or(0) as f64 * 1024.0 / 1e6;
            let threads = v["kmsd_after_threads"].as_u64().unwrap_or(0);
            Row(
                t.into(),
                format!(
                    "{n} connections: {rss:.0} MB, {threads} threads (pool: {SLOTS} execution slots)"
                ),
                verdict(n >= 1000 && rss <= 100.0 && threads <= 2 * SLOTS, || {
                    format!("{n} connections, {rss:.0} MB, {threads} threads")
                }),
            )
        }
        None => missing(t),
    });
    let t = "2 active threads beside 1,000 idle connections: ops/s unchanged within noise (±15 %)";
    let beside = r.0.iter().find(|v| {
        v["tag"] == "idle"
            && v["op"] == ECDSA_QUERY
            && v["column"].as_str().is_some_and(|c| c.contains("idle"))
    });
    rows.push(
        match (
            beside.and_then(|v| v["ops_per_s"].as_f64()),
            r.num("idle", ECDSA_QUERY, 2, "kmsp11", "ops_per_s"),
        ) {
            (Some(b), Some(a)) => Row(
                t.into(),
                format!("{b:.0}/s vs {a:.0}/s before: {:.2}×", b / a),
                verdict((b / a - 1.0).abs() <= 0.15, || format!("{:.2}×", b / a)),
            ),
            _ => missing(t),
        },
    );

    // Scaling: no errors, no collapse, p99 at most linear.
    let t =
        "1 to 128 threads: no errors, ops/s never below the 2-thread figure, p99 at most linear";
    let scaling: Vec<&Value> =
        r.0.iter()
            .filter(|v| v["tag"] == "scaling" && v["column"] == "kmsp11" && v["op"] == ECDSA_QUERY)
            .collect();
    let at = |n: u64| scaling.iter().find(|v| v["threads"] == n);
    rows.push(match (at(2), scaling.is_empty()) {
        (Some(two), false) => {
            let errors: u64 = scaling.iter().filter_map(|v| v["errors"].as_u64()).sum();
            let (ops2, p99_2) = (
                two["ops_per_s"].as_f64().unwrap_or(0.0),
                two["p99_us"].as_f64().unwrap_or(0.0),
            );
            let mut worst_ops = f64::INFINITY;
            let mut worst_p99 = 0.0f64;
            let mut parts = Vec::new();
            for v in &scaling {
                let n = v["threads"].as_u64().unwrap_or(0);
                let ops = v["ops_per_s"].as_f64().unwrap_or(0.0);
                let p99 = v["p99_us"].as_f64().unwrap_or(0.0);
                parts.push(format!("{n}: {ops:.0}/s p99 {p99:.0} µs"));
                if n > 2 {
                    worst_ops = worst_ops.min(ops / ops2);
                    worst_p99 = worst_p99.max((p99 / p99_2) / (n as f64 / 2.0));
                }
            }
            Row(
                t.into(),
                format!("{errors} errors; {}", parts.join(", ")),
                verdict(errors == 0 && worst_ops >= 1.0 && worst_p99 <= 1.0, || {
                    format!(
                        "{errors} errors, lowest ops/s {worst_ops:.2}× the 2-thread figure, p99 growth {worst_p99:.2}× linear"
                    )
                }),
            )
        }
        _ => missing(t),
    });

    println!("| target | this run | verdict |");
    println!("|---|---|---|");
    for Row(t, m, v) in rows {
        println!("| {t} | {m} | {v} |");
    }
}
