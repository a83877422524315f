//! The agent's benchmark: `cargo bench -p pressoir-agent --bench agent`.
//!
//! Runs the agent (rate limit off, local driver, SQLite store in a temp dir) and a plain
//! hyper hello-world server in the same process on 127.0.0.1, and prints: ping requests/s
//! over 64 keep-alive connections beside the hello-world figure, job submissions/s,
//! submission-to-Success latency of "Ping Job", and how long 1,000 "New Site" jobs take.
//! `BENCH_SECS` sets the length of each load run (default 5), `BENCH_WORKERS` the agent's
//! workers (default: the agent's own default), `BENCH_ONLY=sites` runs the 1,000 sites alone, `BENCH_ONLY=latency` the Ping Job latency.

use bytes::Bytes;
use http_body_util::Full;
use pressoir_agent::Config;
use pressoir_bench::load::{self, Spec, Stop};
use pressoir_bench::stats::{Summary, ms};
use pressoir_core::{RateSpec, Secret, Shutdown};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PASSWORD: &str = "bench-agent-password-0123456789abcdef";

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(bench());
}

async fn bench() {
    let secs: u64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let run_for = Stop::Duration(Duration::from_secs(secs));
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::new(dir.path().join("agent"), Secret::new(PASSWORD));
    config.rate_limit = RateSpec::off();
    if let Some(n) = std::env::var("BENCH_WORKERS")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        config.workers = n;
    }
    let workers = config.workers;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = Shutdown::new();
    let s = shutdown.clone();
    let agent = tokio::spawn(async move { pressoir_agent::run(config, listener, s).await });
    let hello = pressoir_bench::hello::spawn().await;
    let base = format!("http://{addr}");
    let client = reqwest::Client::new();
    wait_ready(&client, &base).await;
    let auth = format!("Bearer {PASSWORD}");

    println!(
        "pressoir-agent benchmark: {cores} cores, rate limit off, local driver, {workers} workers, {secs}s per load run"
    );
    println!();

    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    if only.is_empty() {
        load_figures(hello, addr, &auth, run_for, &client, &base).await;
    }
    if only.is_empty() || only == "latency" {
        latency_figure(&client, &base, &auth).await;
    }
    if only.is_empty() || only == "sites" {
        sites_figure(&client, &base, &auth).await;
    }

    shutdown.trigger();
    let _ = agent.await;
}

async fn load_figures(
    hello: std::net::SocketAddr,
    addr: std::net::SocketAddr,
    auth: &str,
    run_for: Stop,
    client: &reqwest::Client,
    base: &str,
) {
    let auth = auth.to_string();
    // Warm both servers up.
    load::run(Spec::get(hello, "/").stop(Stop::Duration(Duration::from_millis(500)))).await;
    load::run(
        Spec::get(addr, "/agent/ping")
            .header("authorization", &auth)
            .stop(Stop::Duration(Duration::from_millis(500))),
    )
    .await;

    let h = load::run(Spec::get(hello, "/").connections(64).stop(run_for)).await;
    let p = load::run(
        Spec::get(addr, "/agent/ping")
            .header("authorization", &auth)
            .connections(64)
            .stop(run_for),
    )
    .await;
    assert_eq!(p.non_2xx + p.errors, 0, "ping failed: {}", p.line());
    println!(
        "{:<44} {:>9.0} req/s   p50 {:>10}   p99 {:>10}",
        "hello-world (plain hyper), 64 connections",
        h.rps,
        ms(h.p50()),
        ms(h.p99())
    );
    println!(
        "{:<44} {:>9.0} req/s   p50 {:>10}   p99 {:>10}   = {:.0}% of hello-world (target >= 40000 and >= 50%)",
        "GET /agent/ping, 64 connections",
        p.rps,
        ms(p.p50()),
        ms(p.p99()),
        100.0 * p.rps / h.rps
    );

    // Submissions: one job per request (each with its own X-Agent-Job-Id), then batches of 100.
    let auth2 = auth.clone();
    let one = Spec::get(addr, "/agent/job")
        .connections(16)
        .stop(run_for)
        .make(Arc::new(move |n| {
            http::Request::post("/agent/job")
                .header("authorization", &auth2)
                .header("content-type", "application/json")
                .header("x-agent-job-id", format!("bench-one-{n}"))
                .body(Full::new(Bytes::from_static(
                    br#"{"job_type":"Ping Job","data":{}}"#,
                )))
                .expect("request")
        }));
    let r = load::run(one).await;
    assert_eq!(r.non_2xx + r.errors, 0, "submissions failed: {}", r.line());
    println!(
        "{:<44} {:>9.0} jobs/s    p50 {:>10}   p99 {:>10}",
        "POST /agent/job (Ping Job), 16 connections",
        r.rps,
        ms(r.p50()),
        ms(r.p99())
    );
    drain(client, base).await;
    let auth3 = auth.clone();
    let batch = Spec::get(addr, "/agent/jobs").connections(4).stop(run_for).make(Arc::new(move |n| {
        let jobs: Vec<Value> = (0..100)
            .map(|i| json!({"agent_job_id": format!("bench-batch-{n}-{i}"), "job_type": "Ping Job", "data": {}}))
            .collect();
        http::Request::post("/agent/jobs")
            .header("authorization", &auth3)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(json!({"jobs": jobs}).to_string())))
            .expect("request")
    }));
    let r = load::run(batch).await;
    assert_eq!(r.non_2xx + r.errors, 0, "batches failed: {}", r.line());
    println!(
        "{:<44} {:>9.0} jobs/s    p50 {:>10}   p99 {:>10}   (per batch request)",
        "POST /agent/jobs (100 Ping Jobs), 4 conns",
        r.rps * 100.0,
        ms(r.p50()),
        ms(r.p99())
    );
    drain(client, base).await;
}

