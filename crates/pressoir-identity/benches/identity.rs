//! Identity benchmark (a binary that prints figures, not a test):
//! - client_credentials grants/s, and grants per CPU-second of the server process (from its
//!   own /proc accounting), for RS256 and ES256, over keep-alive connections;
//! - the same for node `oidc-provider` (installed from npm under target/ at bench time, with a
//!   config written here), side by side in the same run;
//! - bearer-token validations/s through `BearerVerifier` (what Press calls per request; one
//!   token, so after its first check these are the remembered-token path);
//! - `openssl speed rsa2048` sign/s from the same run, for scale.
//!
//! The server runs in a child process (this same binary, re-executed) so its CPU time is its
//! own. All traffic goes to 127.0.0.1.
//!
//! Knobs: IDENTITY_BENCH_SECS (default 5), IDENTITY_BENCH_CONNS (default 32),
//! IDENTITY_BENCH_ROUNDS (default 2), IDENTITY_BENCH_SKIP_NODE=1 to skip the peer.

use pressoir_bench::load::{self, Spec, Stop};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ROLE: &str = "PRESSOIR_IDENTITY_BENCH_ROLE";
const SECRET: &str = "bench-secret-0123456789abcdefghijkl";
const OIDC_PROVIDER: &str = "oidc-provider@8.8.1";

fn main() {
    if std::env::var(ROLE).as_deref() == Ok("server") {
        server();
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(bench());
}

/// The child: the identity service on 127.0.0.1:0 over SQLite, rate limit off.
fn server() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use pressoir_identity::admin::{self, NewClient};
        let dir = tempfile::tempdir().unwrap();
        let url = pressoir_core::db::sqlite_url(&dir.path().join("identity.sqlite"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut cfg = pressoir_identity::Config::new(
            &url,
            &format!("http://{addr}"),
            pressoir_core::Secret::new(SECRET),
            pressoir_core::Secret::new("bench-admin-password"),
        );
        cfg.token_rate_limit = pressoir_core::RateSpec::off();
        let shutdown = pressoir_core::Shutdown::new();
        let (router, svc) = pressoir_identity::app_with_service(cfg, shutdown.clone())
            .await
            .unwrap();
        for (id, alg) in [
            ("bench-rs", pressoir_identity::crypto::Alg::RS256),
            ("bench-es", pressoir_identity::crypto::Alg::ES256),
        ] {
            let mut n = NewClient::new("frappe-cloud", id);
            n.secret = Some(pressoir_core::Secret::new(SECRET));
            n.service_accounts = true;
            n.alg = alg;
            n.audience = vec!["press".into()];
            admin::create_client(&svc.store, &n).await.unwrap();
        }
        svc.invalidate("frappe-cloud");
        println!("READY {}", addr.port());
        pressoir_core::serve(listener, router, shutdown)
            .await
            .unwrap();
    });
}

/// utime + stime of a process, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    stat_cpu_secs(&format!("/proc/{pid}/stat"))
}

fn stat_cpu_secs(path: &str) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / clk_tck()
}

fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn wait_ready(child: &mut Child) -> u16 {
    let out = child.stdout.take().unwrap();
    let mut lines = BufReader::new(out).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(p) = line.strip_prefix("READY ") {
            // Keep draining the child's stdout so it never blocks on a full pipe.
            std::thread::spawn(move || for _ in lines {});
            return p.trim().parse().unwrap();
        }
    }
    panic!("the server exited before it was ready");
}

struct Figures {
    rps: f64,
    per_cpu: f64,
    cpu_share: f64,
}

/// Idle CPU-seconds of the whole machine so far (all cores), from /proc/stat.
fn machine_idle_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(cpu) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0.0;
    };
    let f: Vec<f64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    (f.get(3).copied().unwrap_or(0.0) + f.get(4).copied().unwrap_or(0.0)) / clk_tck()
}

async fn grants(
    addr: SocketAddr,
    pid: u32,
    path: &str,
    client: &str,
    secs: u64,
    conns: usize,
) -> Figures {
    let body = format!("grant_type=client_credentials&client_id={client}&client_secret={SECRET}");
    let spec = |stop| {
        Spec::get(addr, path)
            .method(http::Method::POST)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.clone())
            .connections(conns)
            .stop(stop)
    };
    // Warm up (connections, caches, JIT for node).
    load::run(spec(Stop::Duration(Duration::from_secs(1)))).await;
    let cpu0 = cpu_secs(pid);
    let me0 = cpu_secs(std::process::id());
    let idle0 = machine_idle_secs();
    let t0 = Instant::now();
    let r = load::run(spec(Stop::Duration(Duration::from_secs(secs)))).await;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_secs(pid) - cpu0;
    let me = cpu_secs(std::process::id()) - me0;
    let idle = machine_idle_secs() - idle0;
    println!("    {}", r.line());
    println!(
        "    load generator used {:.2} cores; the machine had {:.2} cores idle; everything else used {:.2}",
        me / wall,
        idle / wall,
        (std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1) as f64
            * wall
            - cpu
            - me
            - idle)
            .max(0.0)
            / wall
    );
    assert!(r.ok > 0 && r.non_2xx == 0, "grants failed: {}", r.line());
    Figures {
        rps: r.ok as f64 / r.elapsed.as_secs_f64(),
        per_cpu: r.ok as f64 / cpu.max(1e-9),
        cpu_share: cpu / wall,
    }
}

