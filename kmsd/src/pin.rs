//! PIN checks for `C_Login` (PKCS#11 3.0 §5.6): the identities' Argon2 PIN
//! hashes, checked with bounded concurrency over reused memory, and a
//! failed-login budget per identity with a temporary lockout.
//!
//! An Argon2 check holds `m_cost` KiB (19 MiB by default) for tens of
//! milliseconds. At most `max_concurrent_checks` run at once, each in a
//! memory block kept for the next one, so kmsd's memory stays flat however
//! many clients log in. A PIN that verified once is remembered as a keyed
//! hash (HMAC-SHA-256 under a per-process random key), so the many logins of
//! a well-behaved client cost a hash, not an Argon2 run.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use hmac::{Hmac, Mac};
use parking_lot::{Condvar, Mutex};
use pkcs11_sys::{CKF_USER_PIN_COUNT_LOW, CKF_USER_PIN_FINAL_TRY, CKF_USER_PIN_LOCKED};
use rand::RngCore;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::config::LoginCfg;

type HmacSha256 = Hmac<Sha256>;

/// Hashes a PIN for `[[identity]] pin_hash` (`kmsd --hash-pin`).
pub fn hash_pin(pin: &[u8]) -> Result<String, String> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Argon2::default()
        .hash_password(pin, &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("hashing the PIN: {e}"))
}

/// Why a login was not checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Too many wrong PINs: the identity is locked out until the lockout ends.
    Locked,
}

pub struct PinChecker {
    key: [u8; 32],
    /// Argon2 working memory, one entry per check allowed to run at once.
    memory: Mutex<Vec<Vec<Block>>>,
    memory_free: Condvar,
    /// Keyed hashes of PINs that verified, per identity and PIN hash.
    verified: Mutex<HashMap<(String, String), [u8; 32]>>,
    budget: Mutex<HashMap<String, Attempts>>,
    max_failures: u32,
    lockout: Duration,
}

#[derive(Debug, Default)]
struct Attempts {
    /// Wrong PINs since the last success or the end of a lockout.
    failures: u32,
    /// Checks under way: they count against the budget until they end, so
    /// that parallel guesses cannot overrun it.
    pending: u32,
    locked_until: Option<Instant>,
    /// A wrong PIN since the last success (`CKF_USER_PIN_COUNT_LOW`).
    wrong_since_success: bool,
}

impl PinChecker {
    pub fn new(cfg: &LoginCfg) -> PinChecker {
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        PinChecker {
            key,
            memory: Mutex::new((0..cfg.max_concurrent_checks).map(|_| Vec::new()).collect()),
            memory_free: Condvar::new(),
            verified: Mutex::new(HashMap::new()),
            budget: Mutex::new(HashMap::new()),
            max_failures: cfg.max_failures,
            lockout: Duration::from_secs(cfg.lockout_secs),
        }
    }

    /// Checks `pin` for `identity` against its PHC hash, within the
    /// identity's failed-login budget. No hash configured: never matches.
    pub fn check(&self, identity: &str, hash: Option<&str>, pin: &[u8]) -> Result<bool, Refused> {
        self.begin(identity)?;
        let ok = hash.is_some_and(|h| self.verify(identity, h, pin));
        self.end(identity, ok);
        Ok(ok)
    }

    /// Records the outcome of a PIN check made elsewhere (the backend's own
    /// login in transparent mode), within the same budget.
    pub fn check_with(
        &self,
        identity: &str,
        f: impl FnOnce() -> Option<bool>,
    ) -> Result<Option<bool>, Refused> {
        self.begin(identity)?;
        let r = f();
        match r {
            Some(ok) => self.end(identity, ok),
            None => self.abandon(identity),
        }
        Ok(r)
    }

    /// The `CKF_USER_PIN_*` flags this identity's virtual token shows.
    pub fn flags(&self, identity: &str) -> u64 {
        let mut b = self.budget.lock();
        let Some(a) = b.get_mut(identity) else {
            return 0;
        };
        expire(a);
        let mut f = 0;
        if a.locked_until.is_some() {
            f |= CKF_USER_PIN_LOCKED;
        } else if a.failures + 1 >= self.max_failures && a.failures > 0 {
            f |= CKF_USER_PIN_FINAL_TRY;
        }
        if a.wrong_since_success {
            f |= CKF_USER_PIN_COUNT_LOW;
        }
        f
    }

    /// A keyed hash of a PIN, for comparing PINs without keeping them.
    pub fn mac(&self, context: &[u8], pin: &[u8]) -> [u8; 32] {
        let mut m = HmacSha256::new_from_slice(&self.key).expect("any key length");
        m.update(&(context.len() as u64).to_le_bytes());
        m.update(context);
        m.update(pin);
        m.finalize().into_bytes().into()
    }

    fn begin(&self, identity: &str) -> Result<(), Refused> {
        let mut b = self.budget.lock();
        let a = b.entry(identity.to_string()).or_default();
        expire(a);
        if a.locked_until.is_some() || a.failures + a.pending >= self.max_failures {
            return Err(Refused::Locked);
        }
        a.pending += 1;
        Ok(())
    }

    fn end(&self, identity: &str, ok: bool) {
        let mut b = self.budget.lock();
        let a = b.entry(identity.to_string()).or_default();
        a.pending = a.pending.saturating_sub(1);
        if ok {
            *a = Attempts {
                pending: a.pending,
                ..Default::default()
            };
            return;
        }
        a.failures += 1;
        a.wrong_since_success = true;
        if a.failures >= self.max_failures {
            a.locked_until = Some(Instant::now() + self.lockout);
            tracing::warn!(
                identity,
                lockout_secs = self.lockout.as_secs(),
                "too many wrong PINs: identity locked out"
            );
        }
    }

