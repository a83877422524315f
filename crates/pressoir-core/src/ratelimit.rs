//! Per-credential rate limits (GCRA through `governor`), answered the way every Pressoir
//! protocol answers them: 429 with `Retry-After` and `X-RateLimit-Limit/Remaining/Reset`.
//! The body of the 429 is the service's own, passed in as a responder.

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter as Gcra};
use http::HeaderValue;
use http::request::Parts;
use sha2::{Digest, Sha256};
use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A limit such as `50/min`, `100/10s` or `off`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RateSpec(Option<(NonZeroU32, Duration)>);

impl RateSpec {
    pub const fn off() -> Self {
        RateSpec(None)
    }

    pub fn per(limit: u32, window: Duration) -> Self {
        match NonZeroU32::new(limit) {
            Some(n) if !window.is_zero() => RateSpec(Some((n, window))),
            _ => RateSpec(None),
        }
    }

    pub fn is_off(&self) -> bool {
        self.0.is_none()
    }

    pub fn limit(&self) -> Option<u32> {
        self.0.map(|(n, _)| n.get())
    }
}

impl fmt::Debug for RateSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for RateSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("off"),
            Some((n, w)) if w == Duration::from_secs(60) => write!(f, "{n}/min"),
            Some((n, w)) => write!(f, "{n}/{}s", w.as_secs_f64()),
        }
    }
}

impl FromStr for RateSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s == "0" || s.eq_ignore_ascii_case("off") {
            return Ok(RateSpec::off());
        }
        let bad = || format!("rate limit '{s}' must look like 50/min, 100/10s or off");
        let (n, unit) = s.split_once('/').ok_or_else(bad)?;
        let n: u32 = n.trim().parse().map_err(|_| bad())?;
        let unit = unit.trim();
        let digits = unit.chars().take_while(|c| c.is_ascii_digit()).count();
        let count: u64 = if digits == 0 {
            1
        } else {
            unit[..digits].parse().map_err(|_| bad())?
        };
        let secs = match &unit[digits..] {
            "s" | "sec" | "second" => 1,
            "m" | "min" | "minute" => 60,
            "h" | "hour" => 3600,
            _ => return Err(bad()),
        };
        if count == 0 {
            return Err(bad());
        }
        Ok(RateSpec::per(n, Duration::from_secs(secs * count)))
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Unlimited,
    Allowed {
        limit: u32,
        remaining: u32,
        reset_secs: u64,
    },
    Limited {
        limit: u32,
        retry_after_secs: u64,
        reset_secs: u64,
    },
}

type Keyed = Gcra<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

/// One limit shared by all requests of a service, keyed by credential or client address.
pub struct RateLimiter {
    spec: RateSpec,
    gcra: Option<Keyed>,
    calls: AtomicU64,
}

impl RateLimiter {
    pub fn new(spec: RateSpec) -> Arc<Self> {
        let gcra = spec.0.map(|(n, window)| {
            let quota = Quota::with_period(window / n.get())
                .expect("a non-zero window over a non-zero count")
                .allow_burst(n);
            Gcra::keyed(quota).with_middleware::<StateInformationMiddleware>()
        });
        Arc::new(RateLimiter {
            spec,
            gcra,
            calls: AtomicU64::new(0),
        })
    }

    pub fn spec(&self) -> RateSpec {
        self.spec
    }

    pub fn check(&self, key: &str) -> Decision {
        let (Some(gcra), Some((n, window))) = (&self.gcra, self.spec.0) else {
            return Decision::Unlimited;
        };
        if self.calls.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
            gcra.retain_recent();
        }
        let limit = n.get();
        let per_cell = window / limit;
        match gcra.check_key(&key.to_string()) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                let used = limit.saturating_sub(remaining);
                Decision::Allowed {
                    limit,
                    remaining,
                    reset_secs: ceil_secs(per_cell * used),
                }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Decision::Limited {
                    limit,
                    retry_after_secs: ceil_secs(wait).max(1),
                    reset_secs: ceil_secs(window).max(1),
                }
            }
        }
    }
}

fn ceil_secs(d: Duration) -> u64 {
    let s = d.as_secs();
    if d.subsec_nanos() > 0 { s + 1 } else { s }
}

