use pressoir_core::{Secret, Shutdown};
use pressoir_objects::{AccessKey, Config, Policy};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;

pub const ACCESS: &str = "minioadmin";
pub const SECRET: &str = "test-secret-0123456789";

pub struct Server {
    pub addr: SocketAddr,
    pub url: String,
    pub dir: tempfile::TempDir,
    shutdown: Shutdown,
}

impl Server {
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

pub fn config(data_dir: &Path) -> Config {
    let mut c = Config::new(data_dir, ACCESS, Secret::new(SECRET));
    c.keys.push(AccessKey::new(
        "reader",
        Secret::new("reader-secret"),
        Policy {
            read_only: true,
            buckets: None,
        },
    ));
    c.keys.push(AccessKey::new(
        "agent",
        Secret::new("agent-secret"),
        Policy::buckets(&["backups"]),
    ));
    c
}

/// Starts the service in this process, with the test keys; `tweak` adjusts the config.
pub async fn start(tweak: impl FnOnce(&mut Config)) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = config(&dir.path().join("data"));
    tweak(&mut c);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = Shutdown::new();
    let router = pressoir_objects::app(c, shutdown.clone())
        .await
        .expect("app");
    tokio::spawn(pressoir_core::serve(listener, router, shutdown.clone()));
    Server {
        addr,
        url: format!("http://{addr}"),
        dir,
        shutdown,
    }
}

/// The venv's python, or None (and a SKIPPED line) when PRESSOIR_TEST_PYTHON is unset.
pub fn python(test: &str) -> Option<PathBuf> {
    match std::env::var_os("PRESSOIR_TEST_PYTHON") {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => {
            println!("SKIPPED {test}: PRESSOIR_TEST_PYTHON is not set (no boto3/awscli venv)");
            None
        }
    }
}

pub fn check(out: &Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Runs a python script against `server` with S3_ENDPOINT/S3_KEY/S3_SECRET/WORK_DIR set.
pub async fn run_python(
    py: &Path,
    script: &str,
    server: &Server,
    key: (&str, &str),
    cwd: &Path,
) -> Output {
    tokio::process::Command::new(py)
        .arg("-c")
        .arg(script)
        .current_dir(cwd)
        .env("S3_ENDPOINT", &server.url)
        .env("S3_PORT", server.addr.port().to_string())
        .env("S3_KEY", key.0)
        .env("S3_SECRET", key.1)
        .env("WORK_DIR", cwd)
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_ENDPOINT_URL")
        .output()
        .await
        .expect("run python")
}

/// Every file under `dir`, relative to it.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let e = e.expect("entry");
            let p = e.path();
            if e.file_type().expect("type").is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).expect("under").to_path_buf());
            }
        }
    }
    out.sort();
    out
}

/// Asserts the data dir holds only what the store writes: bucket files and hashed object names.
pub fn assert_layout(data_dir: &Path) {
    for f in files_under(data_dir) {
        let parts: Vec<String> = f.iter().map(|s| s.to_string_lossy().to_string()).collect();
        let ok = match parts
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice()
        {
            ["credentials.json"] => true,
            ["objects", "buckets", b, "bucket.json"] => !b.is_empty(),
            ["objects", "buckets", _, "objects", fan, name] => {
                name.len() == 64
                    && name.starts_with(fan)
                    && name.bytes().all(|c| c.is_ascii_hexdigit())
            }
            ["objects", "buckets", _, "uploads", id, _] => id.len() == 32,
            ["objects", "buckets", _, "segments", id, _] => id.len() == 32,
            // Files being written or removed right now.
            ["objects", "tmp", ..] => true,
            _ => false,
        };
        assert!(ok, "unexpected file in the data dir: {}", f.display());
    }
}
