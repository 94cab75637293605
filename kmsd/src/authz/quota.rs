//! Quotas, decided in the pipeline after policy: a token-bucket rate per
//! identity (every judged call) and per (identity, key) (every use of a
//! key), and a daily limit of uses per key (counted in the store, so it
//! survives restarts). Defaults come from `[quotas]`; a permitting policy's
//! `@rate("N/s")` and `@daily_limit("N")` annotations override them for
//! the calls it permits (the strictest wins when several permit).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Deserialize;

/// `N` calls per `per`, with a burst of `N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub n: u32,
    pub per: Duration,
}

impl Rate {
    /// `"100/s"`, `"6000/m"`, `"10000/h"`.
    pub fn parse(s: &str) -> Result<Rate, String> {
        let bad = || format!("{s:?}: expected a rate such as \"100/s\", \"6000/m\" or \"10000/h\"");
        let (n, unit) = s.trim().split_once('/').ok_or_else(bad)?;
        let n: u32 = n.trim().parse().map_err(|_| bad())?;
        let per = match unit.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        if n == 0 {
            return Err(bad());
        }
        Ok(Rate { n, per })
    }

    /// The stricter of two rates (fewer calls per second).
    pub fn min(self, other: Rate) -> Rate {
        let a = self.n as f64 / self.per.as_secs_f64();
        let b = other.n as f64 / other.per.as_secs_f64();
        if a <= b {
            self
        } else {
            other
        }
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "m",
            _ => "h",
        };
        write!(f, "{}/{unit}", self.n)
    }
}

/// `[quotas]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuotasCfg {
    /// Judged calls per identity ("" for no limit).
    pub identity_rate: String,
    /// Uses of one key by one identity ("" for no limit).
    pub key_rate: String,
    /// Uses of one key per UTC day, over all identities (0 for no limit).
    pub daily_limit_per_key: u64,
}

impl Default for QuotasCfg {
    fn default() -> QuotasCfg {
        QuotasCfg {
            identity_rate: String::new(),
            key_rate: String::new(),
            daily_limit_per_key: 10_000,
        }
    }
}

impl QuotasCfg {
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("identity_rate", &self.identity_rate),
            ("key_rate", &self.key_rate),
        ] {
            if !v.is_empty() {
                Rate::parse(v).map_err(|e| format!("quotas.{name}: {e}"))?;
            }
        }
        Ok(())
    }
}

/// Which quota refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    IdentityRate(Rate),
    KeyRate(Rate),
    DailyLimit(u64),
}

impl Exceeded {
    pub fn rule(&self) -> String {
        match self {
            Exceeded::IdentityRate(r) => format!("identity rate {r}"),
            Exceeded::KeyRate(r) => format!("key rate {r}"),
            Exceeded::DailyLimit(n) => format!("daily limit {n}"),
        }
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
    rate: Rate,
}

impl Bucket {
    fn new(rate: Rate, now: Instant) -> Bucket {
        Bucket {
            tokens: rate.n as f64,
            at: now,
            rate,
        }
    }

    fn refill(&mut self, now: Instant) {
        let per_sec = self.rate.n as f64 / self.rate.per.as_secs_f64();
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * per_sec).min(self.rate.n as f64);
        self.at = now;
    }

    fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.rate.n as f64
    }
}

/// The rate buckets (in memory: a restart refills them).
pub struct Quotas {
    pub identity_rate: Option<Rate>,
    pub key_rate: Option<Rate>,
    pub daily_limit_per_key: u64,
    identities: Mutex<HashMap<String, Bucket>>,
    keys: Mutex<HashMap<(String, String), Bucket>>,
}

/// How full a bucket is, for `quotas show` and metrics.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BucketView {
    pub identity: String,
    pub key: Option<String>,
    pub rate: String,
    pub available: u64,
}

