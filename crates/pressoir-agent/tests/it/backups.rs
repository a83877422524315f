//! Backups through the real S3 service (`pressoir-objects`, in this process, on 127.0.0.1:0)
//! with the agent's own bucket-limited key: a site round trip, a corrupt and a missing backup.

use crate::common::*;
use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjPath;
use pressoir_agent::StorageConfig;
use pressoir_core::{Secret, Shutdown};
use serde_json::{Value, json};
use sqlx::{Connection, Row};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const AGENT_KEY: &str = "agent";
const AGENT_SECRET: &str = "agent-s3-secret-0123456789";

struct S3 {
    url: String,
    _dir: tempfile::TempDir,
    shutdown: Shutdown,
}

impl Drop for S3 {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

async fn start_s3() -> S3 {
    let dir = tempfile::tempdir().unwrap();
    let mut c = pressoir_objects::Config::new(
        dir.path().join("data"),
        "minioadmin",
        Secret::new("admin-secret-0123456789"),
    );
    c.keys.push(pressoir_objects::AccessKey::new(
        AGENT_KEY,
        Secret::new(AGENT_SECRET),
        pressoir_objects::Policy::buckets(&["backups"]),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = Shutdown::new();
    let router = pressoir_objects::app(c, shutdown.clone()).await.unwrap();
    tokio::spawn(pressoir_core::serve(listener, router, shutdown.clone()));
    S3 {
        url: format!("http://{addr}"),
        _dir: dir,
        shutdown,
    }
}

fn client(s3: &S3) -> impl ObjectStore {
    AmazonS3Builder::new()
        .with_endpoint(&s3.url)
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_bucket_name("backups")
        .with_access_key_id(AGENT_KEY)
        .with_secret_access_key(AGENT_SECRET)
        .build()
        .unwrap()
}

async fn agent_with(s3: &S3) -> TestAgent {
    let url = s3.url.clone();
    TestAgent::start(&None, move |c| {
        c.storage = Some(StorageConfig::new(
            url,
            "backups",
            AGENT_KEY,
            Secret::new(AGENT_SECRET),
        ));
    })
    .await
}

fn db_path(a: &TestAgent, site: &str) -> PathBuf {
    let config: Value = serde_json::from_slice(
        &std::fs::read(a.sites().join(site).join("site_config.json")).unwrap(),
    )
    .unwrap();
    a.sites()
        .join(site)
        .join("db")
        .join(format!("{}.db", config["db_name"].as_str().unwrap()))
}

async fn connect(a: &TestAgent, site: &str) -> sqlx::SqliteConnection {
    sqlx::SqliteConnection::connect(&format!("sqlite://{}", db_path(a, site).display()))
        .await
        .unwrap()
}

/// Writes rows (text and a blob) into the site's database and files into its folder.
async fn write_data(a: &TestAgent, site: &str, big: usize) {
    let mut c = connect(a, site).await;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS tabNote (name TEXT PRIMARY KEY, content TEXT, blob BLOB)",
    )
    .execute(&mut c)
    .await
    .unwrap();
    for i in 0..200 {
        sqlx::query("INSERT INTO tabNote (name, content, blob) VALUES (?1, ?2, ?3)")
            .bind(format!("note-{i}"))
            .bind(format!("contenu n°{i} ✓"))
            .bind(vec![(i % 256) as u8; 100 + i])
            .execute(&mut c)
            .await
            .unwrap();
    }
    c.close().await.unwrap();
    let dir = a.sites().join(site);
    std::fs::create_dir_all(dir.join("public/files")).unwrap();
    std::fs::create_dir_all(dir.join("private/files/nested")).unwrap();
    std::fs::write(dir.join("public/files/hello.txt"), "bonjour\n").unwrap();
    // Incompressible, so the files archive is larger than one multipart part (8 MiB).
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let bytes: Vec<u8> = (0..big)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(dir.join("private/files/nested/big.bin"), bytes).unwrap();
}

/// The rows the site database holds, as text, table by table.
async fn rows(a: &TestAgent, site: &str) -> BTreeMap<String, Vec<String>> {
    let mut c = connect(a, site).await;
    let mut out = BTreeMap::new();
    for (table, q) in [
        (
            "notes",
            "SELECT name || '|' || content || '|' || hex(blob) FROM tabNote ORDER BY name",
        ),
        (
            "apps",
            r#"SELECT app_name FROM "tabInstalled Application" ORDER BY app_name"#,
        ),
        (
            "users",
            "SELECT name || '|' || user_type FROM tabUser ORDER BY name",
        ),
        (
            "auth",
            "SELECT name || '|' || password FROM __Auth ORDER BY name",
        ),
    ] {
        let r = sqlx::query(q).fetch_all(&mut c).await.unwrap();
        out.insert(
            table.to_string(),
            r.iter().map(|r| r.get::<String, _>(0)).collect(),
        );
    }
    c.close().await.unwrap();
    out
}

/// Every file of a site folder but its database, with its bytes.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if rel == "db" || rel == ".created-by-job" || rel == "site_config.json" {
                continue;
            }
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn leftovers(a: &TestAgent) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(a.sites())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    let work = a.data_dir.join("backup-work");
    if work.exists() {
        v.extend(
            std::fs::read_dir(work)
                .unwrap()
                .map(|e| format!("backup-work/{}", e.unwrap().file_name().to_string_lossy())),
        );
    }
    v
}

