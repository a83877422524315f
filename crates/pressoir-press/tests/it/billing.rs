//! Press bills through the Lago API against the real billing service on 127.0.0.1: a site
//! created is a customer and a subscription, a plan change follows, archiving terminates;
//! billing down while a site is created and its usage sampled → delivered once it is back;
//! usage events are counted once however often they are sampled or resent. On SQLite and
//! PostgreSQL.

use crate::common::*;
use pressoir_billing::client::{Event, LagoClient, Sent};
use pressoir_core::{Secret, Shutdown};
use pressoir_press::billing::{
    BillingConfig, Meter, MeterFuture, Usage, UsageMeter, store as bstore, worker,
};
use pressoir_press::store::{Server, Site, Store};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

const BILLING_KEY: &str = "billing-key-for-tests-0123456789";

/// A test meter: every site measures 2 GB of database and 0.5 GB of files.
struct FixedMeter;

impl UsageMeter for FixedMeter {
    fn measure<'a>(&'a self, _: &'a Site, _: &'a Server) -> MeterFuture<'a> {
        Box::pin(async {
            Ok(Some(Usage {
                database_bytes: 2_000_000_000,
                files_bytes: 500_000_000,
            }))
        })
    }
}

async fn bind(addr: SocketAddr) -> TcpListener {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => return l,
            Err(e) => {
                assert!(Instant::now() < deadline, "cannot bind {addr}: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

struct Billing {
    sd: Shutdown,
    task: tokio::task::JoinHandle<()>,
    schema: String,
}

/// The real billing service on `addr`, with its own database beside Press's.
async fn start_billing(cloud: &Cloud, addr: SocketAddr) -> Billing {
    let schema = format!("{}_billing", cloud.schema);
    let url = match &cloud.backend {
        Backend::Sqlite => pressoir_core::db::sqlite_url(&cloud.dir.path().join("billing.sqlite")),
        Backend::Postgres(u) => u.clone(),
    };
    let mut cfg = pressoir_billing::Config::new(url, Secret::new(BILLING_KEY));
    cfg.schema = schema.clone();
    cfg.rate_limit = pressoir_core::RateSpec::off();
    let sd = Shutdown::new();
    let router = pressoir_billing::app(cfg, sd.clone())
        .await
        .expect("billing starts");
    let l = bind(addr).await;
    let s2 = sd.clone();
    let task = tokio::spawn(async move {
        let _ = pressoir_core::serve(l, router, s2).await;
    });
    Billing { sd, task, schema }
}

impl Billing {
    async fn stop(self, cloud: &Cloud) {
        self.sd.trigger();
        let _ = self.task.await;
        if let Backend::Postgres(u) = &cloud.backend {
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
}

struct BilledPress {
    sd: Shutdown,
    task: tokio::task::JoinHandle<()>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    store: Store,
    meter: Meter,
}

/// Replaces the cloud's Press by one billing through `billing_addr` (same address and data).
async fn start_billed_press(cloud: &mut Cloud, billing_addr: SocketAddr) -> BilledPress {
    cloud.stop_press().await;
    let meter = Meter(Arc::new(FixedMeter));
    let mut cfg = cloud.press_config();
    let mut b = BillingConfig::new(format!("http://{billing_addr}"), Secret::new(BILLING_KEY));
    b.poll_interval = Duration::from_millis(50);
    b.retry_base = Duration::from_millis(50);
    b.retry_max = Duration::from_millis(300);
    b.meter = Some(meter.clone());
    cfg.billing = Some(b);
    let sd = Shutdown::new();
    let press = pressoir_press::start(cfg, sd.clone())
        .await
        .expect("press starts");
    let l = bind(cloud.press_addr).await;
    let s2 = sd.clone();
    let router = press.router;
    let task = tokio::spawn(async move {
        let _ = pressoir_core::serve(l, router, s2).await;
    });
    BilledPress {
        sd,
        task,
        tasks: press.tasks,
        store: press.store,
        meter,
    }
}

impl BilledPress {
    async fn stop(self) {
        self.sd.trigger();
        let _ = self.task.await;
        for t in self.tasks {
            let _ = t.await;
        }
        self.store.db.pool.close().await;
    }
}

async fn lago_get(http: &reqwest::Client, addr: SocketAddr, path: &str) -> (u16, Value) {
    let r = http
        .get(format!("http://{addr}/api/v1/{path}"))
        .bearer_auth(BILLING_KEY)
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// Polls billing until `path` answers 200 and `pred` holds.
async fn wait_lago(
    http: &reqwest::Client,
    addr: SocketAddr,
    path: &str,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (s, b) = lago_get(http, addr, path).await;
        if s == 200 && pred(&b) {
            return b;
        }
        assert!(
            Instant::now() < deadline,
            "billing never showed {what}: {s} {b}"
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

async fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
}

#[tokio::test]
async fn sites_are_subscriptions_and_usage_is_counted_once() {
    for backend in backends() {
        let mut cloud = Cloud::start(&backend, Opts::default()).await;
        let baddr = free_addr().await;
        let billing = start_billing(&cloud, baddr).await;
        let press = start_billed_press(&mut cloud, baddr).await;
        let admin = cloud.admin().await;
        let http = reqwest::Client::new();

        let (site, _) = admin.new_site("billed", &["frappe"]).await;
        admin.wait_status(&site, "Active", 30).await;
        let c = wait_lago(
            &http,
            baddr,
            "customers/Administrator",
            "the team's customer",
            |_| true,
        )
        .await;
        assert_eq!(c["customer"]["external_id"], "Administrator");
        let path = format!("subscriptions/{site}");
        let s = wait_lago(&http, baddr, &path, "the site's subscription", |b| {
            b["subscription"]["status"] == "active"
        })
        .await;
        assert_eq!(s["subscription"]["plan_code"], "starter_monthly", "{s}");
        assert_eq!(s["subscription"]["external_customer_id"], "Administrator");

        // Usage: sampled twice in one period → queued once; resent by hand → a duplicate.
        let every = Duration::from_secs(3600);
        let now = pressoir_core::clock::now_ms() / 1000;
        assert_eq!(
            worker::sample_usage(&press.store, &press.meter, every, now)
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            worker::sample_usage(&press.store, &press.meter, every, now + 1)
                .await
                .unwrap(),
            0
        );
        let tid = pressoir_billing::client::transaction_id("storage_gb", &site, now, 3600);
        let ev = wait_lago(
            &http,
            baddr,
            &format!("events/{tid}"),
            "the usage event",
            |_| true,
        )
        .await;
        assert_eq!(ev["event"]["properties"]["gb_used"], "2.5", "{ev}");
        let lago = LagoClient::new(format!("http://{baddr}"), Secret::new(BILLING_KEY)).unwrap();
        let again = Event {
            transaction_id: tid.clone(),
            external_subscription_id: site.clone(),
            code: "storage_gb".into(),
            timestamp: Some(now),
            properties: [("gb_used".to_string(), json!("2.5"))]
                .into_iter()
                .collect(),
        };
        assert_eq!(lago.send_event(&again).await.unwrap(), Sent::Duplicate);
        let (st, u) = admin.get("press.api.billing.usage", &[]).await;
        assert_eq!(st, 200, "{u}");
        let mine = u["message"]["sites"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["site"] == site.as_str())
            .cloned()
            .unwrap();
        let storage = mine["charges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["code"] == "storage_gb")
            .cloned();
        assert_eq!(
            storage.expect("a storage_gb charge")["events_count"],
            1,
            "{u}"
        );

        // A plan change (Starter → Pro is an upgrade) changes the subscription.
        let (st, b) = admin
            .post(
                "press.api.site.change_plan",
                json!({"name": site, "plan": "Pro"}),
            )
            .await;
        assert_eq!(st, 200, "{b}");
        assert_eq!(
            admin.get("press.api.site.get", &[("name", &site)]).await.1["message"]["plan"],
            "Pro"
        );
        wait_lago(&http, baddr, &path, "the Pro plan", |b| {
            b["subscription"]["plan_code"] == "pro_monthly"
        })
        .await;
        let (st, b) = admin
            .post(
                "press.api.site.change_plan",
                json!({"name": site, "plan": "Nope"}),
            )
            .await;
        assert_eq!(st, 404, "{b}");

        // The real agent measures the site: one storage event for the next period.
        let agent_meter = Meter(Arc::new(pressoir_press::billing::AgentMeter::default()));
        assert_eq!(
            worker::sample_usage(&press.store, &agent_meter, every, now + 7200)
                .await
                .unwrap(),
            1
        );

        let (st, inv) = admin.get("press.api.billing.invoices", &[]).await;
        assert_eq!(st, 200, "{inv}");
        assert!(inv["message"]["invoices"].is_array(), "{inv}");

        // Archiving terminates the subscription.
        let (st, b) = admin
            .post("press.api.site.archive", json!({"name": site}))
            .await;
        assert_eq!(st, 200, "{b}");
        admin.wait_status(&site, "Archived", 30).await;
        // The Pro subscription (not only Starter's, ended by the upgrade) is terminated.
        wait_lago(
            &http,
            baddr,
            &path,
            "the terminated Pro subscription",
            |b| {
                b["subscription"]["status"] == "terminated"
                    && b["subscription"]["plan_code"] == "pro_monthly"
            },
        )
        .await;
        let deadline = Instant::now() + Duration::from_secs(5);
        while bstore::all(&press.store.db)
            .await
            .unwrap()
            .iter()
            .any(|r| r.done == 0)
        {
            assert!(Instant::now() < deadline, "outbox not drained");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let rows = bstore::all(&press.store.db).await.unwrap();
        assert!(rows.iter().all(|r| r.done == 1), "{rows:?}");

        // The name, freed by the archive, makes a new site: billed again on the same id.
        let (again, _) = admin.new_site("billed", &["frappe"]).await;
        assert_eq!(again, site);
        admin.wait_status(&site, "Active", 30).await;
        wait_lago(&http, baddr, &path, "the new site's subscription", |b| {
            b["subscription"]["status"] == "active"
                && b["subscription"]["plan_code"] == "starter_monthly"
        })
        .await;

        press.stop().await;
        billing.stop(&cloud).await;
        cloud.shutdown().await;
    }
}

#[tokio::test]
async fn billing_down_at_creation_is_delivered_when_back() {
    for backend in backends() {
        let mut cloud = Cloud::start(&backend, Opts::default()).await;
        let baddr = free_addr().await;
        let press = start_billed_press(&mut cloud, baddr).await;
        let admin = cloud.admin().await;
        let (site, _) = admin.new_site("waits", &["frappe"]).await;
        // The calls are in the outbox, tried and failed while billing is down.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let rows = bstore::all(&press.store.db).await.unwrap();
            assert!(
                rows.iter().any(|r| r.kind == "subscription"),
                "queued with the site: {rows:?}"
            );
            if rows.iter().any(|r| r.attempts >= 1 && r.done == 0) {
                break;
            }
            assert!(Instant::now() < deadline, "never tried: {rows:?}");
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        // Usage sampled while billing is down waits in the outbox too.
        admin.wait_status(&site, "Active", 30).await;
        let now = pressoir_core::clock::now_ms() / 1000;
        let every = Duration::from_secs(3600);
        assert_eq!(
            worker::sample_usage(&press.store, &press.meter, every, now)
                .await
                .unwrap(),
            1
        );
        // And the next period's, so both go in one batch once billing is back.
        assert_eq!(
            worker::sample_usage(&press.store, &press.meter, every, now + 3600)
                .await
                .unwrap(),
            1
        );
        let billing = start_billing(&cloud, baddr).await;
        let http = reqwest::Client::new();
        let s = wait_lago(
            &http,
            baddr,
            &format!("subscriptions/{site}"),
            "the late subscription",
            |b| b["subscription"]["status"] == "active",
        )
        .await;
        assert_eq!(s["subscription"]["plan_code"], "starter_monthly");
        wait_lago(
            &http,
            baddr,
            "customers/Administrator",
            "the late customer",
            |_| true,
        )
        .await;
        let tid = pressoir_billing::client::transaction_id("storage_gb", &site, now, 3600);
        let ev = wait_lago(
            &http,
            baddr,
            &format!("events/{tid}"),
            "the late usage event",
            |_| true,
        )
        .await;
        assert_eq!(ev["event"]["properties"]["gb_used"], "2.5", "{ev}");
        let next = pressoir_billing::client::transaction_id("storage_gb", &site, now + 3600, 3600);
        wait_lago(
            &http,
            baddr,
            &format!("events/{next}"),
            "the next period's event",
            |_| true,
        )
        .await;
        let deadline = Instant::now() + Duration::from_secs(5);
        while bstore::all(&press.store.db)
            .await
            .unwrap()
            .iter()
            .any(|r| r.done == 0)
        {
            assert!(Instant::now() < deadline, "outbox not drained");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        press.stop().await;
        billing.stop(&cloud).await;
        cloud.shutdown().await;
    }
}