/// Submission-to-Success latency of one Ping Job at a time, as a client polling sees it.
async fn latency_figure(client: &reqwest::Client, base: &str, auth: &str) {
    let mut seen = Vec::new();
    let mut recorded = Vec::new();
    for _ in 0..500 {
        let t = Instant::now();
        let s: Value = client
            .post(format!("{base}/agent/job"))
            .header("authorization", auth)
            .json(&json!({"job_type": "Ping Job", "data": {}}))
            .send()
            .await
            .expect("submit")
            .json()
            .await
            .expect("json");
        let id = s["id"].as_str().expect("id").to_string();
        loop {
            let j: Value = client
                .get(format!("{base}/agent/job/{id}"))
                .header("authorization", auth)
                .send()
                .await
                .expect("get")
                .json()
                .await
                .expect("json");
            if j["status"] == "Success" {
                seen.push(t.elapsed());
                let c =
                    pressoir_core::clock::parse_rfc3339_ms(j["created_at"].as_str().unwrap_or(""))
                        .unwrap_or(0);
                let e =
                    pressoir_core::clock::parse_rfc3339_ms(j["ended_at"].as_str().unwrap_or(""))
                        .unwrap_or(0);
                recorded.push(Duration::from_millis((e - c).max(0) as u64));
                break;
            }
            assert_ne!(j["status"], "Failure", "{j}");
        }
    }
    let s = Summary::of(&mut seen);
    let rec = Summary::of(&mut recorded);
    println!(
        "{:<44} p50 {:>10}   p99 {:>10}   (target p50 <= 2 ms; the job's own created->ended: p50 {} p99 {})",
        "Ping Job submit -> Success (client polling)",
        ms(s.p50),
        ms(s.p99),
        ms(rec.p50),
        ms(rec.p99)
    );
}

