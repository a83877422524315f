//! Bearer-token validations through Press's own request path (a binary that prints figures,
//! not a test): a real Press router on SQLite with the OIDC verifier of `src/oidc.rs`, beside
//! the embedded identity service that issues the token, both in a child process (this binary,
//! re-executed) so their CPU time is their own. Over 64 keep-alive connections it calls
//! `press.api.account.me` with the `press` service account's Bearer token, then with an API
//! key of the same user (Administrator), and prints both beside a hyper hello-world measured
//! in the same run, with the server's CPU per request.
//!
//! `cargo bench -p pressoir --bench bearer`. Knobs: BEARER_BENCH_SECS (default 5).

#[allow(dead_code)]
#[path = "../src/oidc.rs"]
mod oidc;

use pressoir_bench::hello;
use pressoir_bench::load::{self, Spec, Stop};
use pressoir_core::{RateSpec, Secret, Shutdown};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ROLE: &str = "PRESSOIR_BEARER_BENCH_ROLE";
const CLIENT_SECRET: &str = "bench-client-secret-0123456789abcdef";
const ADMIN_PW: &str = "bench-admin-password";
const METHOD: &str = "/api/method/press.api.account.me";

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if std::env::var(ROLE).as_deref() == Ok("server") {
        rt.block_on(server());
    } else {
        rt.block_on(bench());
    }
}

/// The child: identity and Press, each on its own 127.0.0.1 port, SQLite, rate limits off.
async fn server() {
    let dir = tempfile::tempdir().unwrap();
    let shutdown = Shutdown::new();
    let id_l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let id_addr = id_l.local_addr().unwrap();
    let url = pressoir_core::db::sqlite_url(&dir.path().join("identity.sqlite"));
    let mut id = pressoir_identity::Config::new(
        &url,
        &format!("http://{id_addr}"),
        Secret::new(CLIENT_SECRET),
        Secret::new(ADMIN_PW),
    );
    id.token_rate_limit = RateSpec::off();
    let issuer = id.issuer();
    let sd = shutdown.clone();
    tokio::spawn(async move { pressoir_identity::run(id, id_l, sd).await.unwrap() });

    let press_l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let press_addr = press_l.local_addr().unwrap();
    let url = pressoir_core::db::sqlite_url(&dir.path().join("press.sqlite"));
    let mut cfg = pressoir_press::Config::new(url, Secret::new(ADMIN_PW));
    cfg.rate_limit = RateSpec::off();
    cfg.bearer = Some(oidc::OidcSettings::new(&issuer, "press").bearer());
    let sd = shutdown.clone();
    tokio::spawn(async move { pressoir_press::run(cfg, press_l, sd).await.unwrap() });
    println!("READY {} {}", id_addr.port(), press_addr.port());
    shutdown.wait().await;
}

/// utime + stime of a process, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn secs() -> Duration {
    let s = std::env::var("BEARER_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5.0);
    Duration::from_secs_f64(s)
}

/// One load run of `METHOD` with `auth`; prints the line and the server's CPU per request.
async fn measure(label: &str, addr: SocketAddr, pid: u32, auth: &str) -> f64 {
    let spec = |stop| {
        Spec::get(addr, METHOD)
            .header("Authorization", auth)
            .connections(64)
            .stop(stop)
    };
    load::run(spec(Stop::Duration(Duration::from_secs(1)))).await;
    let (cpu0, me0) = (cpu_secs(pid), cpu_secs(std::process::id()));
    let r = load::run(spec(Stop::Duration(secs()))).await;
    let cpu = cpu_secs(pid) - cpu0;
    let me = cpu_secs(std::process::id()) - me0;
    assert!(r.ok > 0 && r.non_2xx == 0, "{label} failed: {}", r.line());
    let wall = r.elapsed.as_secs_f64();
    println!(
        "{label}: {}; server {:.0} µs CPU/request ({:.2} cores), load generator {:.2} cores",
        r.line(),
        cpu * 1e6 / r.ok as f64,
        cpu / wall,
        me / wall
    );
    r.ok as f64 / wall
}

async fn bench() {
    let hello_rps = hello::baseline(secs()).await;

    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(ROLE, "server")
        .env("RUST_LOG", "off")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ports: Vec<u16> = loop {
        let line = lines.next().expect("a READY line").unwrap();
        if let Some(p) = line.strip_prefix("READY ") {
            break p.split_whitespace().map(|p| p.parse().unwrap()).collect();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let (id_port, press_port) = (ports[0], ports[1]);
    let press: SocketAddr = ([127, 0, 0, 1], press_port).into();
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while http
        .get(format!("http://{press}/api/method/ping"))
        .send()
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "press did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The `press` service account's token: Press's system client, Administrator.
    let t: Value = http
        .post(format!(
            "http://127.0.0.1:{id_port}/realms/frappe-cloud/protocol/openid-connect/token"
        ))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "press"),
            ("client_secret", CLIENT_SECRET),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let bearer = format!("Bearer {}", t["access_token"].as_str().expect("a token"));
    // An API key of the same user.
    let key = pressoir_bench::press::api_key(&http, press, "Administrator", ADMIN_PW).await;

    println!("== press.api.account.me over 64 keep-alive connections, Press on SQLite");
    let b = measure("Bearer (RS256, identity's token)", press, pid, &bearer).await;
    let k = measure("API key (token key:secret)", press, pid, &key).await;
    println!(
        "Bearer {b:.0} req/s = {:.2}x the API key's {k:.0} req/s, {:.0}% of hello-world's {hello_rps:.0}",
        b / k,
        100.0 * b / hello_rps
    );
    let _ = child.kill();
    let _ = child.wait();
}
