use pressoir_agent::Config;
use pressoir_core::{RateSpec, Secret, Shutdown};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

pub const PASSWORD: &str = "test-agent-password-0123456789abcdef";

/// Everything the agent logged in this test binary (debug level and up).
pub fn logs() -> String {
    String::from_utf8_lossy(&log_buffer().lock().unwrap()).into_owned()
}

fn log_buffer() -> &'static Mutex<Vec<u8>> {
    static BUF: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    BUF.get_or_init(|| Mutex::new(Vec::new()))
}

struct Capture;
impl Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        log_buffer().lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub fn init_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = tracing_subscriber_init();
    });
}

fn tracing_subscriber_init() -> Option<()> {
    use tracing_subscriber::EnvFilter;
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new("debug"))
        .with_writer(|| Capture)
        .with_ansi(false)
        .try_init()
        .ok()
}

/// The stores every storage test runs on: SQLite always, PostgreSQL when configured.
pub fn backends() -> Vec<Option<String>> {
    let mut v = vec![None];
    if let Some(url) = pressoir_core::db::test_postgres_url() {
        v.push(Some(url));
    }
    v
}

pub fn random_schema() -> String {
    format!("t_{:016x}", rand::random::<u64>())
}

pub struct TestAgent {
    pub base: String,
    pub root: tempfile::TempDir,
    pub data_dir: PathBuf,
    pub shutdown: Shutdown,
    pub client: reqwest::Client,
    pub task: tokio::task::JoinHandle<()>,
    pub config: Config,
}

pub fn config(data_dir: &Path, db: &Option<String>) -> Config {
    let mut c = Config::new(data_dir, Secret::new(PASSWORD));
    c.rate_limit = RateSpec::off();
    c.workers = 4;
    if let Some(url) = db {
        c.database_url = Some(url.clone());
        c.database_schema = random_schema();
    }
    c
}

impl TestAgent {
    pub async fn start(db: &Option<String>, tweak: impl FnOnce(&mut Config)) -> TestAgent {
        init_logs();
        let root = tempfile::tempdir().unwrap();
        let data_dir = root.path().join("agent");
        let mut c = config(&data_dir, db);
        tweak(&mut c);
        Self::start_with(root, c).await
    }

    pub async fn start_with(root: tempfile::TempDir, config: Config) -> TestAgent {
        init_logs();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = Shutdown::new();
        let s = shutdown.clone();
        let c = config.clone();
        let task = tokio::spawn(async move {
            pressoir_agent::run(c, listener, s).await.unwrap();
        });
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while client
            .get(format!("http://{addr}/ping"))
            .send()
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "the agent did not start");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        TestAgent {
            base: format!("http://{addr}"),
            data_dir: config.data_dir.clone(),
            root,
            shutdown,
            client,
            task,
            config,
        }
    }

    /// Stops the agent and waits for it; returns its temp dir and config for a restart.
    pub async fn stop(self) -> (tempfile::TempDir, Config) {
        self.shutdown.trigger();
        let _ = self.task.await;
        (self.root, self.config)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(self.url(path)).bearer_auth(PASSWORD)
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.post(self.url(path)).bearer_auth(PASSWORD)
    }

    pub async fn submit(&self, job_type: &str, data: Value) -> Value {
        let r = self
            .post("/agent/job")
            .json(&serde_json::json!({"job_type": job_type, "data": data}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "submitting {job_type}");
        r.json().await.unwrap()
    }

    pub async fn job(&self, id: &str) -> Value {
        let r = self.get(&format!("/agent/job/{id}")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    /// Polls a job until it has ended.
    pub async fn wait(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let j = self.job(id).await;
            if j["status"] == "Success" || j["status"] == "Failure" {
                return j;
            }
            assert!(Instant::now() < deadline, "job {id} did not end: {j}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn run(&self, job_type: &str, data: Value) -> Value {
        let s = self.submit(job_type, data).await;
        self.wait(s["id"].as_str().unwrap()).await
    }

    pub fn sites(&self) -> PathBuf {
        self.data_dir.join("benches/bench-0001/sites")
    }
}

pub fn new_site(name: &str) -> Value {
    serde_json::json!({"name": name, "apps": ["frappe", "erpnext"], "admin_password": "admin-pw"})
}
