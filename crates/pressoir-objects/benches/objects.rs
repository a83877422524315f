//! The objects benchmark: prints figures, asserts nothing.
//!
//! `cargo bench -p pressoir-objects` (with PRESSOIR_TEST_PYTHON set for the boto3 and moto
//! figures). It starts Pressoir's server (the release `pressoir-objects-server` binary, its
//! own process, once with fsync on, as it runs by default, and once without) and, as a peer on the same machine in the same run, moto's
//! `moto_server` (installed into the venv when missing). For each it measures:
//! - 4 KiB PUT and GET ops/s with a Rust client (object_store) over 16 connections,
//! - 256 MiB upload (object_store multipart, 16 MiB parts, 8 in flight) and download (one
//!   GET of a presigned URL, streamed with reqwest) MiB/s,
//! - and, through `benches/boto3_bench.py`, the same with boto3 on one thread.
//!
//! Each client's ceiling is measured too: its 4 KiB PUT and GET against a null server in
//! this process that answers every request with an S3-shaped 200 and stores nothing, so
//! the figures show how much of a ratio to moto the client itself leaves reachable.
//!
//! Env: BENCH_SECONDS (per small-object figure, default 3), BENCH_MIB (default 256).

use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ObjectStore, PutPayload, WriteMultipart};
use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const ACCESS: &str = "bench";
const SECRET: &str = "bench-secret-key";
const CONNS: usize = 16;

struct Target {
    name: String,
    url: String,
    child: Child,
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Default, Clone, Copy)]
struct Figures {
    put_4k: f64,
    get_4k: f64,
    upload_mibs: f64,
    download_mibs: f64,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "server on port {port} did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn start_pressoir(dir: &std::path::Path, fsync: bool) -> Target {
    let mut args = vec![
        "--data-dir",
        dir.to_str().unwrap(),
        "--access-key",
        ACCESS,
        "--secret-key",
        SECRET,
    ];
    if !fsync {
        args.push("--no-fsync");
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_pressoir-objects-server"))
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn pressoir-objects-server");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .expect("listening line")
        .to_string();
    Target {
        name: if fsync {
            "pressoir".into()
        } else {
            "pressoir-nosync".into()
        },
        url: format!("http://{addr}"),
        child,
    }
}

fn start_moto(python: &std::path::Path) -> Option<Target> {
    let out = Command::new(python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/benches/boto3_bench.py"
        ))
        .arg("--ensure-moto")
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "moto could not be installed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    let moto_server = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let port = free_port();
    let child = Command::new(&moto_server)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    wait_port(port);
    Some(Target {
        name: "moto".into(),
        url: format!("http://127.0.0.1:{port}"),
        child,
    })
}