fn ok(j: &Value) {
    assert_eq!(j["status"], "Success", "{j:#}");
}

fn step_names(j: &Value) -> Vec<String> {
    j["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn site_round_trip_through_s3_keeps_data_identical() {
    let s3 = start_s3().await;
    let a = agent_with(&s3).await;
    let mut data = new_site("src.localhost");
    data["config"] = json!({"developer_mode": 1, "host_name": "https://src.localhost"});
    ok(&a.run("New Site", data).await);
    write_data(&a, "src.localhost", 9 * 1024 * 1024).await;
    let before_rows = rows(&a, "src.localhost").await;
    let before_files = files(&a.sites().join("src.localhost"));
    assert_eq!(before_files.len(), 2);

    let b = a
        .run(
            "Backup Site",
            json!({"name": "src.localhost", "with_files": true}),
        )
        .await;
    ok(&b);
    assert_eq!(step_names(&b), ["Backup Site", "Upload Site Backup"]);
    let r = &b["result"];
    let backup = r["backup"].as_str().unwrap().to_string();
    let id = r["backup_id"].as_str().unwrap();
    assert_eq!(backup, format!("src.localhost/{id}"));
    let listed: Vec<(String, u64, String)> = r["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap().to_string(),
                f["size"].as_u64().unwrap(),
                f["sha256"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(listed[0].0, "database.sqlite.gz");
    assert_eq!(listed[1].0, "files.tar.gz");
    assert!(listed[1].1 > 9 * 1024 * 1024, "{listed:?}");

    // What is in the bucket: the two files and the manifest, with the sizes the result gives.
    let store = client(&s3);
    for (name, size, _) in &listed {
        let key = ObjPath::from(format!("sites/{backup}/{name}"));
        assert_eq!(store.head(&key).await.unwrap().size, *size, "{name}");
    }
    let manifest: Value = serde_json::from_slice(
        &store
            .get(&ObjPath::from(format!("sites/{backup}/manifest.json")))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["site"], "src.localhost");
    assert_eq!(manifest["site_config"]["developer_mode"], 1);
    assert!(manifest["site_config"].get("db_password").is_none());
    assert_eq!(manifest["files"][1]["sha256"], listed[1].2.as_str());

    // Archive the site (with an offsite backup first), then bring it back under another name.
    let arch = a
        .run(
            "Archive Site",
            json!({"name": "src.localhost", "offsite_backup": true}),
        )
        .await;
    ok(&arch);
    assert_eq!(
        step_names(&arch),
        ["Backup Site", "Upload Site Backup", "Archive Site"]
    );
    let last = arch["result"]["backup"].as_str().unwrap();
    assert!(
        last.starts_with("src.localhost/") && last != backup,
        "{arch}"
    );
    store
        .head(&ObjPath::from(format!("sites/{last}/manifest.json")))
        .await
        .unwrap();
    assert!(!a.sites().join("src.localhost").exists());
    let n = a
        .run(
            "New Site from Backup",
            json!({"name": "copy.localhost", "backup": backup, "apps": ["hrms"]}),
        )
        .await;
    ok(&n);
    assert_eq!(
        step_names(&n),
        [
            "Download Site Backup",
            "New Site from Backup",
            "Install Apps",
            "Update Site Configuration",
            "Enable Scheduler"
        ]
    );
    assert_eq!(n["result"]["restored_from"], backup.as_str());
    let mut after_rows = rows(&a, "copy.localhost").await;
    let mut apps = after_rows.remove("apps").unwrap();
    apps.retain(|a| a != "hrms");
    after_rows.insert("apps".into(), apps);
    assert_eq!(after_rows, before_rows, "the database came back identical");
    assert_eq!(
        files(&a.sites().join("copy.localhost")),
        before_files,
        "the files came back identical"
    );
    let config: Value = serde_json::from_slice(
        &std::fs::read(a.sites().join("copy.localhost/site_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(config["developer_mode"], 1);
    assert_eq!(config["db_type"], "sqlite");
    assert!(config["db_password"].as_str().unwrap().len() >= 16);
    assert!(leftovers(&a).is_empty(), "{:?}", leftovers(&a));
    assert!(
        !logs().contains(AGENT_SECRET),
        "the logs leak the S3 secret"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_brings_data_back_and_corrupt_or_missing_backups_leave_the_site_alone() {
    let s3 = start_s3().await;
    let a = agent_with(&s3).await;
    let site = "keep.localhost";
    ok(&a.run("New Site", new_site(site)).await);
    write_data(&a, site, 1000).await;
    let b = a
        .run("Backup Site", json!({"name": site, "with_files": 0}))
        .await;
    ok(&b);
    let backup = b["result"]["backup"].as_str().unwrap().to_string();
    assert_eq!(b["result"]["files"].as_array().unwrap().len(), 1);
    let snapshot_rows = rows(&a, site).await;

    // Change the site after the backup; restoring (a bare id names the job's own site) undoes it.
    let mut c = connect(&a, site).await;
    sqlx::query("DELETE FROM tabNote WHERE name > 'note-1'")
        .execute(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
    std::fs::write(a.sites().join(site).join("public/files/after.txt"), "later").unwrap();
    assert_ne!(rows(&a, site).await, snapshot_rows);
    let id = b["result"]["backup_id"].as_str().unwrap();
    let r = a
        .run("Restore Site", json!({"name": site, "backup": id}))
        .await;
    ok(&r);
    assert_eq!(step_names(&r), ["Download Site Backup", "Restore Site"]);
    assert_eq!(rows(&a, site).await, snapshot_rows);
    // A backup without files leaves the site's files as they are.
    assert!(a.sites().join(site).join("public/files/after.txt").exists());
    // The site still works for later jobs.
    ok(&a
        .run("Install App on Site", json!({"name": site, "app": "crm"}))
        .await);

    // Flip one byte of the uploaded database, through the S3 API.
    let state_rows = rows(&a, site).await;
    let state_files = files(&a.sites().join(site));
    let state_config = std::fs::read(a.sites().join(site).join("site_config.json")).unwrap();
    let store = client(&s3);
    let key = ObjPath::from(format!("sites/{backup}/database.sqlite.gz"));
    let mut bytes = store
        .get(&key)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    store.put(&key, bytes.into()).await.unwrap();
    let r = a
        .run("Restore Site", json!({"name": site, "backup": backup}))
        .await;
    assert_eq!(r["status"], "Failure", "{r:#}");
    let err = r["error"].as_str().unwrap();
    assert!(
        err.contains("corrupt") && err.contains("database.sqlite.gz") && err.contains(&backup),
        "{err}"
    );
    assert_eq!(r["steps"][0]["status"], "Failure");
    assert_ne!(r["steps"][1]["status"], "Success");

    // A backup id that does not exist.
    let r = a
        .run(
            "Restore Site",
            json!({"name": site, "backup": "20200101000000000-1"}),
        )
        .await;
    assert_eq!(r["status"], "Failure", "{r:#}");
    let err = r["error"].as_str().unwrap();
    assert!(
        err.contains("does not exist") && err.contains("20200101000000000-1"),
        "{err}"
    );
    let n = a
        .run(
            "New Site from Backup",
            json!({"name": "ghost.localhost", "backup": "keep.localhost/nope-2"}),
        )
        .await;
    assert_eq!(n["status"], "Failure", "{n:#}");
    assert!(n["error"].as_str().unwrap().contains("does not exist"));
    assert!(!a.sites().join("ghost.localhost").exists());
    // ...and the corrupt backup cannot make a new site either.
    let n = a
        .run(
            "New Site from Backup",
            json!({"name": "ghost.localhost", "backup": backup}),
        )
        .await;
    assert_eq!(n["status"], "Failure", "{n:#}");
    assert!(n["error"].as_str().unwrap().contains("corrupt"));
    assert!(!a.sites().join("ghost.localhost").exists());

    // The site is exactly as it was, and nothing is left behind.
    assert_eq!(rows(&a, site).await, state_rows);
    assert_eq!(files(&a.sites().join(site)), state_files);
    assert_eq!(
        std::fs::read(a.sites().join(site).join("site_config.json")).unwrap(),
        state_config
    );
    assert!(leftovers(&a).is_empty(), "{:?}", leftovers(&a));
}

#[tokio::test]
async fn backup_jobs_are_checked_and_need_storage() {
    let a = TestAgent::start(&None, |_| {}).await;
    for (job, data, field) in [
        (
            "Backup Site",
            json!({"name": "x.localhost", "with_files": "yes"}),
            "data.with_files",
        ),
        (
            "Restore Site",
            json!({"name": "x.localhost"}),
            "data.backup",
        ),
        (
            "Restore Site",
            json!({"name": "x.localhost", "backup": "../../etc"}),
            "data.backup",
        ),
        (
            "Restore Site",
            json!({"name": "x.localhost", "backup": "a/.."}),
            "data.backup",
        ),
        (
            "New Site from Backup",
            json!({"name": "x.localhost", "backup": "b", "apps": ["nope"]}),
            "data.apps[0]",
        ),
        (
            "New Site from Backup",
            json!({"name": "x.localhost", "backup": "b", "config": {"db_name": "x"}}),
            "data.config.db_name",
        ),
    ] {
        let r = a
            .post("/agent/job")
            .json(&json!({"job_type": job, "data": data}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{job} {data}");
        let body: Value = r.json().await.unwrap();
        assert!(body.to_string().contains(field), "{job}: {body}");
    }
    ok(&a.run("New Site", new_site("x.localhost")).await);
    let j = a.run("Backup Site", json!({"name": "x.localhost"})).await;
    assert_eq!(j["status"], "Failure");
    assert!(
        j["error"].as_str().unwrap().contains("no offsite storage"),
        "{j}"
    );
    // An archive that asks for a backup first does not archive without one.
    let j = a
        .run(
            "Archive Site",
            json!({"name": "x.localhost", "offsite_backup": true}),
        )
        .await;
    assert_eq!(j["status"], "Failure");
    assert!(j["error"].as_str().unwrap().contains("no offsite storage"));
    assert_eq!(j["steps"][2]["status"], "Skipped", "{j}");
    assert!(a.sites().join("x.localhost/site_config.json").exists());
}