fn openssl_rsa2048() -> Option<f64> {
    let out = Command::new("openssl")
        .args(["speed", "-seconds", "3", "rsa2048"])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "rsa 2048 bits 0.000243s 0.000007s   4115.2 142857.1" (or "rsa  2048 bits ...")
    let line = text
        .lines()
        .find(|l| l.starts_with("rsa") && l.contains("2048 bits"))?;
    let nums: Vec<f64> = line
        .split_whitespace()
        .filter_map(|t| t.parse().ok())
        .collect();
    // The numbers are: 2048, sign time, verify time, sign/s, verify/s (times end in 's').
    nums.get(nums.len().checked_sub(2)?).copied()
}

/// In-process RS256 and ES256 JWT signatures per CPU-second of one thread (the signer's
/// ceiling, on the same axis as `openssl speed`, which divides by CPU time too).
fn sign_ceiling(alg: pressoir_identity::crypto::Alg) -> f64 {
    let (key, _) = pressoir_identity::crypto::SigningKey::generate(alg).unwrap();
    let claims =
        serde_json::json!({"sub": "x", "iss": "http://127.0.0.1/realms/frappe-cloud", "exp": 1});
    let cpu0 = stat_cpu_secs("/proc/thread-self/stat");
    let t0 = Instant::now();
    let mut n = 0u64;
    while t0.elapsed() < Duration::from_secs(3) {
        key.sign(&claims).unwrap();
        n += 1;
    }
    n as f64 / (stat_cpu_secs("/proc/thread-self/stat") - cpu0).max(1e-9)
}

async fn validations(addr: SocketAddr, secs: u64) -> f64 {
    use pressoir_identity::verify::{BearerVerifier, VerifierConfig};
    let issuer = format!("http://{addr}/realms/frappe-cloud");
    let http = reqwest::Client::new();
    let body: serde_json::Value = http
        .post(format!("{issuer}/protocol/openid-connect/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "bench-rs"),
            ("client_secret", SECRET),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = body["access_token"].as_str().unwrap().to_string();
    let v = std::sync::Arc::new(BearerVerifier::new(VerifierConfig::keycloak(
        &issuer, "press",
    )));
    v.verify(&token).await.unwrap();
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let v = v.clone();
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                for _ in 0..64 {
                    v.verify(&token).await.unwrap();
                }
                n += 64;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total as f64 / t0.elapsed().as_secs_f64()
}

const NODE_SERVER: &str = r#"
import Provider from 'oidc-provider';
import { generateKeyPairSync } from 'node:crypto';
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = { ...privateKey.export({ format: 'jwk' }), kid: 'bench', alg: 'RS256', use: 'sig' };
const provider = new Provider('http://127.0.0.1', {
  clients: [{ client_id: 'bench', client_secret: process.env.BENCH_SECRET, grant_types: ['client_credentials'],
              redirect_uris: [], response_types: [], token_endpoint_auth_method: 'client_secret_post' }],
  jwks: { keys: [jwk] },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => 'urn:press',
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({ scope: 'api', audience: 'press', accessTokenTTL: 300,
                                      accessTokenFormat: 'jwt', jwt: { sign: { alg: 'RS256' } } }),
    },
  },
});
const server = provider.listen(0, '127.0.0.1', () => console.log('READY ' + server.address().port));
"#;

/// Installs oidc-provider under target/identity-bench-node and starts it; None if npm or node
/// are missing or the install fails.
fn node_peer() -> Option<Child> {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/identity-bench-node");
    std::fs::create_dir_all(&dir).ok()?;
    if !dir.join("node_modules/oidc-provider").exists() {
        println!(
            "  installing {OIDC_PROVIDER} from npm into {}",
            dir.display()
        );
        std::fs::write(
            dir.join("package.json"),
            "{\"private\":true,\"type\":\"module\"}",
        )
        .ok()?;
        let ok = Command::new("npm")
            .args([
                "install",
                "--no-audit",
                "--no-fund",
                "--silent",
                OIDC_PROVIDER,
            ])
            .current_dir(&dir)
            .status()
            .ok()?
            .success();
        if !ok {
            return None;
        }
    }
    std::fs::write(dir.join("bench-server.mjs"), NODE_SERVER).ok()?;
    Command::new("node")
        .arg("bench-server.mjs")
        .current_dir(&dir)
        .env("NODE_ENV", "production")
        .env("BENCH_SECRET", SECRET)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()
}

