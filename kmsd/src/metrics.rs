//! kmsd's metrics, served as Prometheus text on the admin API's
//! `/metrics`: calls by operation and result, their latency, refusals by
//! reason, open contexts, connections and sessions, the audit chain's head,
//! queue and last fsync, rate buckets in use, each key's uses today against
//! its daily limit, pending approvals, admin API requests.

use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub calls: IntCounterVec,
    pub latency: HistogramVec,
    pub refusals: IntCounterVec,
    pub contexts: IntGauge,
    pub connections: IntGauge,
    pub sessions: IntGauge,
    pub audit_sequence: IntGauge,
    pub audit_queue: IntGauge,
    pub audit_last_fsync: Gauge,
    pub quota_buckets: IntGauge,
    pub key_uses_today: IntGaugeVec,
    pub daily_limit: IntGauge,
    pub approvals_pending: IntGauge,
    pub admin_requests: IntCounterVec,
    pub exchanges: IntCounterVec,
    pub certificates_expiring: IntGauge,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new_custom(Some("kmsd".into()), None).expect("registry");
        let calls = IntCounterVec::new(
            Opts::new("calls_total", "PKCS#11 calls answered, by call and CK_RV"),
            &["op", "rv"],
        )
        .expect("metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "call_duration_seconds",
                "Time from a call's admission to its answer, by call",
            )
            .buckets(vec![
                0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05,
                0.1, 0.25, 1.0,
            ]),
            &["op"],
        )
        .expect("metric");
        let refusals = IntCounterVec::new(
            Opts::new("refusals_total", "Calls refused by kmsd, by reason"),
            &["reason"],
        )
        .expect("metric");
        let contexts = IntGauge::new("contexts", "Open client contexts").expect("metric");
        let connections = IntGauge::new("connections", "Open PKCS#11 connections").expect("metric");
        let sessions = IntGauge::new("sessions", "Open sessions").expect("metric");
        let audit_sequence =
            IntGauge::new("audit_sequence", "The audit chain's last sequence number")
                .expect("metric");
        let audit_queue = IntGauge::new(
            "audit_queue_depth",
            "Audit records appended and not yet on disk",
        )
        .expect("metric");
        let audit_last_fsync = Gauge::new(
            "audit_last_fsync_timestamp_seconds",
            "When audit records last reached the disk (Unix time)",
        )
        .expect("metric");
        let quota_buckets = IntGauge::new(
            "quota_buckets",
            "Rate buckets in use (identities and identity-key pairs)",
        )
        .expect("metric");
        let key_uses_today = IntGaugeVec::new(
            Opts::new(
                "key_uses_today",
                "Uses of each key this UTC day, counted against its daily limit (keys used today)",
            ),
            &["key"],
        )
        .expect("metric");
        let daily_limit = IntGauge::new(
            "quota_daily_limit_per_key",
            "The default daily limit of uses per key (0: none)",
        )
        .expect("metric");
        let approvals_pending = IntGauge::new(
            "approvals_pending",
            "Dual-control requests waiting for approvals",
        )
        .expect("metric");
        let admin_requests = IntCounterVec::new(
            Opts::new(
                "admin_requests_total",
                "Admin API requests, by path and status",
            ),
            &["path", "status"],
        )
        .expect("metric");
        let exchanges = IntCounterVec::new(
            Opts::new(
                "exchanges_total",
                "Requests answered on PKCS#11 connections (round trips), by the number of calls each carried",
            ),
            &["calls"],
        )
        .expect("metric");
        let certificates_expiring = IntGauge::new(
            "certificates_expiring",
            "Certificates on the tokens expiring within 30 days (or expired)",
        )
        .expect("metric");
        for m in [
            Box::new(calls.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(refusals.clone()),
            Box::new(contexts.clone()),
            Box::new(connections.clone()),
            Box::new(sessions.clone()),
            Box::new(audit_sequence.clone()),
            Box::new(audit_queue.clone()),
            Box::new(audit_last_fsync.clone()),
            Box::new(quota_buckets.clone()),
            Box::new(key_uses_today.clone()),
            Box::new(daily_limit.clone()),
            Box::new(approvals_pending.clone()),
            Box::new(admin_requests.clone()),
            Box::new(exchanges.clone()),
            Box::new(certificates_expiring.clone()),
        ] {
            registry.register(m).expect("metric names are unique");
        }
        Metrics {
            registry,
            calls,
            latency,
            refusals,
            contexts,
            connections,
            sessions,
            audit_sequence,
            audit_queue,
            audit_last_fsync,
            quota_buckets,
            key_uses_today,
            daily_limit,
            approvals_pending,
            admin_requests,
            exchanges,
            certificates_expiring,
        }
    }

    /// The Prometheus text exposition of everything.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
