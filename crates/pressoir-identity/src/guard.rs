//! Brute-force protection: after a few failures each attempt waits a growing delay, and past a
//! limit the key (a user, a client from one address, an address) is locked for a while. The
//! clock is passed in, so the policy is tested without sleeping.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub struct BruteForce {
    /// Failures allowed before delays start.
    pub free_failures: u32,
    /// First delay; it doubles with each further failure, up to [`BruteForce::max_delay`].
    pub delay: Duration,
    pub max_delay: Duration,
    /// Failures after which the key is locked.
    pub max_failures: u32,
    pub lockout: Duration,
    /// Failures older than this are forgotten.
    pub window: Duration,
}

impl Default for BruteForce {
    fn default() -> Self {
        BruteForce {
            free_failures: 3,
            delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(2),
            max_failures: 10,
            lockout: Duration::from_secs(300),
            window: Duration::from_secs(900),
        }
    }
}

/// What to do with an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Go { delay: Duration },
    Locked { retry_after: Duration },
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last_ms: i64,
    locked_until_ms: i64,
}

/// Failure counts per key, for one policy. Addresses get a limit `ip_factor` times higher
/// than users, since many people may share one.
pub struct Guard {
    policy: BruteForce,
    entries: Mutex<HashMap<String, Entry>>,
}

impl Guard {
    pub fn new(policy: BruteForce) -> Guard {
        Guard {
            policy,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn scaled(&self, ip: bool) -> (u32, u32) {
        let f = if ip { 5 } else { 1 };
        (self.policy.free_failures * f, self.policy.max_failures * f)
    }

    /// The verdict for the strictest of `keys` (`ip:` keys use the address limits).
    pub fn check(&self, keys: &[&str], now_ms: i64) -> Verdict {
        let map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let mut delay = Duration::ZERO;
        for key in keys {
            let Some(e) = map.get(*key) else { continue };
            if e.locked_until_ms > now_ms {
                return Verdict::Locked {
                    retry_after: Duration::from_millis((e.locked_until_ms - now_ms) as u64),
                };
            }
            if now_ms - e.last_ms > self.policy.window.as_millis() as i64 {
                continue;
            }
            let (free, _) = self.scaled(key.starts_with("ip:"));
            if e.failures >= free {
                let shift = (e.failures - free).min(16);
                let d = self
                    .policy
                    .delay
                    .saturating_mul(1 << shift)
                    .min(self.policy.max_delay);
                delay = delay.max(d);
            }
        }
        Verdict::Go { delay }
    }

    pub fn failure(&self, keys: &[&str], now_ms: i64) {
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 100_000 {
            let window = self.policy.window.as_millis() as i64;
            map.retain(|_, e| now_ms - e.last_ms <= window || e.locked_until_ms > now_ms);
        }
        for key in keys {
            let (_, max) = self.scaled(key.starts_with("ip:"));
            let e = map.entry(key.to_string()).or_insert(Entry {
                failures: 0,
                last_ms: now_ms,
                locked_until_ms: 0,
            });
            if now_ms - e.last_ms > self.policy.window.as_millis() as i64
                || e.locked_until_ms != 0 && e.locked_until_ms <= now_ms
            {
                e.failures = 0;
                e.locked_until_ms = 0;
            }
            e.failures += 1;
            e.last_ms = now_ms;
            if e.failures >= max {
                e.locked_until_ms = now_ms + self.policy.lockout.as_millis() as i64;
            }
        }
    }

    /// A success clears the non-address keys (an address keeps its count: one good password
    /// must not reset a spraying attacker's tally).
    pub fn success(&self, keys: &[&str]) {
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        for key in keys {
            if !key.starts_with("ip:") {
                map.remove(*key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> BruteForce {
        BruteForce {
            free_failures: 2,
            delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(300),
            max_failures: 5,
            lockout: Duration::from_secs(60),
            window: Duration::from_secs(600),
        }
    }

    #[test]
    fn delays_grow_then_the_user_is_locked_then_released() {
        let g = Guard::new(policy());
        let k = ["u:r:ada", "ip:1.2.3.4"];
        let go = |ms| Verdict::Go {
            delay: Duration::from_millis(ms),
        };
        assert_eq!(g.check(&k, 0), go(0));
        g.failure(&k, 0);
        g.failure(&k, 1);
        assert_eq!(g.check(&k, 2), go(100));
        g.failure(&k, 2);
        assert_eq!(g.check(&k, 3), go(200));
        g.failure(&k, 3);
        assert_eq!(g.check(&k, 4), go(300));
        g.failure(&k, 4);
        assert!(matches!(g.check(&k, 5), Verdict::Locked { .. }));
        // Another user from another address is not affected.
        assert_eq!(g.check(&["u:r:bob", "ip:5.6.7.8"], 5), go(0));
        // After the lockout the count starts over.
        assert!(matches!(g.check(&k, 60_005), Verdict::Go { .. }));
        g.failure(&k, 60_005);
        assert!(matches!(g.check(&k, 60_006), Verdict::Go { .. }));
    }

    #[test]
    fn an_address_spraying_many_users_is_locked() {
        let g = Guard::new(policy());
        for i in 0..25 {
            let u = format!("u:r:user{i}");
            g.failure(&[&u, "ip:9.9.9.9"], i);
        }
        assert!(matches!(
            g.check(&["u:r:new", "ip:9.9.9.9"], 30),
            Verdict::Locked { .. }
        ));
        assert!(matches!(
            g.check(&["u:r:new", "ip:1.1.1.1"], 30),
            Verdict::Go { .. }
        ));
    }

    #[test]
    fn success_clears_the_user_but_not_the_address() {
        let g = Guard::new(policy());
        let k = ["u:r:ada", "ip:1.2.3.4"];
        for t in 0..4 {
            g.failure(&k, t);
        }
        g.success(&k);
        assert_eq!(
            g.check(&["u:r:ada"], 5),
            Verdict::Go {
                delay: Duration::ZERO
            }
        );
    }
}