async fn bench() {
    let secs: u64 = std::env::var("IDENTITY_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let conns: usize = std::env::var("IDENTITY_BENCH_CONNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(32);
    println!(
        "identity benchmark: {secs}s per run, {conns} keep-alive connections, {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );

    let ssl = openssl_rsa2048();
    match ssl {
        Some(s) => println!("openssl speed rsa2048: {s:.0} sign/s (one core)"),
        None => println!("openssl speed rsa2048: not available"),
    }
    let rs_ceiling = sign_ceiling(pressoir_identity::crypto::Alg::RS256);
    let es_ceiling = sign_ceiling(pressoir_identity::crypto::Alg::ES256);
    println!(
        "aws-lc JWT signer, one thread: RS256 {rs_ceiling:.0}/CPU-s, ES256 {es_ceiling:.0}/CPU-s"
    );

    let rounds: usize = std::env::var("IDENTITY_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .env(ROLE, "server")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let port = wait_ready(&mut child);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let path = "/realms/frappe-cloud/protocol/openid-connect/token";
    let mut node = if std::env::var("IDENTITY_BENCH_SKIP_NODE").is_ok() {
        None
    } else {
        let n = node_peer();
        if n.is_none() {
            println!("node {OIDC_PROVIDER}: could not be installed or started; peer skipped");
        }
        n
    };
    let node_addr: Option<SocketAddr> = node
        .as_mut()
        .map(|n| format!("127.0.0.1:{}", wait_ready(n)).parse().unwrap());

    // The machine is shared: alternate the two servers and keep each one's best round.
    let best = |a: Option<Figures>, b: Figures| match a {
        Some(a) if a.rps >= b.rps => Some(a),
        _ => Some(b),
    };
    let (mut rs, mut peer) = (None, None);
    for round in 1..=rounds {
        println!("round {round}: pressoir identity, client_credentials, RS256:");
        let f = grants(addr, child.id(), path, "bench-rs", secs, conns).await;
        println!(
            "    {:.0} grants/s, {:.0} grants per server CPU-second (server used {:.2} cores)",
            f.rps, f.per_cpu, f.cpu_share
        );
        rs = best(rs, f);
        if let (Some(n), Some(a)) = (&node, node_addr) {
            println!(
                "round {round}: node {OIDC_PROVIDER}, client_credentials, RS256 JWT access tokens:"
            );
            let f = grants(a, n.id(), "/token", "bench", secs, conns).await;
            println!(
                "    {:.0} grants/s, {:.0} grants per server CPU-second (server used {:.2} cores)",
                f.rps, f.per_cpu, f.cpu_share
            );
            peer = best(peer, f);
        }
    }
    let rs = rs.unwrap();
    println!("pressoir identity, client_credentials, ES256:");
    let es = grants(addr, child.id(), path, "bench-es", secs, conns).await;
    println!(
        "    {:.0} grants/s, {:.0} grants per server CPU-second (server used {:.2} cores)",
        es.rps, es.per_cpu, es.cpu_share
    );

    let vps = validations(addr, secs.min(3)).await;
    println!(
        "BearerVerifier (RS256, cached JWKS, one token, remembered after its first check, 2 tasks): {vps:.0} validations/s"
    );
    let _ = child.kill();
    let _ = child.wait();
    if let Some(mut n) = node {
        let _ = n.kill();
        let _ = n.wait();
    }
    let node_rps = peer.as_ref().map(|p| p.rps);

    println!("summary:");
    if let Some(s) = ssl {
        println!(
            "  RS256 grants per server CPU-second: {:.0} = {:.0}% of openssl's rsa2048 sign/s (target 3,500 and 85%)",
            rs.per_cpu,
            100.0 * rs.per_cpu / s
        );
    } else {
        println!(
            "  RS256 grants per server CPU-second: {:.0} (target 3,500)",
            rs.per_cpu
        );
    }
    println!(
        "  ES256 grants per server CPU-second: {:.0} (target 15,000)",
        es.per_cpu
    );
    if let Some(p) = &peer {
        println!(
            "  oidc-provider: {:.0} grants/s, {:.0} per CPU-second",
            p.rps, p.per_cpu
        );
    }
    if let Some(n) = node_rps {
        println!(
            "  RS256 grants/s vs oidc-provider: {:.2}x (target 1.5x)",
            rs.rps / n
        );
    }
    if let Some(p) = &peer {
        println!(
            "  RS256 grants per CPU-second vs oidc-provider: {:.2}x (what the servers would reach with the machine to themselves)",
            rs.per_cpu / p.per_cpu
        );
    }
}
