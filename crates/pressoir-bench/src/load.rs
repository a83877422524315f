//! An HTTP/1.1 keep-alive load generator: N connections, each sending its next request as
//! soon as the previous answer is read, for a fixed duration or a fixed request count.

use crate::stats::Summary;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// When a run ends.
#[derive(Debug, Clone, Copy)]
pub enum Stop {
    /// After this long (requests in flight at the deadline are finished and counted).
    Duration(Duration),
    /// After this many requests in total, spread over the connections.
    Requests(u64),
}

/// Builds request number `n` (0-based, unique across connections), for runs whose requests
/// must differ (for example a fresh idempotency key per submission).
pub type MakeRequest = Arc<dyn Fn(u64) -> Request<Full<Bytes>> + Send + Sync>;

/// What to send, where, and for how long.
#[derive(Clone)]
pub struct Spec {
    pub addr: SocketAddr,
    pub connections: usize,
    pub stop: Stop,
    pub method: Method,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// When set, replaces method/path/headers/body for every request.
    pub make: Option<MakeRequest>,
}

impl Spec {
    /// `GET path` on `addr` over 64 connections for 5 seconds.
    pub fn get(addr: SocketAddr, path: &str) -> Spec {
        Spec {
            addr,
            connections: 64,
            stop: Stop::Duration(Duration::from_secs(5)),
            method: Method::GET,
            path: path.to_string(),
            headers: Vec::new(),
            body: Bytes::new(),
            make: None,
        }
    }

    pub fn connections(mut self, n: usize) -> Spec {
        self.connections = n.max(1);
        self
    }

    pub fn stop(mut self, stop: Stop) -> Spec {
        self.stop = stop;
        self
    }

    pub fn method(mut self, m: Method) -> Spec {
        self.method = m;
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Spec {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Spec {
        self.body = body.into();
        self
    }

    pub fn make(mut self, f: MakeRequest) -> Spec {
        self.make = Some(f);
        self
    }

    fn build(&self, n: u64) -> Request<Full<Bytes>> {
        if let Some(f) = &self.make {
            let mut req = f(n);
            if !req.headers().contains_key(http::header::HOST) {
                req.headers_mut()
                    .insert(http::header::HOST, host(self.addr));
            }
            return req;
        }
        let mut req = Request::new(Full::new(self.body.clone()));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self
            .path
            .parse()
            .unwrap_or_else(|_| http::Uri::from_static("/"));
        let h = req.headers_mut();
        h.insert(http::header::HOST, host(self.addr));
        for (k, v) in &self.headers {
            if let (Ok(k), Ok(v)) = (
                HeaderName::try_from(k.as_str()),
                HeaderValue::try_from(v.as_str()),
            ) {
                h.append(k, v);
            }
        }
        req
    }
}

fn host(addr: SocketAddr) -> HeaderValue {
    HeaderValue::try_from(addr.to_string())
        .unwrap_or_else(|_| HeaderValue::from_static("localhost"))
}

/// What a run measured. Latencies cover successful (2xx) and non-2xx answers alike.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub requests: u64,
    /// Answers with a 2xx status.
    pub ok: u64,
    /// Answers with any other status.
    pub non_2xx: u64,
    /// Connection or protocol errors (each closes its connection, which is reopened).
    pub errors: u64,
    pub elapsed: Duration,
    pub rps: f64,
    pub latency: Summary,
}

impl Report {
    pub fn p50(&self) -> Duration {
        self.latency.p50
    }

    pub fn p99(&self) -> Duration {
        self.latency.p99
    }

