//! Press's benchmark (not a test): prints figures for the targets, with every limit
//! lifted, beside a hyper hello-world measured in the same run, on SQLite and (when
//! `PRESSOIR_TEST_POSTGRES_URL` is set) on PostgreSQL. All traffic goes to 127.0.0.1.
//!
//! `cargo bench -p pressoir-press --bench press`. Env: `PRESS_BENCH_SECS` (each load's length),
//! `PRESS_BENCH_QUICK` (only the latency and 1,000-site runs), `PRESS_BENCH_ONLY_GET` (only
//! `site.get`, for profiling).

use pressoir_bench::{Spec, Stop, hello, load, stats};
use pressoir_core::{RateSpec, Secret, Shutdown};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

const ADMIN_PW: &str = "bench-admin-password";
const AGENT_PW: &str = "bench-agent-password-0123456789";

fn secs() -> Duration {
    let s = std::env::var("PRESS_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5.0);
    Duration::from_secs_f64(s)
}

struct Press {
    addr: SocketAddr,
    http: reqwest::Client,
    token: String,
    shutdown: Shutdown,
}

impl Press {
    async fn call(&self, name: &str, body: Value) -> Value {
        let r = self
            .http
            .post(format!("http://{}/api/method/{name}", self.addr))
            .header("Authorization", &self.token)
            .json(&body)
            .send()
            .await
            .expect("press answers");
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{name}: {status} {v}");
        v
    }

    async fn status(&self, site: &str) -> String {
        let v = self
            .call("press.api.site.get", json!({ "name": site }))
            .await;
        v["message"]["status"].as_str().unwrap_or("").to_string()
    }
}

async fn start(dir: &std::path::Path, database_url: String, schema: &str) -> Press {
    start_with(dir, database_url, schema, RateSpec::off()).await
}

async fn start_with(
    dir: &std::path::Path,
    database_url: String,
    schema: &str,
    agent_rate: RateSpec,
) -> Press {
    let shutdown = Shutdown::new();
    let agent_l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let press_l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let agent_addr = agent_l.local_addr().unwrap();
    let addr = press_l.local_addr().unwrap();

    let mut agent = pressoir_agent::Config::new(dir.join("agent"), Secret::new(AGENT_PW));
    agent.rate_limit = agent_rate;
    agent.press_url = Some(format!("http://{addr}"));
    // The agent on its own runtime, whose threads are named `agent`, so the CPU each side
    // spends shows apart (see `cpu_by_thread`).
    let sd = shutdown.clone();
    let agent_l = agent_l.into_std().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("agent")
            .thread_keep_alive(Duration::from_secs(3600))
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = TcpListener::from_std(agent_l).unwrap();
            pressoir_agent::run(agent, l, sd).await.expect("agent runs")
        })
    });

    let mut cfg = pressoir_press::Config::new(database_url, Secret::new(ADMIN_PW));
    cfg.db_schema = schema.to_string();
    cfg.rate_limit = RateSpec::off();
    cfg.agent_rate_limit = agent_rate;
    cfg.max_connections = 8;
    cfg.servers = vec![pressoir_press::ServerSeed::new(
        "app-server-1",
        &format!("http://{agent_addr}"),
        Secret::new(AGENT_PW),
    )];
    let sd = shutdown.clone();
    tokio::spawn(async move {
        pressoir_press::run(cfg, press_l, sd)
            .await
            .expect("press runs")
    });

    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = http
            .get(format!("http://{addr}/api/method/ping"))
            .send()
            .await
            && r.status().is_success()
        {
            break;
        }
        assert!(Instant::now() < deadline, "press did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let login: Value = http
        .post(format!("http://{addr}/api/method/login"))
        .json(&json!({"usr": "Administrator", "pwd": ADMIN_PW}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(login["message"], "Logged In");
    // An API key for the Administrator (a fresh login gives the session that creates it).
    let token = pressoir_bench::press::api_key(&http, addr, "Administrator", ADMIN_PW).await;
    Press {
        addr,
        http,
        token,
        shutdown,
    }
}

async fn bench_backend(label: &str, database_url: String, schema: &str, hello_rps: f64) {
    let dir = tempfile::tempdir().unwrap();
    let p = start(dir.path(), database_url.clone(), schema).await;
    println!("== Press on {label}");

    if std::env::var("PRESS_BENCH_ONLY_GET").is_ok() {
        p.call(
            "press.api.site.new",
            json!({"site": {"name": "bulk00001", "apps": ["frappe"], "plan": "Starter"}}),
        )
        .await;
        let r = load::run(
            Spec::get(p.addr, "/api/method/press.api.site.get?name=bulk00001")
                .header("Authorization", &p.token)
                .connections(64)
                .stop(Stop::Duration(secs())),
        )
        .await;
        println!("site.get (API key): {}", r.line());
        p.shutdown.trigger();
        return;
    }
    // site.new → Active, one at a time.
    let mut lat = Vec::new();
    for i in 0..50 {
        let t = Instant::now();
        let v = p.call("press.api.site.new", json!({"site": {"name": format!("lat{i:04}"), "apps": ["frappe"], "plan": "Starter"}})).await;
        let site = v["message"]["site"].as_str().unwrap().to_string();
        while p.status(&site).await != "Active" {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        lat.push(t.elapsed());
    }
    lat.sort();
    println!(
        "site.new -> Active (local driver, 50 one at a time): p50 {}, p99 {}   [target p50 <= 100 ms]",
        stats::ms(stats::percentile(&lat, 50.0)),
        stats::ms(stats::percentile(&lat, 99.0))
    );

    // 1,000 sites created and Active.
    let cpu_before = cpu_by_thread();
    let t = Instant::now();
    let names: Vec<String> = (0..1000).map(|i| format!("bulk{i:05}")).collect();
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(16));
    let calls = names.iter().map(|n| {
        let sem = sem.clone();
        let p = &p;
        async move {
            let _permit = sem.acquire().await.unwrap();
            p.call(
                "press.api.site.new",
                json!({"site": {"name": n, "apps": ["frappe"], "plan": "Starter"}}),
            )
            .await;
        }
    });
    futures::future::join_all(calls).await;
    let accepted = t.elapsed();
    loop {
        let v = p
            .call("press.api.site.list", json!({"status": "Active"}))
            .await;
        if v["message"].as_array().map(|a| a.len()).unwrap_or(0) >= 1050 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(300),
            "1,000 sites did not all become Active"
        );
        // Each look reads a 1,000-site list: look rarely, so the watcher does not slow the work.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "1,000 sites created and Active: {:.2} s (all accepted after {:.2} s)   [target <= 30 s]",
        t.elapsed().as_secs_f64(),
        accepted.as_secs_f64()
    );
    let cpu_after = cpu_by_thread();
    let spent = |k: &str| {
        cpu_after.get(k).copied().unwrap_or(0.0) - cpu_before.get(k).copied().unwrap_or(0.0)
    };
    println!(
        "  CPU meanwhile: Press (with the bench's client) {:.2} s, agent {:.2} s, SQLite workers (both sides) {:.2} s, other threads {:.2} s; PostgreSQL's own processes not counted",
        spent("press"),
        spent("agent"),
        spent("sqlite"),
        spent("other")
    );
    // Where the time went: the agent's own start and end times against Press's bookkeeping.
    if let Ok(db) = pressoir_core::db::Db::connect(&database_url, schema, 1).await {
        let row: Result<(i64, i64, i64, i64), _> = sqlx::query_as(
            "SELECT MIN(created), MAX(started), MAX(ended), MAX(modified) FROM jobs WHERE site_name LIKE 'bulk%'",
        )
        .fetch_one(&db.pool)
        .await;
        if let Ok((c, s, e, m)) = row {
            println!(
                "  of which: last job started by the agent at +{:.2} s, last ended at +{:.2} s, last applied by Press at +{:.2} s",
                (s - c) as f64 / 1000.0,
                (e - c) as f64 / 1000.0,
                (m - c) as f64 / 1000.0
            );
        }
    }
    if std::env::var("PRESS_BENCH_QUICK").is_ok() {
        p.shutdown.trigger();
        return;
    }

    // site.list for a team with 1,000+ sites.
    let r = load::run(
        Spec::get(p.addr, "/api/method/press.api.site.list")
            .header("Authorization", &p.token)
            .connections(16)
            .stop(Stop::Duration(secs())),
    )
    .await;
    println!(
        "site.list (1,050 sites, API key): {}   [target >= 2,000 req/s]",
        r.line()
    );

    // site.get with API-key auth.
    let r = load::run(
        Spec::get(p.addr, "/api/method/press.api.site.get?name=bulk00001")
            .header("Authorization", &p.token)
            .connections(64)
            .stop(Stop::Duration(secs())),
    )
    .await;
    println!(
        "site.get (API key): {}   [target >= 15,000 req/s; {:.0}% of hello-world]",
        r.line(),
        100.0 * r.rps / hello_rps
    );
    let r = load::run(
        Spec::get(p.addr, "/api/method/ping")
            .connections(64)
            .stop(Stop::Duration(secs())),
    )
    .await;
    println!("ping (no auth): {}", r.line());
    p.shutdown.trigger();
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// CPU seconds (user + system) of this process's live threads, by who runs on them: `press`
/// (the main runtime: Press and the bench's client), `agent` (the agent's runtime), `sqlite`
/// (sqlx's SQLite workers, Press's and the agent's alike) and `other`. Linux only; empty
/// elsewhere.
fn cpu_by_thread() -> std::collections::HashMap<&'static str, f64> {
    let mut m = std::collections::HashMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return m;
    };
    for t in tasks.filter_map(|t| t.ok()) {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
            continue;
        };
        // Fields after the `(comm)`: state is the 3rd, utime and stime the 14th and 15th.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
            + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        let who = if comm.starts_with("agent") {
            "agent"
        } else if comm.starts_with("press") {
            "press"
        } else if comm.starts_with("sqlx-sqlite") {
            "sqlite"
        } else {
            "other"
        };
        // Linux counts in clock ticks of 1/100 s (USER_HZ).
        *m.entry(who).or_insert(0.0) += ticks / 100.0;
    }
    m
}