impl Quotas {
    pub fn new(c: &QuotasCfg) -> Quotas {
        let rate = |s: &str| (!s.is_empty()).then(|| Rate::parse(s).ok()).flatten();
        Quotas {
            identity_rate: rate(&c.identity_rate),
            key_rate: rate(&c.key_rate),
            daily_limit_per_key: c.daily_limit_per_key,
            identities: Mutex::new(HashMap::new()),
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// One judged call by `who`.
    pub fn take_identity(&self, who: &str) -> Result<(), Exceeded> {
        let Some(rate) = self.identity_rate else {
            return Ok(());
        };
        take(&self.identities, who.to_string(), rate)
            .then_some(())
            .ok_or(Exceeded::IdentityRate(rate))
    }

    /// One use of `key` by `who`, at the stricter of the default and the
    /// policy's `@rate`.
    pub fn take_key(&self, who: &str, key: &str, policy: Option<Rate>) -> Result<(), Exceeded> {
        let rate = match (self.key_rate, policy) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => match a.or(b) {
                Some(r) => r,
                None => return Ok(()),
            },
        };
        take(&self.keys, (who.to_string(), key.to_string()), rate)
            .then_some(())
            .ok_or(Exceeded::KeyRate(rate))
    }

    /// The daily limit for a key: the stricter of the default and the
    /// policy's `@daily_limit` (0 means none).
    pub fn daily_limit(&self, policy: Option<u64>) -> Option<u64> {
        let d = (self.daily_limit_per_key > 0).then_some(self.daily_limit_per_key);
        match (d, policy) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Forgets buckets that are full again (idle): memory follows use.
    pub fn sweep(&self) {
        let now = Instant::now();
        self.identities.lock().retain(|_, b| !b.full(now));
        self.keys.lock().retain(|_, b| !b.full(now));
    }

    /// The buckets in use.
    pub fn buckets(&self) -> Vec<BucketView> {
        let now = Instant::now();
        let mut v: Vec<BucketView> = self
            .identities
            .lock()
            .iter_mut()
            .map(|(who, b)| {
                b.refill(now);
                BucketView {
                    identity: who.clone(),
                    key: None,
                    rate: b.rate.to_string(),
                    available: b.tokens as u64,
                }
            })
            .collect();
        v.extend(self.keys.lock().iter_mut().map(|((who, key), b)| {
            b.refill(now);
            BucketView {
                identity: who.clone(),
                key: Some(key.clone()),
                rate: b.rate.to_string(),
                available: b.tokens as u64,
            }
        }));
        v
    }
}

fn take<K: std::hash::Hash + Eq>(m: &Mutex<HashMap<K, Bucket>>, k: K, rate: Rate) -> bool {
    let now = Instant::now();
    let mut m = m.lock();
    let b = m.entry(k).or_insert_with(|| Bucket::new(rate, now));
    if b.rate != rate {
        // The policy changed the rate: start over at the new one.
        *b = Bucket::new(rate, now);
    }
    b.take(now)
}

/// Today's day number (UTC days since 1970), for the daily counters.
pub fn today() -> u64 {
    crate::core::inventory::now() / 86_400
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse() {
        assert_eq!(
            Rate::parse("100/s").unwrap(),
            Rate {
                n: 100,
                per: Duration::from_secs(1)
            }
        );
        assert_eq!(Rate::parse("6/m").unwrap().per, Duration::from_secs(60));
        for bad in ["", "100", "0/s", "x/s", "5/d"] {
            assert!(Rate::parse(bad).is_err(), "{bad}");
        }
        let strict = Rate::parse("60/m")
            .unwrap()
            .min(Rate::parse("2/s").unwrap());
        assert_eq!(strict.to_string(), "60/m");
    }

    #[test]
    fn a_bucket_empties_and_refills() {
        let q = Quotas::new(&QuotasCfg {
            identity_rate: "3/s".into(),
            key_rate: String::new(),
            daily_limit_per_key: 0,
        });
        for _ in 0..3 {
            q.take_identity("alice").unwrap();
        }
        assert!(matches!(
            q.take_identity("alice"),
            Err(Exceeded::IdentityRate(_))
        ));
        q.take_identity("bob").unwrap();
        std::thread::sleep(Duration::from_millis(400));
        q.take_identity("alice").unwrap();
        assert_eq!(q.daily_limit(None), None);
        assert!(q.take_key("alice", "k-1", None).is_ok());
    }

    #[test]
    fn the_strictest_rate_and_limit_win() {
        let q = Quotas::new(&QuotasCfg {
            key_rate: "500/s".into(),
            ..QuotasCfg::default()
        });
        let policy = Rate::parse("1/h").unwrap();
        q.take_key("alice", "k-1", Some(policy)).unwrap();
        assert_eq!(
            q.take_key("alice", "k-1", Some(policy)),
            Err(Exceeded::KeyRate(policy))
        );
        assert_eq!(q.daily_limit(Some(5)), Some(5));
        assert_eq!(q.daily_limit(Some(50_000)), Some(10_000));
    }
}
