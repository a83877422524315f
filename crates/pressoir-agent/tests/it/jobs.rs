//! The job types, run for real by the local driver.

use crate::common::*;
use serde_json::{Value, json};
use sqlx::{Connection, Row};

async fn site_db(a: &TestAgent, site: &str) -> sqlx::SqliteConnection {
    let config: Value = serde_json::from_slice(
        &std::fs::read(a.sites().join(site).join("site_config.json")).unwrap(),
    )
    .unwrap();
    let db = a
        .sites()
        .join(site)
        .join("db")
        .join(format!("{}.db", config["db_name"].as_str().unwrap()));
    sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap()
}

async fn installed(a: &TestAgent, site: &str) -> Vec<String> {
    let mut c = site_db(a, site).await;
    let rows = sqlx::query(r#"SELECT app_name FROM "tabInstalled Application" ORDER BY app_name"#)
        .fetch_all(&mut c)
        .await
        .unwrap();
    rows.iter().map(|r| r.get::<String, _>(0)).collect()
}

fn site_config(a: &TestAgent, site: &str) -> Value {
    serde_json::from_slice(&std::fs::read(a.sites().join(site).join("site_config.json")).unwrap())
        .unwrap()
}

#[tokio::test]
async fn new_site_runs_every_step_for_real() {
    let a = TestAgent::start(&None, |_| {}).await;
    let s = a
        .submit(
            "New Site",
            json!({"name": "acme.localhost", "apps": ["frappe", "erpnext", "hrms"], "admin_password": "pw-123",
                   "config": {"developer_mode": 1, "host_name": "https://acme.localhost"}}),
        )
        .await;
    // The whole plan is visible from the start.
    let early = a.job(s["id"].as_str().unwrap()).await;
    let names: Vec<_> = early["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].clone())
        .collect();
    assert_eq!(
        names,
        vec![
            json!("New Site"),
            json!("Install Apps"),
            json!("Update Site Configuration"),
            json!("Set Administrator Password"),
            json!("Enable Scheduler")
        ]
    );
    let j = a.wait(s["id"].as_str().unwrap()).await;
    assert_eq!(j["status"], "Success", "{j}");
    assert!(j["error"].is_null());
    assert_eq!(j["result"]["site"], "acme.localhost");
    for step in j["steps"].as_array().unwrap() {
        assert_eq!(step["status"], "Success", "{step}");
        assert!(
            step["started_at"].is_string()
                && step["ended_at"].is_string()
                && step["duration_ms"].is_number()
        );
        assert!(!step["output"].as_str().unwrap().is_empty());
    }
    let c = site_config(&a, "acme.localhost");
    assert!(c["db_name"].as_str().unwrap().starts_with('_'));
    assert_eq!(c["db_type"], "sqlite");
    assert!(c["db_password"].as_str().unwrap().len() >= 16);
    assert_eq!(c["developer_mode"], 1);
    assert_eq!(
        installed(&a, "acme.localhost").await,
        ["erpnext", "frappe", "hrms"]
    );
    let mut db = site_db(&a, "acme.localhost").await;
    let hash: String = sqlx::query("SELECT password FROM __Auth WHERE name = 'Administrator'")
        .fetch_one(&mut db)
        .await
        .unwrap()
        .get(0);
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    // The stored hash is a standard PHC string: another Argon2 implementation verifies it.
    let check = |pw: &[u8]| {
        use argon2::password_hash::{PasswordHash, PasswordVerifier};
        let parsed = PasswordHash::new(&hash).unwrap();
        argon2::Argon2::default()
            .verify_password(pw, &parsed)
            .is_ok()
    };
    assert!(check(b"pw-123"), "the Administrator password verifies");
    assert!(!check(b"pw-124"), "another password does not");
    let sched: String = sqlx::query("SELECT value FROM tabSingles WHERE doctype = 'System Settings' AND field = 'enable_scheduler'")
        .fetch_one(&mut db)
        .await
        .unwrap()
        .get(0);
    assert_eq!(sched, "1");
    let users: i64 = sqlx::query("SELECT COUNT(*) FROM tabUser")
        .fetch_one(&mut db)
        .await
        .unwrap()
        .get(0);
    assert_eq!(users, 2);

    // A site that exists fails clearly and is never overwritten.
    let again = a
        .run(
            "New Site",
            json!({"name": "acme.localhost", "apps": ["frappe"], "admin_password": "other"}),
        )
        .await;
    assert_eq!(again["status"], "Failure");
    assert!(
        again["error"].as_str().unwrap().contains("already exists"),
        "{again}"
    );
    assert_eq!(again["steps"][0]["status"], "Failure");
    assert_eq!(again["steps"][1]["status"], "Skipped");
    assert_eq!(site_config(&a, "acme.localhost"), c);
    assert_eq!(
        installed(&a, "acme.localhost").await,
        ["erpnext", "frappe", "hrms"]
    );
}

#[tokio::test]
async fn apps_config_and_archive() {
    let a = TestAgent::start(&None, |_| {}).await;
    assert_eq!(
        a.run("New Site", new_site("shop.localhost")).await["status"],
        "Success"
    );
    let j = a
        .run(
            "Install App on Site",
            json!({"name": "shop.localhost", "app": "crm"}),
        )
        .await;
    assert_eq!(j["status"], "Success", "{j}");
    assert_eq!(j["steps"][0]["name"], "Install App on Site");
    assert_eq!(
        installed(&a, "shop.localhost").await,
        ["crm", "erpnext", "frappe"]
    );
    let j = a
        .run(
            "Uninstall App on Site",
            json!({"name": "shop.localhost", "app": "erpnext"}),
        )
        .await;
    assert_eq!(j["status"], "Success", "{j}");
    assert_eq!(installed(&a, "shop.localhost").await, ["crm", "frappe"]);
    let j = a
        .run(
            "Uninstall App on Site",
            json!({"name": "shop.localhost", "app": "erpnext"}),
        )
        .await;
    assert_eq!(j["status"], "Failure");
    assert!(j["error"].as_str().unwrap().contains("not installed"));

    let j = a
        .run(
            "Update Site Configuration",
            json!({"name": "shop.localhost", "config": {"maintenance_mode": 1, "x": "y"}}),
        )
        .await;
    assert_eq!(j["status"], "Success", "{j}");
    let j = a
        .run(
            "Update Site Configuration",
            json!({"name": "shop.localhost", "config": {}, "remove": ["x"]}),
        )
        .await;
    assert_eq!(j["status"], "Success");
    let c = site_config(&a, "shop.localhost");
    assert_eq!(c["maintenance_mode"], 1);
    assert!(c.get("x").is_none());
    let leftovers: Vec<_> = std::fs::read_dir(a.sites().join("shop.localhost"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let j = a
        .run("Archive Site", json!({"name": "shop.localhost"}))
        .await;
    assert_eq!(j["status"], "Success", "{j}");
    assert!(!a.sites().join("shop.localhost").exists());
    let archived: Vec<_> = std::fs::read_dir(a.sites().join("archived"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(archived.len(), 1);
    assert!(
        archived[0]
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("shop.localhost-")
    );
    assert!(archived[0].join("site_config.json").exists());
    assert!(!archived[0].join("db").exists(), "the database was dropped");

    for (t, d) in [
        ("Archive Site", json!({"name": "shop.localhost"})),
        (
            "Install App on Site",
            json!({"name": "nosite.localhost", "app": "crm"}),
        ),
        (
            "Update Site Configuration",
            json!({"name": "nosite.localhost", "config": {"a": 1}}),
        ),
    ] {
        let j = a.run(t, d).await;
        assert_eq!(j["status"], "Failure", "{t}");
        assert!(
            j["error"].as_str().unwrap().contains("does not exist"),
            "{j}"
        );
    }
}

#[tokio::test]
async fn jobs_on_one_site_run_in_submission_order() {
    let a = TestAgent::start(&None, |c| c.workers = 4).await;
    let mut jobs = vec![json!({"job_type": "New Site", "data": new_site("order.localhost")})];
    for i in 0..8 {
        jobs.push(json!({"job_type": "Update Site Configuration", "data": {"name": "order.localhost", "config": {"n": i}}}));
        jobs.push(json!({"job_type": "Ping Job"}));
        jobs.push(
            json!({"job_type": "New Site", "data": new_site(&format!("other{i}.localhost"))}),
        );
    }
    let r: Value = a
        .post("/agent/jobs")
        .json(&json!({"jobs": jobs}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<String> = r["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_string())
        .collect();
    let mut done = Vec::new();
    for id in &ids {
        done.push(a.wait(id).await);
    }
    assert!(done.iter().all(|j| j["status"] == "Success"), "{done:?}");
    let same_site: Vec<&Value> = done
        .iter()
        .filter(|j| {
            j["job_type"] == "Update Site Configuration" || j["result"]["site"] == "order.localhost"
        })
        .collect();
    assert_eq!(same_site.len(), 9);
    for w in same_site.windows(2) {
        assert!(
            ms(&w[1]["started_at"]) >= ms(&w[0]["ended_at"]),
            "{} started before {} ended",
            w[1]["id"],
            w[0]["id"]
        );
    }
    assert_eq!(site_config(&a, "order.localhost")["n"], 7);
    // Jobs on different sites ran at the same time.
    let others: Vec<(i64, i64)> = done
        .iter()
        .filter(|j| j["job_type"] == "New Site" && j["result"]["site"] != "order.localhost")
        .map(|j| (ms(&j["started_at"]), ms(&j["ended_at"])))
        .collect();
    let overlap = others
        .iter()
        .enumerate()
        .any(|(i, a)| others.iter().skip(i + 1).any(|b| a.0 < b.1 && b.0 < a.1));
    assert!(
        overlap,
        "no two sites were worked on in parallel: {others:?}"
    );
}

#[tokio::test]
async fn names_cannot_escape_the_bench() {
    let a = TestAgent::start(&None, |_| {}).await;
    let before = tree(a.root.path());
    for name in [
        "../x",
        "a/b",
        "..",
        "../../etc/passwd",
        "/abs",
        "a\\b",
        ".hidden",
        "x..y",
        "archived",
        "UPPER.com",
    ] {
        for (t, extra) in [
            (
                "New Site",
                json!({"apps": ["frappe"], "admin_password": "p"}),
            ),
            ("Archive Site", json!({})),
            ("Update Site Configuration", json!({"config": {"a": 1}})),
        ] {
            let mut data = extra.clone();
            data["name"] = json!(name);
            let r = a
                .post("/agent/job")
                .json(&json!({"job_type": t, "data": data}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 400, "{t} {name}");
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["field"], "data.name");
        }
    }
    for (field, data) in [
        (
            "data.bench",
            json!({"name": "ok.localhost", "apps": ["frappe"], "admin_password": "p", "bench": "../b"}),
        ),
        (
            "data.app",
            json!({"name": "ok.localhost", "app": "../../x"}),
        ),
    ] {
        let t = if field == "data.app" {
            "Install App on Site"
        } else {
            "New Site"
        };
        let r = a
            .post("/agent/job")
            .json(&json!({"job_type": t, "data": data}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        assert_eq!(r.json::<Value>().await.unwrap()["field"], field);
    }
    assert_eq!(tree(a.root.path()), before, "nothing was created anywhere");
    let v: Value = a
        .get("/agent/jobs")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["jobs"], json!([]), "no job was stored");
}

fn ms(v: &Value) -> i64 {
    pressoir_core::clock::parse_rfc3339_ms(v.as_str().unwrap()).unwrap()
}

/// Every path under `root`, except the job store's own files.
fn tree(root: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).unwrap() {
            let e = e.unwrap();
            let rel = e
                .path()
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if rel.contains("agent.sqlite") {
                continue;
            }
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
            out.push(rel);
        }
    }
    out.sort();
    out
}

/// A driver whose "Ping Step" panics when the job comes from a given site-less position:
/// every other Ping Job succeeds.
struct Panicky(std::sync::atomic::AtomicUsize);

impl pressoir_agent::Driver for Panicky {
    fn name(&self) -> &'static str {
        "panicky"
    }
    fn resumable(&self, _: pressoir_agent::job::StepKind) -> bool {
        true
    }
    fn usage<'a>(
        &'a self,
        _: &'a pressoir_agent::job::SiteRef,
    ) -> futures::future::BoxFuture<'a, Result<Option<pressoir_agent::driver::Usage>, String>> {
        Box::pin(async { Ok(None) })
    }
    fn run<'a>(
        &'a self,
        _: &'a pressoir_agent::job::JobSpec,
        _: pressoir_agent::job::StepKind,
        _: pressoir_agent::driver::StepContext,
    ) -> futures::future::BoxFuture<'a, pressoir_agent::driver::StepResult> {
        Box::pin(async move {
            if self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                panic!("a driver bug");
            }
            Ok(pressoir_agent::driver::StepDone {
                output: "fine".into(),
                result: None,
            })
        })
    }
}

#[tokio::test]
async fn a_panicking_step_fails_its_job_and_the_workers_carry_on() {
    init_logs();
    let root = tempfile::tempdir().unwrap();
    let mut c = config(&root.path().join("agent"), &None);
    c.workers = 1;
    let shutdown = pressoir_core::Shutdown::new();
    let driver: std::sync::Arc<dyn pressoir_agent::Driver> =
        std::sync::Arc::new(Panicky(Default::default()));
    let agent = pressoir_agent::start_with(c, Some(driver), shutdown.clone())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(pressoir_core::serve(
        listener,
        agent.router,
        shutdown.clone(),
    ));
    let client = reqwest::Client::new();
    let mut ends = Vec::new();
    for _ in 0..2 {
        let s: Value = client
            .post(format!("{base}/agent/job"))
            .bearer_auth(PASSWORD)
            .json(&json!({"job_type": "Ping Job"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = s["id"].as_str().unwrap().to_string();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let j: Value = client
                .get(format!("{base}/agent/job/{id}"))
                .bearer_auth(PASSWORD)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if j["status"] == "Success" || j["status"] == "Failure" {
                ends.push(j);
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{j}");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
    assert_eq!(ends[0]["status"], "Failure");
    assert_eq!(ends[0]["steps"][0]["status"], "Failure");
    assert!(
        !ends[0]["error"].as_str().unwrap().contains("driver bug"),
        "no internals in the reply"
    );
    assert_eq!(
        ends[1]["status"], "Success",
        "the only worker survived the panic"
    );
    shutdown.trigger();
}
