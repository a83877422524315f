//! Starts a real Press and a real agent on 127.0.0.1:0, on SQLite or PostgreSQL, and talks to
//! them over HTTP as a client would.

use pressoir_core::{RateSpec, Secret, Shutdown};
use pressoir_press::{Config, ServerSeed};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub const ADMIN_PW: &str = "admin-password-for-tests";
pub const AGENT_PW: &str = "agent-password-for-tests-0123456789";

#[derive(Clone, Debug)]
pub enum Backend {
    Sqlite,
    Postgres(String),
}

/// SQLite always; PostgreSQL too when `PRESSOIR_TEST_POSTGRES_URL` is set.
pub fn backends() -> Vec<Backend> {
    let mut v = vec![Backend::Sqlite];
    match pressoir_core::db::test_postgres_url() {
        Some(u) => v.push(Backend::Postgres(u)),
        None => eprintln!("PostgreSQL variant SKIPPED (PRESSOIR_TEST_POSTGRES_URL is not set)"),
    }
    v
}

#[derive(Clone)]
pub struct Opts {
    pub press_rate: RateSpec,
    pub agent_rate: RateSpec,
    pub poll_interval: Duration,
    pub push: bool,
    pub agent: bool,
    pub session_ttl: Option<Duration>,
    pub bearer: Option<pressoir_press::Bearer>,
    pub webhooks: Option<pressoir_press::webhooks::WebhookConfig>,
    /// The agent's offsite storage (backups).
    pub agent_storage: Option<pressoir_agent::StorageConfig>,
    pub backup_policies: Vec<pressoir_press::backup_policy::BackupPolicy>,
    pub backup_delete_backoff: pressoir_press::backup_policy::RetryBackoff,
    /// Press's health check: interval and failed checks before Broken (default: Config's).
    pub health: Option<(Duration, u32)>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            press_rate: RateSpec::off(),
            agent_rate: RateSpec::off(),
            poll_interval: Duration::from_millis(100),
            push: true,
            agent: true,
            session_ttl: None,
            bearer: None,
            webhooks: None,
            agent_storage: None,
            backup_policies: Vec::new(),
            backup_delete_backoff: Default::default(),
            health: None,
        }
    }
}

pub struct Cloud {
    pub dir: tempfile::TempDir,
    pub backend: Backend,
    pub schema: String,
    pub opts: Opts,
    pub press_addr: SocketAddr,
    pub agent_addr: SocketAddr,
    press: Option<(Shutdown, JoinHandle<()>)>,
    agent: Option<(Shutdown, JoinHandle<()>)>,
    pub http: reqwest::Client,
}

fn random_schema() -> String {
    use rand::Rng;
    let n: u64 = rand::thread_rng().r#gen();
    format!("t_{n:016x}")
}

