use pressoir_billing::Config;
use pressoir_core::{RateSpec, Secret, Shutdown};
use serde_json::Value;
use std::time::Duration;

pub const KEY: &str = "test-api-key-0123456789";
pub const HMAC_KEY: &str = "test-hmac-key-for-webhooks";
pub const RSA_PEM: &str = include_str!("test_key.pem");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// SQLite always; PostgreSQL too when a test URL is set.
pub fn backends() -> Vec<Backend> {
    let mut v = vec![Backend::Sqlite];
    if pressoir_core::db::test_postgres_url().is_some() {
        v.push(Backend::Postgres);
    }
    v
}

pub fn random_hex(n: usize) -> String {
    (0..n)
        .map(|_| format!("{:x}", rand::random::<u8>() % 16))
        .collect()
}

pub struct Server {
    pub base: String,
    pub http: reqwest::Client,
    pub shutdown: Shutdown,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

pub fn test_config(backend: Backend, dir: &std::path::Path) -> Config {
    let url = match backend {
        Backend::Sqlite => pressoir_core::db::sqlite_url(&dir.join("billing.sqlite")),
        Backend::Postgres => pressoir_core::db::test_postgres_url().expect("postgres url"),
    };
    let mut c = Config::new(url, Secret::new(KEY));
    c.schema = format!("t_{}", random_hex(12));
    c.rate_limit = RateSpec::off();
    c.hmac_key = Some(Secret::new(HMAC_KEY));
    c.rsa_private_pem = Some(Secret::new(RSA_PEM));
    c.webhook.retry_unit = Duration::from_millis(20);
    c.webhook.timeout = Duration::from_secs(5);
    c.billing_tick = Duration::from_millis(200);
    c.max_connections = 8;
    c
}

pub async fn spawn_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(backend, dir.path());
    tweak(&mut config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = Shutdown::new();
    let router = pressoir_billing::app(config, shutdown.clone())
        .await
        .expect("billing app starts");
    let s = shutdown.clone();
    tokio::spawn(async move { pressoir_core::serve(listener, router, s).await });
    Server {
        base: format!("http://{addr}"),
        http: reqwest::Client::new(),
        shutdown,
        _dir: dir,
    }
}

pub async fn spawn(backend: Backend) -> Server {
    spawn_with(backend, |_| {}).await
}

impl Server {
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call_as(method, path, body, Some(KEY)).await
    }

    pub async fn call_as(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        key: Option<&str>,
    ) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut r = self
            .http
            .request(m, format!("{}/api/v1{}", self.base, path));
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        let v = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("non-JSON body for {method} {path}: {text:?}"));
        (status, v)
    }

    pub async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (s, v) = self.call(method, path, body).await;
        assert_eq!(s, 200, "{method} {path} -> {v}");
        v
    }

    pub async fn raw(&self, method: &str, path: &str, body: &str) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let resp = self
            .http
            .request(m, format!("{}/api/v1{}", self.base, path))
            .bearer_auth(KEY)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("request");
        let status = resp.status().as_u16();
        (status, resp.json().await.expect("JSON body"))
    }
}

/// Polls `f` every 20 ms until it yields Some, for at most `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {secs}s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