    /// One line: `requests, req/s, p50, p99, non-2xx, errors`.
    pub fn line(&self) -> String {
        format!(
            "{} requests in {:.2}s: {:.0} req/s, p50 {}, p99 {}, non-2xx {}, errors {}",
            self.requests,
            self.elapsed.as_secs_f64(),
            self.rps,
            crate::stats::ms(self.latency.p50),
            crate::stats::ms(self.latency.p99),
            self.non_2xx,
            self.errors
        )
    }
}

#[derive(Default)]
struct ConnResult {
    ok: u64,
    non_2xx: u64,
    errors: u64,
    latencies: Vec<Duration>,
}

/// Runs the load on the current tokio runtime and reports.
pub async fn run(spec: Spec) -> Report {
    let spec = Arc::new(spec);
    let counter = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = match spec.stop {
        Stop::Duration(d) => Some(start + d),
        Stop::Requests(_) => None,
    };
    let limit = match spec.stop {
        Stop::Requests(n) => n,
        Stop::Duration(_) => u64::MAX,
    };
    let mut tasks = Vec::with_capacity(spec.connections);
    for _ in 0..spec.connections {
        let spec = spec.clone();
        let counter = counter.clone();
        tasks.push(tokio::spawn(async move {
            connection(spec, counter, deadline, limit).await
        }));
    }
    let mut total = ConnResult::default();
    for t in tasks {
        if let Ok(r) = t.await {
            total.ok += r.ok;
            total.non_2xx += r.non_2xx;
            total.errors += r.errors;
            total.latencies.extend(r.latencies);
        }
    }
    let elapsed = start.elapsed();
    let requests = total.ok + total.non_2xx;
    Report {
        requests,
        ok: total.ok,
        non_2xx: total.non_2xx,
        errors: total.errors,
        elapsed,
        rps: requests as f64 / elapsed.as_secs_f64().max(1e-9),
        latency: Summary::of(&mut total.latencies),
    }
}

async fn connection(
    spec: Arc<Spec>,
    counter: Arc<AtomicU64>,
    deadline: Option<Instant>,
    limit: u64,
) -> ConnResult {
    let mut out = ConnResult::default();
    let mut consecutive_errors = 0u32;
    'reconnect: loop {
        if deadline.is_some_and(|d| Instant::now() >= d) || counter.load(Ordering::Relaxed) >= limit
        {
            return out;
        }
        let mut sender = match open(spec.addr).await {
            Ok(s) => s,
            Err(_) => {
                out.errors += 1;
                consecutive_errors += 1;
                if consecutive_errors > 100 {
                    return out;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue 'reconnect;
            }
        };
        loop {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return out;
            }
            let n = counter.fetch_add(1, Ordering::Relaxed);
            if n >= limit {
                return out;
            }
            let req = spec.build(n);
            let t0 = Instant::now();
            let res = async {
                sender.ready().await?;
                let resp = sender.send_request(req).await?;
                let status = resp.status();
                resp.into_body().collect().await?;
                Ok::<_, hyper::Error>(status)
            }
            .await;
            match res {
                Ok(status) => {
                    consecutive_errors = 0;
                    out.latencies.push(t0.elapsed());
                    if status.is_success() {
                        out.ok += 1;
                    } else {
                        out.non_2xx += 1;
                    }
                }
                Err(_) => {
                    out.errors += 1;
                    consecutive_errors += 1;
                    if consecutive_errors > 100 {
                        return out;
                    }
                    continue 'reconnect;
                }
            }
        }
    }
}

async fn open(
    addr: SocketAddr,
) -> Result<http1::SendRequest<Full<Bytes>>, Box<dyn std::error::Error + Send + Sync>> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let (sender, conn) = http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_requests_against_hello() {
        let addr = crate::hello::spawn().await;
        let r = run(Spec::get(addr, "/")
            .connections(4)
            .stop(Stop::Requests(200)))
        .await;
        assert_eq!(r.requests, 200);
        assert_eq!(r.ok, 200);
        assert_eq!(r.errors, 0);
        assert!(r.latency.p99 >= r.latency.p50);
        let r = run(Spec::get(addr, "/")
            .connections(2)
            .stop(Stop::Duration(Duration::from_millis(200))))
        .await;
        assert!(r.requests > 0 && r.ok == r.requests);
    }

    #[tokio::test]
    async fn make_builds_each_request() {
        let addr = crate::hello::spawn().await;
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let spec = Spec::get(addr, "/")
            .connections(3)
            .stop(Stop::Requests(30))
            .make(Arc::new(move |n| {
                s2.lock().unwrap().push(n);
                Request::post(format!("/x/{n}"))
                    .body(Full::new(Bytes::from("b")))
                    .unwrap()
            }));
        let r = run(spec).await;
        assert_eq!(r.ok, 30);
        let mut v = seen.lock().unwrap().clone();
        v.sort();
        assert_eq!(v, (0..30).collect::<Vec<_>>());
    }
}