/// How a request is keyed: by credential when it carries one, else by client address.
pub type KeyFn = fn(&Parts, Option<SocketAddr>) -> String;

/// Builds a service's own 429 body; the headers are added by the layer.
pub type Responder = Arc<dyn Fn() -> Response + Send + Sync>;

/// Keys by a digest of the `Authorization` header, else by client IP.
pub fn key_by_authorization(parts: &Parts, peer: Option<SocketAddr>) -> String {
    match parts.headers.get(http::header::AUTHORIZATION) {
        Some(v) => credential_key(v.as_bytes()),
        None => ip_key(peer),
    }
}

/// A short digest of a credential, so the limiter's table never holds a secret.
pub fn credential_key(credential: &[u8]) -> String {
    let d = Sha256::digest(credential);
    format!("c:{}", hex::encode(&d[..12]))
}

pub fn ip_key(peer: Option<SocketAddr>) -> String {
    match peer {
        Some(a) => format!("ip:{}", a.ip()),
        None => "ip:unknown".to_string(),
    }
}

#[derive(Clone)]
struct LayerState {
    limiter: Arc<RateLimiter>,
    key: KeyFn,
    respond: Responder,
}

/// Wraps `router` in the limit. Requests over it never reach the router.
pub fn apply<S>(
    router: Router<S>,
    limiter: Arc<RateLimiter>,
    key: KeyFn,
    respond: Responder,
) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    if limiter.spec.is_off() {
        return router;
    }
    let state = LayerState {
        limiter,
        key,
        respond,
    };
    router.layer(middleware::from_fn_with_state(state, limit))
}

async fn limit(State(st): State<LayerState>, req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let (parts, body) = req.into_parts();
    let key = (st.key)(&parts, peer);
    let decision = st.limiter.check(&key);
    let mut resp = match decision {
        Decision::Limited { .. } => (st.respond)(),
        _ => next.run(Request::from_parts(parts, body)).await,
    };
    write_headers(resp.headers_mut(), decision);
    resp
}

/// Sets the rate-limit headers (and `Retry-After` on a refusal) for a decision.
pub fn write_headers(h: &mut http::HeaderMap, decision: Decision) {
    let num = |n: u64| HeaderValue::from(n);
    match decision {
        Decision::Unlimited => {}
        Decision::Allowed {
            limit,
            remaining,
            reset_secs,
        } => {
            h.insert("x-ratelimit-limit", num(limit.into()));
            h.insert("x-ratelimit-remaining", num(remaining.into()));
            h.insert("x-ratelimit-reset", num(reset_secs));
        }
        Decision::Limited {
            limit,
            retry_after_secs,
            reset_secs,
        } => {
            h.insert(http::header::RETRY_AFTER, num(retry_after_secs));
            h.insert("x-ratelimit-limit", num(limit.into()));
            h.insert("x-ratelimit-remaining", num(0));
            h.insert(
                "x-ratelimit-reset",
                num(reset_secs.min(retry_after_secs.max(1))),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs() {
        assert_eq!("50/min".parse::<RateSpec>().unwrap().limit(), Some(50));
        assert!("off".parse::<RateSpec>().unwrap().is_off());
        assert!("0".parse::<RateSpec>().unwrap().is_off());
        assert_eq!(
            "5/10s".parse::<RateSpec>().unwrap(),
            RateSpec::per(5, Duration::from_secs(10))
        );
        assert!("fifty".parse::<RateSpec>().is_err());
        assert!("5/fortnight".parse::<RateSpec>().is_err());
    }

    #[test]
    fn the_request_past_the_burst_is_limited() {
        let l = RateLimiter::new("3/min".parse().unwrap());
        for left in [2, 1, 0] {
            match l.check("k") {
                Decision::Allowed { remaining, .. } => assert_eq!(remaining, left),
                d => panic!("{d:?}"),
            }
        }
        assert!(
            matches!(l.check("k"), Decision::Limited { retry_after_secs, .. } if retry_after_secs >= 1)
        );
        assert!(matches!(l.check("other"), Decision::Allowed { .. }));
    }
}