    fn abandon(&self, identity: &str) {
        if let Some(a) = self.budget.lock().get_mut(identity) {
            a.pending = a.pending.saturating_sub(1);
        }
    }

    fn verify(&self, identity: &str, hash: &str, pin: &[u8]) -> bool {
        let key = (identity.to_string(), hash.to_string());
        let mac = self.mac(hash.as_bytes(), pin);
        if let Some(known) = self.verified.lock().get(&key) {
            if bool::from(known.ct_eq(&mac)) {
                return true;
            }
        }
        let ok = self.argon2(hash, pin);
        if ok {
            self.verified.lock().insert(key, mac);
        }
        ok
    }

    /// One Argon2 check in a reused memory block; waits for a free block.
    fn argon2(&self, hash: &str, pin: &[u8]) -> bool {
        let Ok(parsed) = PasswordHash::new(hash) else {
            return false;
        };
        let (Ok(alg), Ok(params)) = (
            Algorithm::try_from(parsed.algorithm),
            Params::try_from(&parsed),
        ) else {
            return false;
        };
        let version = parsed
            .version
            .and_then(|v| Version::try_from(v).ok())
            .unwrap_or_default();
        let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
            return false;
        };
        let mut salt_buf = [0u8; 64];
        let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
            return false;
        };
        let mut blocks = {
            let mut free = self.memory.lock();
            loop {
                if let Some(b) = free.pop() {
                    break b;
                }
                self.memory_free.wait(&mut free);
            }
        };
        blocks.resize(params.block_count(), Block::default());
        let mut out = vec![0u8; expected.len()];
        let ok = Argon2::new(alg, version, params)
            .hash_password_into_with_memory(pin, salt, &mut out, &mut blocks[..])
            .is_ok()
            && argon2::password_hash::Output::new(&out).is_ok_and(|o| o == expected);
        zeroize::Zeroize::zeroize(&mut out);
        self.memory.lock().push(blocks);
        self.memory_free.notify_one();
        ok
    }
}

/// Ends a lockout whose time is up: the identity gets a fresh budget.
fn expire(a: &mut Attempts) {
    if a.locked_until.is_some_and(|t| Instant::now() >= t) {
        a.locked_until = None;
        a.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checker(max_failures: u32, lockout_secs: u64) -> PinChecker {
        PinChecker::new(&LoginCfg {
            max_failures,
            lockout_secs,
            max_concurrent_checks: 2,
        })
    }

    #[test]
    fn hash_round_trip() {
        let c = checker(5, 60);
        let h = hash_pin(b"123456").unwrap();
        assert_eq!(c.check("a", Some(&h), b"123456"), Ok(true));
        assert_eq!(
            c.check("a", Some(&h), b"123456"),
            Ok(true),
            "from the cache"
        );
        assert_eq!(c.check("a", Some(&h), b"1234567"), Ok(false));
        assert_eq!(c.check("a", None, b"123456"), Ok(false));
        assert_eq!(c.check("a", Some("not a hash"), b"123456"), Ok(false));
    }

    // Expect CKF_USER_PIN_COUNT_LOW after a wrong PIN, _FINAL_TRY before the
    // last allowed attempt, _LOCKED (and every check refused) after it.
    #[test]
    fn budget_and_flags() {
        let c = checker(3, 3600);
        let h = hash_pin(b"123456").unwrap();
        assert_eq!(c.flags("a"), 0);
        assert_eq!(c.check("a", Some(&h), b"0"), Ok(false));
        assert_eq!(c.flags("a"), CKF_USER_PIN_COUNT_LOW);
        assert_eq!(c.check("a", Some(&h), b"0"), Ok(false));
        assert_eq!(
            c.flags("a"),
            CKF_USER_PIN_COUNT_LOW | CKF_USER_PIN_FINAL_TRY
        );
        assert_eq!(c.check("a", Some(&h), b"0"), Ok(false));
        assert_eq!(c.flags("a"), CKF_USER_PIN_COUNT_LOW | CKF_USER_PIN_LOCKED);
        assert_eq!(c.check("a", Some(&h), b"123456"), Err(Refused::Locked));
        // Other identities are not affected.
        assert_eq!(c.check("b", Some(&h), b"123456"), Ok(true));
    }

    // Two wrong PINs and the right one, twice over: with a budget of 3 the
    // identity is never locked, because a success resets the count.
    #[test]
    fn success_resets_the_budget() {
        let c = checker(3, 3600);
        let h = hash_pin(b"123456").unwrap();
        for _ in 0..2 {
            assert_eq!(c.check("a", Some(&h), b"0"), Ok(false));
            assert_eq!(c.check("a", Some(&h), b"0"), Ok(false));
            assert_eq!(c.check("a", Some(&h), b"123456"), Ok(true));
            assert_eq!(c.flags("a"), 0);
        }
    }

    #[test]
    fn lockout_ends() {
        let c = checker(1, 0);
        let h = hash_pin(b"123456").unwrap();
        assert_eq!(c.check("a", Some(&h), b"0"), Ok(false));
        assert_eq!(c.check("a", Some(&h), b"123456"), Ok(true));
    }
}