async fn sites_figure(client: &reqwest::Client, base: &str, auth: &str) {
    // 1,000 New Site jobs: ten batches of 100, timed until the last one ends.
    let cpu0 = process_cpu();
    let t = Instant::now();
    let mut ids = Vec::new();
    for b in 0..10 {
        let jobs: Vec<Value> = (0..100)
            .map(|i| {
                json!({"agent_job_id": format!("bench-site-{b}-{i}"), "job_type": "New Site", "data": {
                    "name": format!("site{b}-{i}.bench.localhost"), "apps": ["frappe", "erpnext", "hrms"],
                    "admin_password": "bench-admin-password", "config": {"developer_mode": 0}}})
            })
            .collect();
        let v: Value = client
            .post(format!("{base}/agent/jobs"))
            .header("authorization", auth)
            .json(&json!({"jobs": jobs}))
            .send()
            .await
            .expect("batch")
            .json()
            .await
            .expect("json");
        ids.extend(
            v["jobs"]
                .as_array()
                .expect("jobs")
                .iter()
                .map(|j| j["id"].as_str().unwrap_or("").to_string()),
        );
    }
    let submitted = t.elapsed();
    drain(client, base).await;
    let total = t.elapsed();
    let cpu = process_cpu().saturating_sub(cpu0);
    let mut failures = 0;
    let mut per_step: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    for chunk in ids.chunks(100) {
        let v: Value = client
            .get(format!("{base}/agent/jobs?ids={}", chunk.join(",")))
            .header("authorization", auth)
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("json");
        let jobs = v["jobs"].as_array().expect("jobs");
        failures += jobs.iter().filter(|j| j["status"] != "Success").count();
        for step in jobs
            .iter()
            .flat_map(|j| j["steps"].as_array().cloned().unwrap_or_default())
        {
            let e = per_step
                .entry(step["name"].as_str().unwrap_or("").to_string())
                .or_default();
            e.0 += step["duration_ms"].as_u64().unwrap_or(0);
            e.1 += 1;
        }
    }
    println!(
        "{:<44} {:>9.2} s         ({:.0} jobs/s; submitted in {}; {} not Success) (target <= 10 s)",
        "1,000 New Site jobs, submit -> all ended",
        total.as_secs_f64(),
        1000.0 / total.as_secs_f64(),
        ms(submitted),
        failures
    );

    let steps: Vec<String> = per_step
        .iter()
        .map(|(name, (total, n))| format!("{name} {:.1} ms", *total as f64 / (*n).max(1) as f64))
        .collect();
    println!(
        "{:<44} {}",
        "  mean step durations (with parallel workers)",
        steps.join(", ")
    );

    println!(
        "{:<44} {:.1} s of CPU in {:.1} s (the agent and this client got {:.2} of the {} cores)",
        "  process CPU during the 1,000 sites",
        cpu.as_secs_f64(),
        total.as_secs_f64(),
        cpu.as_secs_f64() / total.as_secs_f64(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );

    // The floor set by the Set Administrator Password step: one argon2id hash per site, in
    // reused memory as the agent does, on every core at once as during the 1,000 sites.
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as u32;
    use pressoir_agent::driver::local::{password_hasher, password_hasher_with};
    const PW: &[u8] = b"bench-admin-password";
    const SALT: &[u8] = b"bench-salt-16byt";
    let argon2_rust = |mut hasher: argon2_rust::Hasher| {
        move || {
            let mut out = [0u8; 32];
            let _ = hasher.hash_into(PW, SALT, &mut out);
        }
    };
    let rustcrypto = || {
        let params = argon2::Params::new(7 * 1024, 5, 1, None).expect("valid parameters");
        let mut memory = vec![argon2::Block::default(); params.block_count()];
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        move || {
            let mut out = [0u8; 32];
            let _ = argon.hash_password_into_with_memory(PW, SALT, &mut out, &mut memory[..]);
        }
    };
    let figures = [
        (
            "  argon2id as the agent (m=7 MiB, t=5)",
            hash_cpu(|| argon2_rust(password_hasher()), cores).await,
        ),
        (
            "  the same with the RustCrypto argon2 crate",
            hash_cpu(rustcrypto, cores).await,
        ),
        (
            "  argon2id m=19 MiB, t=2 (for comparison)",
            hash_cpu(|| argon2_rust(password_hasher_with(19 * 1024, 2)), cores).await,
        ),
    ];
    for (label, per_hash) in figures {
        println!(
            "{label:<44} {} of CPU per hash with {cores} hashing at once: 1,000 sites cost {:.1} s of CPU for hashing alone ({:.1} s on {cores} idle cores)",
            ms(per_hash),
            (per_hash * 1000).as_secs_f64(),
            (per_hash * 1000 / cores).as_secs_f64()
        );
    }
}

/// CPU time per hash of the closures `make` returns, `threads` of them hashing at once (each
/// with its own memory, as the agent hashes).
async fn hash_cpu<H: FnMut() + Send + 'static>(make: impl Fn() -> H, threads: u32) -> Duration {
    const N: u32 = 20;
    let tasks: Vec<_> = (0..threads)
        .map(|_| {
            let mut hash = make();
            tokio::task::spawn_blocking(move || {
                hash();
                let c = thread_cpu();
                for _ in 0..N {
                    hash();
                }
                thread_cpu().saturating_sub(c)
            })
        })
        .collect();
    let mut total = Duration::ZERO;
    for t in tasks {
        total += t.await.unwrap_or_default();
    }
    total / (N * threads)
}

/// User + system CPU time of this process so far (Linux `/proc/self/stat`; zero elsewhere).
fn process_cpu() -> Duration {
    cpu_of("/proc/self/stat")
}

/// CPU time of the calling thread so far, in nanoseconds (`/proc/thread-self/schedstat`).
fn thread_cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .map(Duration::from_nanos)
        .unwrap_or_default()
}

fn cpu_of(path: &str) -> Duration {
    let Ok(stat) = std::fs::read_to_string(path) else {
        return Duration::ZERO;
    };
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    let clock_ticks = 100; // USER_HZ on Linux
    Duration::from_millis((ticks(11) + ticks(12)) * 1000 / clock_ticks)
}

async fn wait_ready(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.get(format!("{base}/ping")).send().await.is_err() {
        assert!(Instant::now() < deadline, "the agent did not start");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until no job is Pending or Running.
async fn drain(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let mut busy = false;
        for status in ["Pending", "Running"] {
            let v: Value = client
                .get(format!("{base}/agent/jobs?status={status}&limit=1"))
                .bearer_auth(PASSWORD)
                .send()
                .await
                .expect("list")
                .json()
                .await
                .expect("json");
            busy |= !v["jobs"].as_array().is_none_or(|a| a.is_empty());
        }
        if !busy {
            return;
        }
        assert!(Instant::now() < deadline, "jobs did not drain");
        // Often enough to time the 1,000 sites to a few ms, rarely enough not to load the agent.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
