//! The billing benchmark: prints figures, asserts nothing. `cargo bench -p pressoir-billing`.
//!
//! On SQLite (a temp file) and on PostgreSQL (`PRESSOIR_TEST_POSTGRES_URL`, a fresh schema),
//! with the service in process on 127.0.0.1 and the shared keep-alive load generator:
//! - events ingested per second, sent singly over 64 connections (`POST /events`) and in
//!   batches of 100 (`POST /events/batch`, 8 connections);
//! - current-usage latency p50/p99 for a subscription holding 1,000,000 events spread over
//!   its current period (loaded through the store, as ingest writes them), one request at a
//!   time and over 8 connections.
//!
//! Env: BENCH_SECONDS (per ingest figure, default 5), BENCH_EVENTS (default 1000000).

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use pressoir_bench::{Spec, Stop};
use pressoir_billing::aggregate::to_fixed;
use pressoir_billing::store::{self, EventRow, Store};
use pressoir_billing::{Config, SeedPlan};
use pressoir_core::{RateSpec, Secret, Shutdown};
use rust_decimal::Decimal;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

const KEY: &str = "bench-api-key";

fn env_u64(k: &str, d: u64) -> u64 {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn post(path: &str, body: String) -> Request<Full<Bytes>> {
    Request::post(path)
        .header("authorization", format!("Bearer {KEY}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("a request")
}

async fn call(
    addr: std::net::SocketAddr,
    method: reqwest::Method,
    path: &str,
    body: serde_json::Value,
) {
    let r = reqwest::Client::new()
        .request(method, format!("http://{addr}/api/v1{path}"))
        .bearer_auth(KEY)
        .json(&body)
        .send()
        .await
        .expect("request");
    assert!(
        r.status().is_success(),
        "{path}: {}",
        r.text().await.unwrap_or_default()
    );
}

async fn bench(name: &str, url: String, schema: String) {
    let seconds = env_u64("BENCH_SECONDS", 5);
    let total_events = env_u64("BENCH_EVENTS", 1_000_000) as usize;
    let mut config = Config::new(url.clone(), Secret::new(KEY));
    config.schema = schema.clone();
    config.rate_limit = RateSpec::off();
    config.max_connections = 32;
    config.seed_plans = SeedPlan::defaults();
    config.rsa_private_pem = None;
    let shutdown = Shutdown::new();
    let router = pressoir_billing::app(config, shutdown.clone())
        .await
        .expect("billing starts");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let s = shutdown.clone();
    tokio::spawn(async move { pressoir_core::serve(listener, router, s).await });

    for sub in ["bench-single", "bench-batch"] {
        call(
            addr,
            reqwest::Method::POST,
            "/subscriptions",
            json!({"subscription": {
            "external_customer_id": "bench", "plan_code": "starter_monthly", "external_id": sub}}),
        )
        .await;
    }

    let single = pressoir_bench::load::run(
        Spec::get(addr, "/")
            .connections(64)
            .stop(Stop::Duration(Duration::from_secs(seconds)))
            .make(Arc::new(|n| {
                post(
                    "/api/v1/events",
                    json!({"event": {"transaction_id": format!("s-{n}"),
                    "external_subscription_id": "bench-single", "code": "storage_gb",
                    "properties": {"gb_used": (n % 500) as i64}}})
                    .to_string(),
                )
            })),
    )
    .await;
    println!(
        "{name}: events single, 64 connections: {:.0} events/s ({})",
        single.ok as f64 / single.elapsed.as_secs_f64(),
        single.line()
    );

    let batch = pressoir_bench::load::run(
        Spec::get(addr, "/")
            .connections(8)
            .stop(Stop::Duration(Duration::from_secs(seconds)))
            .make(Arc::new(|n| {
                // Built as text: the load generator shares the two cores with the server.
                let mut body = String::with_capacity(12_000);
                body.push_str("{\"events\":[");
                for i in 0..100 {
                    if i > 0 {
                        body.push(',');
                    }
                    body.push_str(&format!(
                        "{{\"transaction_id\":\"b-{n}-{i}\",\"external_subscription_id\":\"bench-batch\",\
                         \"code\":\"storage_gb\",\"properties\":{{\"gb_used\":{i}}}}}"
                    ));
                }
                body.push_str("]}");
                post("/api/v1/events/batch", body)
            })),
    )
    .await;
    println!(
        "{name}: events batched by 100, 8 connections: {:.0} events/s ({})",
        batch.ok as f64 * 100.0 / batch.elapsed.as_secs_f64(),
        batch.line()
    );

    // A subscription with a million events over its current period.
    let month_start = {
        let d = time::OffsetDateTime::now_utc().date();
        let first = time::Date::from_calendar_date(d.year(), d.month(), 1).expect("a date");
        first.midnight().assume_utc().unix_timestamp() * 1000
    };
    call(
        addr,
        reqwest::Method::POST,
        "/subscriptions",
        json!({"subscription": {
        "external_customer_id": "bench", "plan_code": "starter_monthly", "external_id": "bench-big",
        "subscription_at": pressoir_billing::render::iso(month_start)}}),
    )
    .await;
    let st = Store::open(&url, &schema, 4).await.expect("store");
    let now = pressoir_core::clock::now_ms();
    let span = (now - month_start).max(1);
    let started = Instant::now();
    let chunk = 2000;
    let mut done = 0;
    while done < total_events {
        let n = chunk.min(total_events - done);
        let rows: Vec<EventRow> = (done..done + n)
            .map(|i| {
                let gb = Decimal::new((i % 10_000) as i64, 2);
                EventRow {
                    lago_id: uuid::Uuid::new_v4().to_string(),
                    transaction_id: format!("big-{i}"),
                    external_subscription_id: "bench-big".into(),
                    code: "storage_gb".into(),
                    timestamp: month_start + (i as i64 * span) / total_events as i64,
                    properties: format!("{{\"gb_used\":\"{gb}\"}}"),
                    value: to_fixed(gb),
                    value_text: Some(gb.to_string()),
                    precise_total_amount_cents: None,
                    created_at: now,
                }
            })
            .collect();
        let mut tx = st.begin().await.expect("tx");
        store::insert_events(tx.conn(), &rows)
            .await
            .expect("insert");
        tx.commit().await.expect("commit");
        done += n;
    }
    let load_secs = started.elapsed().as_secs_f64();
    println!(
        "{name}: loaded {total_events} events into one subscription in {load_secs:.1}s ({:.0} events/s through the store)",
        total_events as f64 / load_secs
    );

    let path = "/api/v1/customers/bench/current_usage?external_subscription_id=bench-big";
    let one = pressoir_bench::load::run(
        Spec::get(addr, path)
            .header("authorization", &format!("Bearer {KEY}"))
            .connections(1)
            .stop(Stop::Requests(300)),
    )
    .await;
    println!(
        "{name}: current usage over {total_events} events, 1 connection: p50 {} p99 {} ({})",
        pressoir_bench::stats::ms(one.p50()),
        pressoir_bench::stats::ms(one.p99()),
        one.line()
    );
    let eight = pressoir_bench::load::run(
        Spec::get(addr, path)
            .header("authorization", &format!("Bearer {KEY}"))
            .connections(8)
            .stop(Stop::Requests(800)),
    )
    .await;
    println!(
        "{name}: current usage over {total_events} events, 8 connections: p50 {} p99 {} ({})",
        pressoir_bench::stats::ms(eight.p50()),
        pressoir_bench::stats::ms(eight.p99()),
        eight.line()
    );
    let check = reqwest::Client::new()
        .get(format!("http://{addr}{path}"))
        .bearer_auth(KEY)
        .send()
        .await
        .expect("usage")
        .json::<serde_json::Value>()
        .await
        .expect("json");
    println!(
        "{name}: usage line: events_count {} units {} amount_cents {}",
        check["customer_usage"]["charges_usage"][0]["events_count"],
        check["customer_usage"]["charges_usage"][0]["units"],
        check["customer_usage"]["charges_usage"][0]["amount_cents"]
    );
    shutdown.trigger();
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = pressoir_core::db::sqlite_url(&dir.path().join("bench.sqlite"));
        bench("sqlite", url, "billing".into()).await;
        match pressoir_core::db::test_postgres_url() {
            Some(url) => {
                let schema = format!("bench_{}", std::process::id());
                bench("postgres", url, schema).await;
            }
            None => println!("postgres: SKIPPED (set PRESSOIR_TEST_POSTGRES_URL)"),
        }
    });
}