/// The burst: 200 site.new against the agent's default 50/min, Press's limit lifted.
async fn burst_within_the_agents_limit() {
    let dir = tempfile::tempdir().unwrap();
    let url = pressoir_core::db::sqlite_url(&dir.path().join("press.sqlite"));
    let p = start_with(
        dir.path(),
        url,
        "press",
        RateSpec::per(50, Duration::from_secs(60)),
    )
    .await;
    let t = Instant::now();
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(16));
    let calls = (0..200).map(|i| {
        let sem = sem.clone();
        let p = &p;
        async move {
            let _permit = sem.acquire().await.unwrap();
            p.call("press.api.site.new", json!({"site": {"name": format!("burst{i:04}"), "apps": ["frappe"], "plan": "Starter"}})).await;
        }
    });
    futures::future::join_all(calls).await;
    loop {
        let v = p
            .call("press.api.site.list", json!({"status": "Active"}))
            .await;
        let n = v["message"].as_array().map(|a| a.len()).unwrap_or(0);
        if n >= 200 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(300),
            "only {n} of 200 Active"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sites = std::fs::read_dir(dir.path().join("agent/benches/bench-0001/sites"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with("burst"))
                .count()
        })
        .unwrap_or(0);
    println!(
        "burst: 200 site.new against the agent's 50/min -> all Active in {:.2} s ({} site directories)",
        t.elapsed().as_secs_f64(),
        sites
    );
    p.shutdown.trigger();
    tokio::time::sleep(Duration::from_millis(300)).await;
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .thread_name("press")
        .thread_keep_alive(Duration::from_secs(3600))
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let hello_rps = hello::baseline(secs()).await;

        if std::env::var("PRESS_BENCH_QUICK").is_err() {
            burst_within_the_agents_limit().await;
        }
        let dir = tempfile::tempdir().unwrap();
        let url = pressoir_core::db::sqlite_url(&dir.path().join("press.sqlite"));
        bench_backend("SQLite", url, "press", hello_rps).await;
        match pressoir_core::db::test_postgres_url() {
            Some(url) => {
                let schema = format!("bench_{}", std::process::id());
                bench_backend("PostgreSQL", url.clone(), &schema, hello_rps).await;
                if let Ok(db) = pressoir_core::db::Db::connect(&url, "public", 1).await {
                    let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                        .execute(&db.pool)
                        .await;
                }
            }
            None => println!("PostgreSQL SKIPPED (set PRESSOIR_TEST_POSTGRES_URL)"),
        }
    });
}