impl Cloud {
    pub async fn start(backend: &Backend, opts: Opts) -> Cloud {
        let dir = tempfile::tempdir().unwrap();
        let press_l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let agent_l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let press_addr = press_l.local_addr().unwrap();
        let agent_addr = agent_l.local_addr().unwrap();
        let mut c = Cloud {
            dir,
            backend: backend.clone(),
            schema: random_schema(),
            opts,
            press_addr,
            agent_addr,
            press: None,
            agent: None,
            http: reqwest::Client::new(),
        };
        if c.opts.agent {
            c.start_agent(Some(agent_l)).await;
        } else {
            drop(agent_l);
        }
        c.start_press(Some(press_l)).await;
        c
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.press_addr)
    }

    pub fn agent_url(&self) -> String {
        format!("http://{}", self.agent_addr)
    }

    pub fn agent_dir(&self) -> PathBuf {
        self.dir.path().join("agent")
    }

    pub fn press_config(&self) -> Config {
        let url = match &self.backend {
            Backend::Sqlite => pressoir_core::db::sqlite_url(&self.dir.path().join("press.sqlite")),
            Backend::Postgres(u) => u.clone(),
        };
        let mut cfg = Config::new(url, Secret::new(ADMIN_PW));
        cfg.db_schema = self.schema.clone();
        cfg.rate_limit = self.opts.press_rate;
        cfg.agent_rate_limit = self.opts.agent_rate;
        cfg.poll_interval = self.opts.poll_interval;
        cfg.servers = vec![ServerSeed::new(
            "app-server-1",
            &self.agent_url(),
            Secret::new(AGENT_PW),
        )];
        if let Some(t) = self.opts.session_ttl {
            cfg.session_ttl = t;
        }
        cfg.bearer = self.opts.bearer.clone();
        cfg.archive_backup = self.opts.agent_storage.is_some();
        cfg.backup_policies = self.opts.backup_policies.clone();
        cfg.backup_tick = Duration::from_millis(50);
        cfg.backup_delete_backoff = self.opts.backup_delete_backoff;
        if let Some((interval, failures)) = self.opts.health {
            cfg.health_interval = interval;
            cfg.health_failures = failures;
        }
        if let Some(w) = &self.opts.webhooks {
            cfg.webhooks = w.clone();
        }
        cfg
    }

    pub async fn start_press(&mut self, listener: Option<TcpListener>) {
        let l = match listener {
            Some(l) => l,
            None => bind_again(self.press_addr).await,
        };
        let cfg = self.press_config();
        let sd = Shutdown::new();
        let s2 = sd.clone();
        let h = tokio::spawn(async move {
            if let Err(e) = pressoir_press::run(cfg, l, s2).await {
                panic!("press failed: {e}");
            }
        });
        self.press = Some((sd, h));
        self.wait_ready().await;
    }

    /// Another Press on the same database (a replica behind a load balancer); stops with `sd`.
    pub async fn start_replica(&self, sd: Shutdown) -> Client {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let cfg = self.press_config();
        tokio::spawn(async move {
            if let Err(e) = pressoir_press::run(cfg, l, sd).await {
                panic!("replica failed: {e}");
            }
        });
        let mut c = self.guest();
        c.base = format!("http://{addr}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while c.get("ping", &[]).await.0 != 200 {
            assert!(Instant::now() < deadline, "replica did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        c
    }

    pub async fn stop_press(&mut self) {
        if let Some((sd, h)) = self.press.take() {
            sd.trigger();
            let _ = h.await;
        }
    }

    pub async fn start_agent(&mut self, listener: Option<TcpListener>) {
        let l = match listener {
            Some(l) => l,
            None => bind_again(self.agent_addr).await,
        };
        let mut cfg = pressoir_agent::Config::new(self.agent_dir(), Secret::new(AGENT_PW));
        cfg.rate_limit = self.opts.agent_rate;
        cfg.workers = 4;
        cfg.storage = self.opts.agent_storage.clone();
        if self.opts.push {
            cfg.press_url = Some(self.url());
            cfg.push_interval = Duration::from_millis(100);
        }
        let sd = Shutdown::new();
        let s2 = sd.clone();
        let h = tokio::spawn(async move {
            if let Err(e) = pressoir_agent::run(cfg, l, s2).await {
                panic!("agent failed: {e}");
            }
        });
        self.agent = Some((sd, h));
    }

    pub async fn stop_agent(&mut self) {
        if let Some((sd, h)) = self.agent.take() {
            sd.trigger();
            let _ = h.await;
        }
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = self
                .http
                .get(format!("{}/api/method/ping", self.url()))
                .send()
                .await
                && r.status() == 200
            {
                return;
            }
            assert!(Instant::now() < deadline, "press did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A client with no credentials.
    pub fn guest(&self) -> Client {
        Client {
            http: self.http.clone(),
            base: self.url(),
            auth: None,
            cookie: None,
            team: None,
        }
    }

    /// The Administrator, authenticated with an API key.
    pub async fn admin(&self) -> Client {
        self.login_token("Administrator", ADMIN_PW).await
    }

    /// Logs `usr` in, then switches to an API key (so the tests are not bound to cookies).
    pub async fn login_token(&self, usr: &str, pwd: &str) -> Client {
        let mut c = self.guest();
        c.login(usr, pwd).await;
        let (s, b) = c
            .post("press.api.account.create_api_secret", json!({}))
            .await;
        assert_eq!(s, 200, "{b}");
        let key = b["message"]["api_key"].as_str().unwrap();
        let secret = b["message"]["api_secret"].as_str().unwrap();
        c.cookie = None;
        c.auth = Some(format!("token {key}:{secret}"));
        c
    }

    pub async fn drop_schema(&self) {
        if let Backend::Postgres(u) = &self.backend {
            let db = pressoir_core::db::Db::connect(u, "public", 1)
                .await
                .unwrap();
            let _ = sqlx::query(&format!(
                "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
                self.schema
            ))
            .execute(&db.pool)
            .await;
        }
    }

    pub async fn shutdown(mut self) {
        self.stop_press().await;
        self.stop_agent().await;
        self.drop_schema().await;
    }
}

async fn bind_again(addr: SocketAddr) -> TcpListener {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => return l,
            Err(e) => {
                assert!(Instant::now() < deadline, "cannot bind {addr} again: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[derive(Clone)]
pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
    pub auth: Option<String>,
    pub cookie: Option<String>,
    pub team: Option<String>,
}

impl Client {
    fn req(&self, method: reqwest::Method, name: &str) -> reqwest::RequestBuilder {
        let mut r = self
            .http
            .request(method, format!("{}/api/method/{name}", self.base));
        if let Some(a) = &self.auth {
            r = r.header("Authorization", a);
        }
        if let Some(c) = &self.cookie {
            r = r.header("Cookie", format!("sid={c}"));
        }
        if let Some(t) = &self.team {
            r = r.header("X-Press-Team", t);
        }
        r
    }

    pub async fn send(
        &self,
        r: reqwest::RequestBuilder,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body, headers)
    }

    pub async fn post(&self, name: &str, body: Value) -> (u16, Value) {
        let (s, b, _) = self
            .send(self.req(reqwest::Method::POST, name).json(&body))
            .await;
        (s, b)
    }

    pub async fn post_full(
        &self,
        name: &str,
        body: Value,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        self.send(self.req(reqwest::Method::POST, name).json(&body))
            .await
    }

    pub async fn get(&self, name: &str, query: &[(&str, &str)]) -> (u16, Value) {
        let (s, b, _) = self
            .send(self.req(reqwest::Method::GET, name).query(query))
            .await;
        (s, b)
    }

    /// A GET with a JSON body, as the reference's `server.status` example sends it.
    pub async fn get_json(&self, name: &str, body: Value) -> (u16, Value) {
        let (s, b, _) = self
            .send(self.req(reqwest::Method::GET, name).json(&body))
            .await;
        (s, b)
    }

    pub async fn raw(&self, method: reqwest::Method, name: &str) -> reqwest::RequestBuilder {
        self.req(method, name)
    }

    /// `login` with JSON; keeps the `sid` cookie.
    pub async fn login(&mut self, usr: &str, pwd: &str) {
        let (s, b, h) = self
            .post_full("login", json!({"usr": usr, "pwd": pwd}))
            .await;
        assert_eq!(s, 200, "login {usr}: {b}");
        self.cookie = Some(sid_of(&h).expect("a sid cookie"));
    }

    /// `site.new`, asserting success; returns (site, job).
    pub async fn new_site(&self, sub: &str, apps: &[&str]) -> (String, String) {
        let (s, b) = self
            .post(
                "press.api.site.new",
                json!({"site": {"name": sub, "apps": apps, "plan": "Starter"}}),
            )
            .await;
        assert_eq!(s, 200, "site.new {sub}: {b}");
        (
            b["message"]["site"].as_str().unwrap().to_string(),
            b["message"]["job"].as_str().unwrap().to_string(),
        )
    }

    /// Polls `site.get` until the site has `status` (or fails after `secs`).
    pub async fn wait_status(&self, site: &str, status: &str, secs: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let (s, b) = self.get("press.api.site.get", &[("name", site)]).await;
            assert_eq!(s, 200, "{b}");
            if b["message"]["status"] == status {
                return b["message"].clone();
            }
            assert!(
                Instant::now() < deadline,
                "{site} stayed {} (wanted {status})",
                b["message"]["status"]
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub async fn wait_job(&self, job: &str, secs: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let (s, b) = self.get("press.api.site.job", &[("job", job)]).await;
            assert_eq!(s, 200, "{b}");
            let st = b["message"]["status"].as_str().unwrap_or("");
            if st == "Success" || st == "Failure" {
                return b["message"].clone();
            }
            assert!(Instant::now() < deadline, "job {job} stayed {st}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

pub fn sid_of(h: &reqwest::header::HeaderMap) -> Option<String> {
    h.get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| {
            c.strip_prefix("sid=")
                .map(|r| r.split(';').next().unwrap_or("").to_string())
        })
}

/// The `message` of the first `_server_messages` entry.
pub fn server_message(b: &Value) -> String {
    let outer: Vec<String> =
        serde_json::from_str(b["_server_messages"].as_str().unwrap_or("[]")).unwrap_or_default();
    outer
        .first()
        .and_then(|s| serde_json::from_str::<Value>(s).ok())
        .and_then(|v| v["message"].as_str().map(|s| s.to_string()))
        .unwrap_or_default()
}
