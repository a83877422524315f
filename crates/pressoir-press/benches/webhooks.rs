//! The webhooks benchmark (not a test): deliveries per second from Press's outbox to a local
//! receiver (an axum server on 127.0.0.1), and event-to-delivery latency (the event's
//! timestamp, taken in the transaction that records it, to its arrival) at a steady rate,
//! on SQLite and (when `PRESSOIR_TEST_POSTGRES_URL` is set) on PostgreSQL.
//!
//! `cargo bench -p pressoir-press --bench webhooks` (env `WEBHOOK_BENCH_EVENTS` sets the burst
//! size, default 20000; `WEBHOOK_BENCH_RATE` the steady rate per second, default 500).

use axum::extract::State;
use bytes::Bytes;
use pressoir_core::Shutdown;
use pressoir_core::clock::{now_ms, parse_rfc3339_ms};
use pressoir_press::webhooks::store::{self as wstore, Webhook};
use pressoir_press::webhooks::{WebhookConfig, deliver};
use serde_json::json;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Seen {
    ids: HashSet<String>,
    latencies_ms: Vec<i64>,
}

async fn hook(
    State(seen): State<Arc<Mutex<Seen>>>,
    headers: http::HeaderMap,
    body: Bytes,
) -> &'static str {
    let now = now_ms();
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let ts = v["timestamp"]
        .as_str()
        .and_then(parse_rfc3339_ms)
        .unwrap_or(now);
    let mut s = seen.lock().unwrap();
    if s.ids.insert(id) {
        s.latencies_ms.push(now - ts);
    }
    "ok"
}

fn env_num(name: &str, d: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(d)
}

fn pct(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn enqueue_batch(
    store: &pressoir_press::store::Store,
    n: usize,
    lanes: usize,
    per_tx: usize,
    offset: usize,
) {
    let mut i = 0;
    while i < n {
        let mut tx = store.db.pool.begin().await.unwrap();
        for _ in 0..per_tx.min(n - i) {
            let site = format!("site{:04}.cloud.localhost", (offset + i) % lanes);
            let data = json!({"name": site, "status": "Active", "plan": "Starter", "team": "Administrator", "apps": ["frappe"]});
            wstore::enqueue(
                &mut tx,
                "site.status_changed",
                "Administrator",
                &wstore::site_lane(&site),
                data,
            )
            .await
            .unwrap();
            i += 1;
        }
        tx.commit().await.unwrap();
    }
}

async fn wait_count(seen: &Arc<Mutex<Seen>>, n: usize, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while seen.lock().unwrap().ids.len() < n {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    true
}

async fn run(label: &str, url: String, schema: &str, poll: Duration) {
    let store = pressoir_press::open_store(&url, schema, 8)
        .await
        .expect("store");
    let seen = Arc::new(Mutex::new(Seen::default()));
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(hook))
        .with_state(seen.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    let now = now_ms();
    let w = Webhook {
        name: format!("bench-{schema}"),
        team: String::new(),
        url: format!("http://{addr}/hook"),
        headers: json!({"X-Secret": "bench-secret"}).to_string(),
        secret: Some("frappe-secret".into()),
        signing_secret: pressoir_press::webhooks::sign::generate_secret(),
        enabled: 1,
        disabled_reason: None,
        consecutive_failures: 0,
        failing_since: None,
        last_success: None,
        created: now,
        modified: now,
    };
    wstore::insert(&store.db, &w, &["site.status_changed".to_string()])
        .await
        .unwrap();
    let cfg = WebhookConfig {
        allow_private: true,
        poll_interval: poll,
        max_in_flight: 256,
        max_in_flight_per_webhook: 128,
        ..WebhookConfig::default()
    };

    // 1. Burst: N events recorded first (500 per transaction, 500 sites), then the worker.
    let n = env_num("WEBHOOK_BENCH_EVENTS", 20000);
    enqueue_batch(&store, n, 500, 500, 0).await;
    let shutdown = Shutdown::new();
    let t = Instant::now();
    let (_, worker) = deliver::spawn(store.clone(), cfg.clone(), shutdown.clone());
    let ok = wait_count(&seen, n, Duration::from_secs(300)).await;
    let el = t.elapsed();
    let got = seen.lock().unwrap().ids.len();
    println!(
        "{label}: burst {got}/{n} deliveries in {:.2}s = {:.0} deliveries/s{}",
        el.as_secs_f64(),
        got as f64 / el.as_secs_f64(),
        if ok { "" } else { " (TIMED OUT)" }
    );

    // 2. Steady: one event per transaction at a fixed rate, as Press's changes arrive.
    let rate = env_num("WEBHOOK_BENCH_RATE", 500);
    let steady = rate * 4;
    seen.lock().unwrap().latencies_ms.clear();
    let base = seen.lock().unwrap().ids.len();
    let t = Instant::now();
    for i in 0..steady {
        let due = t + Duration::from_secs_f64(i as f64 / rate as f64);
        tokio::time::sleep_until(due.into()).await;
        enqueue_batch(&store, 1, 500, 1, n + i).await;
    }
    wait_count(&seen, base + steady, Duration::from_secs(60)).await;
    let mut lat = seen.lock().unwrap().latencies_ms.clone();
    lat.sort_unstable();
    println!(
        "{label}: steady {rate}/s, one event per transaction, {} delivered: event-to-delivery p50 {} ms, p99 {} ms, max {} ms (poll {} ms)",
        lat.len(),
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat.last().copied().unwrap_or(0),
        poll.as_millis()
    );
    shutdown.trigger();
    let _ = worker.await;
    store.db.pool.close().await;
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    for poll in [Duration::from_millis(20), Duration::from_millis(5)] {
        let path = dir
            .path()
            .join(format!("bench-{}.sqlite", poll.as_millis()));
        run(
            "sqlite",
            pressoir_core::db::sqlite_url(&path),
            "press",
            poll,
        )
        .await;
        if let Some(pg) = pressoir_core::db::test_postgres_url() {
            let schema = format!("wh_bench_{}_{}", poll.as_millis(), std::process::id());
            run("postgres", pg.clone(), &schema, poll).await;
            let db = pressoir_core::db::Db::connect(&pg, "public", 1)
                .await
                .unwrap();
            if std::env::var("WEBHOOK_BENCH_KEEP").is_err() {
                let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                    .execute(&db.pool)
                    .await;
            }
        } else {
            println!("postgres: SKIPPED (PRESSOIR_TEST_POSTGRES_URL is not set)");
        }
    }
}
