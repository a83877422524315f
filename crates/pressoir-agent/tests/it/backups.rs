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

fn db_path(sites: &Path, site: &str) -> PathBuf {
    let config: Value =
        serde_json::from_slice(&std::fs::read(sites.join(site).join("site_config.json")).unwrap())
            .unwrap();
    sites
        .join(site)
        .join("db")
        .join(format!("{}.db", config["db_name"].as_str().unwrap()))
}

async fn connect(sites: &Path, site: &str) -> sqlx::SqliteConnection {
    sqlx::SqliteConnection::connect(&format!("sqlite://{}", db_path(sites, site).display()))
        .await
        .unwrap()
}

/// Writes rows (text and a blob) into the site's database and files into its folder.
async fn write_data(sites: &Path, site: &str, big: usize) {
    let mut c = connect(sites, site).await;
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
    let dir = sites.join(site);
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
async fn rows(sites: &Path, site: &str) -> BTreeMap<String, Vec<String>> {
    let mut c = connect(sites, site).await;
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
    write_data(&a.sites(), "src.localhost", 9 * 1024 * 1024).await;
    let before_rows = rows(&a.sites(), "src.localhost").await;
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
    let mut after_rows = rows(&a.sites(), "copy.localhost").await;
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
    write_data(&a.sites(), site, 1000).await;
    let b = a
        .run("Backup Site", json!({"name": site, "with_files": 0}))
        .await;
    ok(&b);
    let backup = b["result"]["backup"].as_str().unwrap().to_string();
    assert_eq!(b["result"]["files"].as_array().unwrap().len(), 1);
    let snapshot_rows = rows(&a.sites(), site).await;

    // Change the site after the backup; restoring (a bare id names the job's own site) undoes it.
    let mut c = connect(&a.sites(), site).await;
    sqlx::query("DELETE FROM tabNote WHERE name > 'note-1'")
        .execute(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
    std::fs::write(a.sites().join(site).join("public/files/after.txt"), "later").unwrap();
    assert_ne!(rows(&a.sites(), site).await, snapshot_rows);
    let id = b["result"]["backup_id"].as_str().unwrap();
    let r = a
        .run("Restore Site", json!({"name": site, "backup": id}))
        .await;
    ok(&r);
    assert_eq!(step_names(&r), ["Download Site Backup", "Restore Site"]);
    assert_eq!(rows(&a.sites(), site).await, snapshot_rows);
    // A backup without files leaves the site's files as they are.
    assert!(a.sites().join(site).join("public/files/after.txt").exists());
    // The site still works for later jobs.
    ok(&a
        .run("Install App on Site", json!({"name": site, "app": "crm"}))
        .await);

    // Flip one byte of the uploaded database, through the S3 API.
    let state_rows = rows(&a.sites(), site).await;
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
    assert_eq!(rows(&a.sites(), site).await, state_rows);
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

/// The objects under `sites/<backup>/`.
async fn objects_of(store: &impl ObjectStore, backup: &str) -> Vec<String> {
    use futures::StreamExt;
    let prefix = ObjPath::from(format!("sites/{backup}"));
    let mut list = store.list(Some(&prefix));
    let mut out = Vec::new();
    while let Some(m) = list.next().await {
        out.push(m.unwrap().location.to_string());
    }
    out.sort();
    out
}

/// Every backup with a manifest in the bucket has every file its manifest lists, at the
/// listed size: no half-made (or half-deleted) backup is usable.
async fn every_listed_backup_is_whole(store: &impl ObjectStore) -> usize {
    use futures::StreamExt;
    let mut list = store.list(Some(&ObjPath::from("sites")));
    let mut manifests = Vec::new();
    while let Some(m) = list.next().await {
        let m = m.unwrap();
        if m.location.as_ref().ends_with("/manifest.json") {
            manifests.push(m.location);
        }
    }
    for key in &manifests {
        let m: Value =
            serde_json::from_slice(&store.get(key).await.unwrap().bytes().await.unwrap()).unwrap();
        let dir = key.as_ref().trim_end_matches("manifest.json");
        for f in m["files"].as_array().unwrap() {
            let k = ObjPath::from(format!("{dir}{}", f["name"].as_str().unwrap()));
            let head = store.head(&k).await;
            assert_eq!(
                head.map(|h| h.size).ok(),
                f["size"].as_u64(),
                "{key} lists {k}, which is missing or partial"
            );
        }
    }
    manifests.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_site_backup_removes_every_object_and_is_idempotent() {
    let s3 = start_s3().await;
    let a = agent_with(&s3).await;
    let site = "del.localhost";
    ok(&a.run("New Site", new_site(site)).await);
    write_data(&a.sites(), site, 1000).await;
    let store = client(&s3);
    let mut backups = Vec::new();
    for _ in 0..2 {
        let b = a
            .run("Backup Site", json!({"name": site, "with_files": true}))
            .await;
        ok(&b);
        backups.push(b["result"]["backup"].as_str().unwrap().to_string());
    }
    assert_eq!(objects_of(&store, &backups[0]).await.len(), 3);

    let d = a
        .run(
            "Delete Site Backup",
            json!({"name": site, "backup": backups[0]}),
        )
        .await;
    ok(&d);
    assert_eq!(step_names(&d), ["Delete Site Backup"]);
    assert_eq!(d["result"]["deleted"], 3, "{d:#}");
    let out = d["steps"][0]["output"].as_str().unwrap();
    let first = out.lines().next().unwrap_or_default();
    assert!(first.ends_with("/manifest.json"), "manifest first: {out}");
    assert!(objects_of(&store, &backups[0]).await.is_empty());
    // The other backup of the site is untouched and still restores.
    assert_eq!(objects_of(&store, &backups[1]).await.len(), 3);
    assert_eq!(every_listed_backup_is_whole(&store).await, 1);

    // Again, and a backup that never existed: nothing to delete, success.
    for backup in [backups[0].as_str(), "del.localhost/20200101000000000-9"] {
        let d = a
            .run(
                "Delete Site Backup",
                json!({"name": site, "backup": backup}),
            )
            .await;
        ok(&d);
        assert_eq!(d["result"]["deleted"], 0);
        assert!(
            d["steps"][0]["output"]
                .as_str()
                .unwrap()
                .contains("already deleted")
        );
    }
    // Half-deleted as it would be if the agent died after the manifest: not usable.
    let key = ObjPath::from(format!("sites/{}/manifest.json", backups[1]));
    store.delete(&key).await.unwrap();
    assert_eq!(every_listed_backup_is_whole(&store).await, 0);
    let r = a
        .run("Restore Site", json!({"name": site, "backup": backups[1]}))
        .await;
    assert_eq!(r["status"], "Failure");
    assert!(r["error"].as_str().unwrap().contains("does not exist"));
    ok(&a
        .run(
            "Delete Site Backup",
            json!({"name": site, "backup": backups[1]}),
        )
        .await);
    assert!(objects_of(&store, &backups[1]).await.is_empty());

    let r = a
        .post("/agent/job")
        .json(&json!({"job_type": "Delete Site Backup", "data": {"name": site, "backup": "../x"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("data.backup"));
}

const S3_CHILD_DIR: &str = "PRESSOIR_AGENT_TEST_S3_CHILD_DIR";
const S3_CHILD_URL: &str = "PRESSOIR_AGENT_TEST_S3_CHILD_URL";

/// Not a test on its own: re-run by the kill tests below with `S3_CHILD_DIR` set, it serves
/// an agent with offsite storage at `S3_CHILD_URL` until it is killed.
#[test]
fn child_agent_with_s3() {
    let (Ok(dir), Ok(url)) = (std::env::var(S3_CHILD_DIR), std::env::var(S3_CHILD_URL)) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let dir = Path::new(&dir);
        let mut c = config(&dir.join("agent"), &None);
        c.workers = 2;
        c.storage = Some(StorageConfig::new(
            url,
            "backups",
            AGENT_KEY,
            Secret::new(AGENT_SECRET),
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        std::fs::write(dir.join("addr.tmp"), addr.to_string()).unwrap();
        std::fs::rename(dir.join("addr.tmp"), dir.join("addr")).unwrap();
        pressoir_agent::run(c, listener, Shutdown::new())
            .await
            .unwrap();
    });
}

/// A child agent process, killed (SIGKILL) and reaped when dropped.
struct Child(std::process::Child, String);

impl Child {
    fn spawn(dir: &Path, s3: &S3) -> Child {
        let _ = std::fs::remove_file(dir.join("addr"));
        let mut child = Child(
            std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "backups::child_agent_with_s3",
                    "--exact",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(S3_CHILD_DIR, dir)
                .env(S3_CHILD_URL, &s3.url)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
            String::new(),
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            if let Ok(a) = std::fs::read_to_string(dir.join("addr")) {
                child.1 = format!("http://{a}");
                return child;
            }
            if std::time::Instant::now() > deadline {
                child.kill_9();
                panic!("the child agent did not start");
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    fn kill_9(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    async fn submit(&self, job_type: &str, data: Value) -> String {
        let r = reqwest::Client::new()
            .post(format!("{}/agent/job", self.1))
            .bearer_auth(PASSWORD)
            .json(&json!({"job_type": job_type, "data": data}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        r.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn job(&self, id: &str) -> Value {
        reqwest::Client::new()
            .get(format!("{}/agent/job/{id}", self.1))
            .bearer_auth(PASSWORD)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Polls a job until `done` holds (or fails after 60 s).
    async fn wait_for(&self, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let j = self.job(id).await;
            if done(&j) {
                return j;
            }
            assert!(std::time::Instant::now() < deadline, "job {id}: {j:#}");
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }

    async fn wait(&self, id: &str) -> Value {
        self.wait_for(id, |j| j["status"] == "Success" || j["status"] == "Failure")
            .await
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.kill_9();
    }
}

fn step_running(j: &Value, step: &str) -> bool {
    j["steps"].as_array().is_some_and(|s| {
        s.iter()
            .any(|s| s["name"] == step && s["status"] == "Running")
    })
}

fn leftovers_in(data_dir: &Path) -> Vec<String> {
    let sites = data_dir.join("benches/bench-0001/sites");
    let mut v: Vec<String> = std::fs::read_dir(&sites)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    if let Ok(work) = std::fs::read_dir(data_dir.join("backup-work")) {
        v.extend(work.map(|e| format!("backup-work/{}", e.unwrap().file_name().to_string_lossy())));
    }
    v
}

/// kill -9 while "Backup Site" uploads, then while "Restore Site" restores: after each restart
/// the job ends in a defined state, no partial backup is usable, and the site is intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_backup_upload_and_restore_leaves_no_partial_backup_and_an_intact_site() {
    let s3 = start_s3().await;
    let store = client(&s3);
    let root = tempfile::tempdir().unwrap();
    let data_dir = root.path().join("agent");
    let sites = data_dir.join("benches/bench-0001/sites");
    let site = "crash.localhost";
    let mut child = Child::spawn(root.path(), &s3);
    let id = child.submit("New Site", new_site(site)).await;
    ok(&child.wait(&id).await);
    // Big and incompressible, so the upload and the restore take long enough to be caught.
    write_data(&sites, site, 40 * 1024 * 1024).await;
    let before_rows = rows(&sites, site).await;
    let before_files = files(&sites.join(site));

    // 1. Killed while uploading.
    let id = child
        .submit("Backup Site", json!({"name": site, "with_files": true}))
        .await;
    let caught = child
        .wait_for(&id, |j| {
            step_running(j, "Upload Site Backup") || j["status"] == "Success"
        })
        .await;
    child.kill_9();
    assert_ne!(
        caught["status"], "Success",
        "the backup ended before the kill"
    );
    assert_eq!(
        every_listed_backup_is_whole(&store).await,
        0,
        "a backup cut short is not listed"
    );
    assert_eq!(rows(&sites, site).await, before_rows);

    let child = Child::spawn(root.path(), &s3);
    let b = child.wait(&id).await;
    // Uploading may run again (same keys, manifest last): the backup is resumed to Success.
    ok(&b);
    assert!(
        b["steps"][1]["output"]
            .as_str()
            .unwrap()
            .contains("resumed after a restart"),
        "{b:#}"
    );
    let backup = b["result"]["backup"].as_str().unwrap().to_string();
    assert_eq!(every_listed_backup_is_whole(&store).await, 1);
    assert_eq!(rows(&sites, site).await, before_rows, "the site is intact");
    assert!(
        leftovers_in(&data_dir).is_empty(),
        "{:?}",
        leftovers_in(&data_dir)
    );

    // 2. Change the site, restore, and kill while restoring.
    let mut c = connect(&sites, site).await;
    sqlx::query("DELETE FROM tabNote WHERE name > 'note-1'")
        .execute(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
    std::fs::remove_file(sites.join(site).join("public/files/hello.txt")).unwrap();
    let changed_rows = rows(&sites, site).await;
    assert_ne!(changed_rows, before_rows);
    let mut child = child;
    let id = child
        .submit("Restore Site", json!({"name": site, "backup": backup}))
        .await;
    let caught = child
        .wait_for(&id, |j| {
            step_running(j, "Restore Site") || j["status"] == "Success"
        })
        .await;
    child.kill_9();
    assert_ne!(
        caught["status"], "Success",
        "the restore ended before the kill"
    );

    let child = Child::spawn(root.path(), &s3);
    let r = child.wait(&id).await;
    // Either resumed to Success (fully restored) or Failure "interrupted" (as it was).
    println!(
        "restore killed in step '{}': after the restart it ended {}",
        caught["steps"][1]["name"].as_str().unwrap_or_default(),
        r["status"]
    );
    match r["status"].as_str() {
        Some("Success") => {
            assert_eq!(rows(&sites, site).await, before_rows, "fully restored");
            assert_eq!(files(&sites.join(site)), before_files);
        }
        _ => {
            assert_eq!(r["error"], "interrupted", "{r:#}");
            assert_eq!(
                rows(&sites, site).await,
                changed_rows,
                "as before the restore"
            );
        }
    }
    assert!(
        leftovers_in(&data_dir).is_empty(),
        "{:?}",
        leftovers_in(&data_dir)
    );
    // The site still works for later jobs.
    let id = child
        .submit("Install App on Site", json!({"name": site, "app": "crm"}))
        .await;
    ok(&child.wait(&id).await);
    drop(child);
}