/// The null server: reads each request's body, answers PUT with an ETag and GET with a
/// 4 KiB object, stores nothing.
async fn start_null_server() -> String {
    use axum::body::Bytes;
    use axum::http::{Method, header};
    async fn answer(method: Method, _body: Bytes) -> axum::response::Response {
        use axum::response::IntoResponse;
        let common = [
            (header::ETAG, "\"0123456789abcdef0123456789abcdef\""),
            (header::LAST_MODIFIED, "Fri, 04 Dec 2026 12:00:00 GMT"),
            (header::CONTENT_TYPE, "binary/octet-stream"),
        ];
        if method == Method::GET {
            (common, vec![7u8; 4096]).into_response()
        } else {
            (common, "").into_response()
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(answer);
    // TCP_NODELAY, as Pressoir's server sets it, so Nagle never delays an answer.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn client(url: &str, bucket: &str) -> Arc<object_store::aws::AmazonS3> {
    Arc::new(
        AmazonS3Builder::new()
            .with_endpoint(url)
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_bucket_name(bucket)
            .with_access_key_id(ACCESS)
            .with_secret_access_key(SECRET)
            .with_unsigned_payload(true)
            .build()
            .unwrap(),
    )
}

async fn rust_figures(url: &str, bucket: &str, seconds: f64, mib: usize) -> Figures {
    let s3 = client(url, bucket);
    let body = bytes::Bytes::from(vec![7u8; 4096]);
    for i in 0..CONNS {
        s3.put(
            &Path::from(format!("warm/{i}")),
            PutPayload::from(body.clone()),
        )
        .await
        .unwrap();
    }
    let run = |op: &'static str| {
        let s3 = s3.clone();
        let body = body.clone();
        async move {
            let count = Arc::new(AtomicU64::new(0));
            let stop = Instant::now() + Duration::from_secs_f64(seconds);
            let t0 = Instant::now();
            let mut tasks = Vec::new();
            for w in 0..CONNS {
                let s3 = s3.clone();
                let body = body.clone();
                let count = count.clone();
                tasks.push(tokio::spawn(async move {
                    let mut i = 0u64;
                    while Instant::now() < stop {
                        if op == "put" {
                            let key = Path::from(format!("small/{w}/{}", i % 500));
                            s3.put(&key, PutPayload::from(body.clone())).await.unwrap();
                        } else {
                            let key = Path::from(format!("warm/{w}"));
                            let got = s3.get(&key).await.unwrap().bytes().await.unwrap();
                            assert_eq!(got.len(), 4096);
                        }
                        i += 1;
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
            count.load(Ordering::Relaxed) as f64 / t0.elapsed().as_secs_f64()
        }
    };
    let put_4k = run("put").await;
    let get_4k = run("get").await;
    if mib == 0 {
        return Figures {
            put_4k,
            get_4k,
            ..Default::default()
        };
    }

    let big = bytes::Bytes::from((0..mib << 20).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    let key = Path::from("big.bin");
    let t0 = Instant::now();
    let upload = s3.put_multipart(&key).await.unwrap();
    let mut w = WriteMultipart::new_with_chunk_size(upload, 16 << 20);
    for chunk in big.chunks(16 << 20) {
        w.wait_for_capacity(8).await.unwrap();
        w.put(bytes::Bytes::copy_from_slice(chunk));
    }
    w.finish().await.unwrap();
    let upload_mibs = mib as f64 / t0.elapsed().as_secs_f64();
    drop(big);
    // The download: one GET of a presigned URL, streamed with reqwest (object_store's own
    // `get` stream is measured too, and printed, but it is the slower client here).
    let url = object_store::signer::Signer::signed_url(
        &*s3,
        http::Method::GET,
        &key,
        Duration::from_secs(600),
    )
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let mut download_mibs: f64 = 0.0;
    for _ in 0..2 {
        let t0 = Instant::now();
        let mut stream = http.get(url.clone()).send().await.unwrap().bytes_stream();
        let mut n = 0usize;
        while let Some(chunk) = stream.next().await {
            n += chunk.unwrap().len();
        }
        assert_eq!(n, mib << 20);
        download_mibs = download_mibs.max(mib as f64 / t0.elapsed().as_secs_f64());
    }
    let t0 = Instant::now();
    let mut stream = s3.get(&key).await.unwrap().into_stream();
    let mut n = 0usize;
    while let Some(chunk) = stream.next().await {
        n += chunk.unwrap().len();
    }
    assert_eq!(n, mib << 20);
    println!(
        "  ({url_host}: object_store get stream of {mib} MiB: {:.0} MiB/s)",
        mib as f64 / t0.elapsed().as_secs_f64(),
        url_host = url.host_str().unwrap_or("")
    );
    Figures {
        put_4k,
        get_4k,
        upload_mibs,
        download_mibs,
    }
}

fn boto3_figures(
    python: &std::path::Path,
    url: &str,
    bucket: &str,
    work: &std::path::Path,
    seconds: f64,
    mib: usize,
) -> Option<Figures> {
    let out = Command::new(python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/benches/boto3_bench.py"
        ))
        .args([
            url,
            ACCESS,
            SECRET,
            bucket,
            work.to_str().unwrap(),
            &seconds.to_string(),
            &mib.to_string(),
        ])
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "boto3 driver failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(out.stdout.trim_ascii()).ok()?;
    Some(Figures {
        put_4k: v["put_4k"].as_f64()?,
        get_4k: v["get_4k"].as_f64()?,
        upload_mibs: v["upload_mibs"].as_f64()?,
        download_mibs: v["download_mibs"].as_f64()?,
    })
}

fn main() {
    let seconds: f64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let mib: usize = std::env::var("BENCH_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(256);
    let python = std::env::var_os("PRESSOIR_TEST_PYTHON").map(std::path::PathBuf::from);
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();

    let mut targets = vec![
        start_pressoir(&dir.path().join("pressoir"), true),
        start_pressoir(&dir.path().join("pressoir-nosync"), false),
    ];
    match &python {
        Some(py) => match start_moto(py) {
            Some(m) => targets.push(m),
            None => println!("moto: SKIPPED (could not install or start moto_server)"),
        },
        None => println!("boto3 and moto: SKIPPED (PRESSOIR_TEST_PYTHON is not set)"),
    }

    let mut rows: Vec<(String, &str, Figures)> = Vec::new();
    let null = rt.block_on(start_null_server());
    let null_dir = dir.path().join("work-null");
    std::fs::create_dir_all(&null_dir).unwrap();
    if let Some(py) = &python
        && let Some(f) = boto3_figures(py, &null, "backups", &null_dir, seconds, 0)
    {
        rows.push(("ceiling".into(), "boto3, 1 thread", f));
    }
    let f = rt.block_on(rust_figures(&null, "backups", seconds, 0));
    rows.push(("ceiling".into(), "Rust object_store, 16 conns", f));
    for t in &targets {
        // Pressoir seeds `backups`; moto creates buckets on demand (the boto3 driver does so
        // first, and moto accepts the object_store client's PUTs once the bucket exists).
        let work = dir.path().join(format!("work-{}", t.name));
        std::fs::create_dir_all(&work).unwrap();
        if let Some(py) = &python
            && let Some(f) = boto3_figures(py, &t.url, "backups", &work, seconds, mib)
        {
            rows.push((t.name.clone(), "boto3, 1 thread", f));
        }
        let f = rt.block_on(rust_figures(&t.url, "backups", seconds, mib));
        rows.push((t.name.clone(), "Rust object_store, 16 conns", f));
    }

    let get = |s: &str, c: &str| rows.iter().find(|r| r.0 == s && r.1 == c).map(|r| r.2);
    println!();
    println!(
        "{:<16} {:<28} {:>12} {:>12} {:>14} {:>16} {:>20}",
        "server",
        "client",
        "PUT 4KiB/s",
        "GET 4KiB/s",
        "upload MiB/s",
        "download MiB/s",
        "client ceiling P/G"
    );
    for (server, client, f) in rows.iter().filter(|r| r.0 != "ceiling") {
        let ceiling = get("ceiling", client).map_or("-".to_string(), |c| {
            format!("{:.0}/{:.0}", c.put_4k, c.get_4k)
        });
        println!(
            "{:<16} {:<28} {:>12.0} {:>12.0} {:>14.0} {:>16.0} {:>20}",
            server, client, f.put_4k, f.get_4k, f.upload_mibs, f.download_mibs, ceiling
        );
    }
    for (name, c) in [
        ("pressoir", "boto3, 1 thread"),
        ("pressoir", "Rust object_store, 16 conns"),
        ("pressoir-nosync", "boto3, 1 thread"),
        ("pressoir-nosync", "Rust object_store, 16 conns"),
    ] {
        if let (Some(p), Some(m)) = (get(name, c), get("moto", c)) {
            println!(
                "{name} / moto ({c}): PUT {:.1}x  GET {:.1}x  upload {:.1}x  download {:.1}x",
                p.put_4k / m.put_4k,
                p.get_4k / m.get_4k,
                p.upload_mibs / m.upload_mibs,
                p.download_mibs / m.download_mibs
            );
        }
    }
    for c in ["boto3, 1 thread", "Rust object_store, 16 conns"] {
        if let (Some(p), Some(m)) = (get("ceiling", c), get("moto", c)) {
            println!(
                "client ceiling / moto ({c}): PUT {:.1}x  GET {:.1}x (the most any server can reach with this client)",
                p.put_4k / m.put_4k,
                p.get_4k / m.get_4k,
            );
        }
    }
    println!(
        "({mib} MiB objects, {seconds} s per small-object figure; `pressoir` fsyncs each object and its \
         directory (shared by concurrent writers) before answering, `pressoir-nosync` does not, \
         moto keeps objects in memory; the client ceiling is against a null server in this process; \
         loopback, {} cores, load average {})",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split(' ')
            .next()
            .unwrap_or("?")
    );
}
