//! press.api.site.backup / backups / restore, with the agent backing up to the real S3
//! service (`pressoir-objects`, in this process).

use crate::common::*;
use pressoir_core::{Secret, Shutdown};
use serde_json::json;

const KEY: &str = "agent";
const SECRET: &str = "agent-s3-secret-0123456789";
/// A key that may read the backups but not delete them.
const READER: &str = "reader";
const READER_SECRET: &str = "reader-s3-secret-0123456789";

/// The agent's offsite storage: bucket `backups` on the S3 endpoint at `url`, with a key.
fn storage(url: &str, key: &str, secret: &str) -> Option<pressoir_agent::StorageConfig> {
    Some(pressoir_agent::StorageConfig::new(
        url.to_string(),
        "backups",
        key,
        Secret::new(secret),
    ))
}

/// A cloud whose agent backs up to `url` with the agent's own key.
fn backed_up_to(url: &str) -> Opts {
    Opts {
        agent_storage: storage(url, KEY, SECRET),
        ..Opts::default()
    }
}

/// A backup policy for the Starter plan.
fn starter_policy(
    every: std::time::Duration,
    keep: usize,
) -> Vec<pressoir_press::backup_policy::BackupPolicy> {
    vec![pressoir_press::backup_policy::BackupPolicy {
        plan: "Starter".into(),
        every,
        keep,
    }]
}

async fn start_s3() -> (String, tempfile::TempDir, Shutdown) {
    let dir = tempfile::tempdir().unwrap();
    let mut c = pressoir_objects::Config::new(
        dir.path().join("data"),
        "minioadmin",
        Secret::new("admin-secret-0123456789"),
    );
    c.keys.push(pressoir_objects::AccessKey::new(
        KEY,
        Secret::new(SECRET),
        pressoir_objects::Policy::buckets(&["backups"]),
    ));
    c.keys.push(pressoir_objects::AccessKey::new(
        READER,
        Secret::new(READER_SECRET),
        pressoir_objects::Policy {
            read_only: true,
            buckets: None,
        },
    ));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let sd = Shutdown::new();
    let router = pressoir_objects::app(c, sd.clone()).await.unwrap();
    tokio::spawn(pressoir_core::serve(l, router, sd.clone()));
    (format!("http://{addr}"), dir, sd)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_is_backed_up_listed_and_restored() {
    let (url, _dir, sd) = start_s3().await;
    let opts = backed_up_to(&url);
    for backend in backends() {
        let cloud = Cloud::start(&backend, opts.clone()).await;
        let admin = cloud.admin().await;
        let (site, _) = admin.new_site("backed", &["frappe"]).await;
        admin.wait_status(&site, "Active", 20).await;
        let dir = cloud
            .agent_dir()
            .join("benches/bench-0001/sites")
            .join(&site);
        std::fs::create_dir_all(dir.join("public/files")).unwrap();
        std::fs::write(dir.join("public/files/a.txt"), "before").unwrap();

        let (s, body) = admin
            .post(
                "press.api.site.backup",
                json!({"name": site, "with_files": true}),
            )
            .await;
        assert_eq!(s, 200, "{body}");
        let job = admin
            .wait_job(body["message"]["job"].as_str().unwrap(), 20)
            .await;
        assert_eq!(job["status"], "Success", "{job}");

        let (s, body) = admin
            .get("press.api.site.backups", &[("name", &site)])
            .await;
        assert_eq!(s, 200, "{body}");
        let list = body["message"].as_array().unwrap();
        assert_eq!(list.len(), 1, "{body}");
        let b = &list[0];
        assert_eq!(b["status"], "Success");
        assert_eq!(b["with_files"], true);
        assert!(
            b["size"].as_u64().unwrap() > 0 && b["creation"].is_string(),
            "{b}"
        );
        let name = b["name"].as_str().unwrap().to_string();
        assert!(name.starts_with(&format!("{site}/")), "{name}");

        // Change a file, restore: it comes back.
        std::fs::write(dir.join("public/files/a.txt"), "after").unwrap();
        let (s, body) = admin
            .post(
                "press.api.site.restore",
                json!({"name": site, "backup": name}),
            )
            .await;
        assert_eq!(s, 200, "{body}");
        let job = admin
            .wait_job(body["message"]["job"].as_str().unwrap(), 20)
            .await;
        assert_eq!(job["status"], "Success", "{job}");
        assert_eq!(
            std::fs::read_to_string(dir.join("public/files/a.txt")).unwrap(),
            "before"
        );

        // A backup that does not exist: the job fails clearly, the site stays Active.
        let (s, body) = admin
            .post(
                "press.api.site.restore",
                json!({"name": site, "backup": "nope-1"}),
            )
            .await;
        assert_eq!(s, 200, "{body}");
        let job = admin
            .wait_job(body["message"]["job"].as_str().unwrap(), 20)
            .await;
        assert_eq!(job["status"], "Failure", "{job}");
        assert!(
            job["error"].as_str().unwrap().contains("does not exist"),
            "{job}"
        );
        let (_, body) = admin.get("press.api.site.get", &[("name", &site)]).await;
        assert_eq!(body["message"]["status"], "Active");
        let (s, body) = admin
            .post(
                "press.api.site.restore",
                json!({"name": site, "backup": "../x y"}),
            )
            .await;
        assert_eq!(s, 400, "{body}");
        let (s, _) = admin
            .post("press.api.site.backups", json!({"name": "nosuch"}))
            .await;
        assert_eq!(s, 404);

        // Archive takes an offsite backup first; it is listed with the others.
        let (s, body) = admin
            .post("press.api.site.archive", json!({"name": site}))
            .await;
        assert_eq!(s, 200, "{body}");
        let job = admin
            .wait_job(body["message"]["job"].as_str().unwrap(), 20)
            .await;
        assert_eq!(job["status"], "Success", "{job}");
        let steps: Vec<_> = job["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["step_name"].clone())
            .collect();
        assert_eq!(
            steps,
            [
                json!("Backup Site"),
                json!("Upload Site Backup"),
                json!("Archive Site")
            ]
        );
        admin.wait_status(&site, "Archived", 20).await;
        let (_, body) = admin
            .get("press.api.site.backups", &[("name", &site)])
            .await;
        let list = body["message"].as_array().unwrap();
        assert_eq!(list.len(), 2, "{body}");
        assert_eq!(list[0]["job_type"], "Archive Site");
        assert!(
            list[0]["name"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{site}/")),
            "{body}"
        );

        // ...unless told not to.
        let (other, _) = admin.new_site("nobackup", &["frappe"]).await;
        admin.wait_status(&other, "Active", 20).await;
        let (s, body) = admin
            .post(
                "press.api.site.archive",
                json!({"name": other, "skip_backup": true}),
            )
            .await;
        assert_eq!(s, 200, "{body}");
        let job = admin
            .wait_job(body["message"]["job"].as_str().unwrap(), 20)
            .await;
        assert_eq!(job["status"], "Success", "{job}");
        assert_eq!(job["steps"].as_array().unwrap().len(), 1, "{job}");
        let (_, body) = admin
            .get("press.api.site.backups", &[("name", &other)])
            .await;
        assert_eq!(body["message"], json!([]));
        cloud.shutdown().await;
    }
    sd.trigger();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_backup_policy_backs_its_sites_up() {
    let (url, _dir, sd) = start_s3().await;
    let opts = Opts {
        backup_policies: starter_policy(std::time::Duration::from_secs(3600), 7),
        ..backed_up_to(&url)
    };
    for backend in backends() {
        let cloud = Cloud::start(&backend, opts.clone()).await;
        let admin = cloud.admin().await;
        let (site, _) = admin.new_site("policy", &["frappe"]).await;
        admin.wait_status(&site, "Active", 20).await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let list = loop {
            let (_, body) = admin
                .get("press.api.site.backups", &[("name", &site)])
                .await;
            let list = body["message"].as_array().cloned().unwrap_or_default();
            if list.iter().any(|b| b["status"] == "Success") {
                break list;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no scheduled backup: {body}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        // One per interval: the scheduler ticks every 50 ms but queues no second backup.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let (_, body) = admin
            .get("press.api.site.backups", &[("name", &site)])
            .await;
        assert_eq!(
            body["message"].as_array().unwrap().len(),
            1,
            "{body} (first: {list:?})"
        );
        cloud.shutdown().await;
    }
    sd.trigger();
}

/// The site's agent-side folder.
fn site_dir(cloud: &Cloud, site: &str) -> std::path::PathBuf {
    cloud
        .agent_dir()
        .join("benches/bench-0001/sites")
        .join(site)
}

async fn site_db(cloud: &Cloud, site: &str) -> sqlx::SqliteConnection {
    use sqlx::Connection;
    let dir = site_dir(cloud, site);
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("site_config.json")).unwrap()).unwrap();
    let db = dir
        .join("db")
        .join(format!("{}.db", config["db_name"].as_str().unwrap()));
    sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap()
}

/// Every row of the site's notes and users, and its public files, as text.
async fn site_data(cloud: &Cloud, site: &str) -> Vec<String> {
    use sqlx::{Connection, Row};
    let mut c = site_db(cloud, site).await;
    let mut out = Vec::new();
    for q in [
        "SELECT name || '|' || content FROM tabNote ORDER BY name",
        "SELECT name || '|' || user_type FROM tabUser ORDER BY name",
        "SELECT name || '|' || password FROM __Auth ORDER BY name",
    ] {
        for r in sqlx::query(q).fetch_all(&mut c).await.unwrap() {
            out.push(r.get::<String, _>(0));
        }
    }
    c.close().await.unwrap();
    let files = site_dir(cloud, site).join("public/files");
    let mut names: Vec<_> = std::fs::read_dir(&files)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    for n in names {
        out.push(format!(
            "{}={}",
            n.to_string_lossy(),
            std::fs::read_to_string(files.join(&n)).unwrap()
        ));
    }
    out
}

async fn wait_success(c: &Client, body: &serde_json::Value) -> serde_json::Value {
    let job = c
        .wait_job(body["message"]["job"].as_str().unwrap(), 30)
        .await;
    assert_eq!(job["status"], "Success", "{job}");
    job
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_site_is_made_from_a_backup_of_an_archived_site() {
    let (url, _dir, sd) = start_s3().await;
    let opts = backed_up_to(&url);
    for backend in backends() {
        let cloud = Cloud::start(&backend, opts.clone()).await;
        let admin = cloud.admin().await;
        let (site, _) = admin.new_site("original", &["frappe", "crm"]).await;
        admin.wait_status(&site, "Active", 20).await;
        let mut c = site_db(&cloud, &site).await;
        sqlx::query("CREATE TABLE tabNote (name TEXT PRIMARY KEY, content TEXT)")
            .execute(&mut c)
            .await
            .unwrap();
        for i in 0..50 {
            sqlx::query("INSERT INTO tabNote VALUES ($1, $2)")
                .bind(format!("note-{i}"))
                .bind(format!("contenu n°{i} ✓"))
                .execute(&mut c)
                .await
                .unwrap();
        }
        drop(c);
        std::fs::create_dir_all(site_dir(&cloud, &site).join("public/files")).unwrap();
        std::fs::write(
            site_dir(&cloud, &site).join("public/files/a.txt"),
            "à garder",
        )
        .unwrap();
        let before = site_data(&cloud, &site).await;

        let (s, body) = admin
            .post(
                "press.api.site.backup",
                json!({"name": site, "with_files": true}),
            )
            .await;
        assert_eq!(s, 200, "{body}");
        wait_success(&admin, &body).await;
        let (_, body) = admin
            .get("press.api.site.backups", &[("name", &site)])
            .await;
        let backup = body["message"][0]["name"].as_str().unwrap().to_string();
        let (s, body) = admin
            .post("press.api.site.archive", json!({"name": site}))
            .await;
        assert_eq!(s, 200, "{body}");
        wait_success(&admin, &body).await;
        admin.wait_status(&site, "Archived", 20).await;
        assert!(!site_dir(&cloud, &site).exists());

        // Another team does not see the backup at all.
        let (s, body) = admin
            .post("press.api.account.new_user", json!({"email": "eve@example.com", "full_name": "Eve", "password": "eve-password-1"}))
            .await;
        assert_eq!(s, 200, "{body}");
        let (s, body) = admin
            .post(
                "press.api.account.new_team",
                json!({"name": "eveteam", "title": "Eve", "user": "eve@example.com"}),
            )
            .await;
        assert_eq!(s, 200, "{body}");
        let eve = cloud.login_token("eve@example.com", "eve-password-1").await;
        let (s, body) = eve
            .post(
                "press.api.site.new",
                json!({"site": {"name": "stolen", "plan": "Starter", "backup": backup}}),
            )
            .await;
        assert_eq!(
            (s, body["exc_type"].as_str()),
            (404, Some("DoesNotExistError")),
            "{body}"
        );
        let (s, _) = admin
            .post(
                "press.api.site.new",
                json!({"site": {"name": "ghost", "plan": "Starter", "backup": format!("{site}/20200101-1")}}),
            )
            .await;
        assert_eq!(s, 404);
        let (s, body) = admin
            .post(
                "press.api.site.new",
                json!({"site": {"name": "bad-name", "plan": "Starter", "backup": "../x y"}}),
            )
            .await;
        assert_eq!(s, 400, "{body}");

        // The team's own backup, of its archived site: the same data under a new name.
        let (s, body) = admin
            .post(
                "press.api.site.new",
                json!({"site": {"name": "restored", "plan": "Starter", "apps": ["frappe", "hrms"], "backup": backup}}),
            )
            .await;
        assert_eq!(s, 200, "{body}");
        let copy = body["message"]["site"].as_str().unwrap().to_string();
        let job = wait_success(&admin, &body).await;
        assert_eq!(job["job_type"], "New Site from Backup");
        let got = admin.wait_status(&copy, "Active", 20).await;
        assert_eq!(got["apps"], json!(["frappe", "crm", "hrms"]), "{got}");
        assert_eq!(
            site_data(&cloud, &copy).await,
            before,
            "the data is identical"
        );

        // A backup that failed cannot make a site: 400. Its folder gone, the backup fails.
        let (other, _) = admin.new_site("doomed", &["frappe"]).await;
        admin.wait_status(&other, "Active", 20).await;
        std::fs::remove_dir_all(site_dir(&cloud, &other)).unwrap();
        let (_, body) = admin
            .post("press.api.site.backup", json!({"name": other}))
            .await;
        let failed = body["message"]["job"].as_str().unwrap().to_string();
        let job = admin.wait_job(&failed, 20).await;
        assert_eq!(job["status"], "Failure", "{job}");
        let (s, body) = admin
            .post(
                "press.api.site.new",
                json!({"site": {"name": "fromfail", "plan": "Starter", "backup": failed}}),
            )
            .await;
        assert_eq!(
            (s, body["exc_type"].as_str()),
            (400, Some("ValidationError")),
            "{body}"
        );
        assert!(server_message(&body).contains("Failure"), "{body}");
        cloud.shutdown().await;
    }
    sd.trigger();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_backups_beyond_keep_are_deleted_oldest_first() {
    use object_store::ObjectStore;
    let (url, _dir, sd) = start_s3().await;
    let s3 = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(&url)
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_bucket_name("backups")
        .with_access_key_id(KEY)
        .with_secret_access_key(SECRET)
        .build()
        .unwrap();
    let policy = |every_ms| starter_policy(std::time::Duration::from_millis(every_ms), 2);
    let opts = backed_up_to(&url);
    for backend in backends() {
        let mut cloud = Cloud::start(&backend, opts.clone()).await;
        let admin = cloud.admin().await;
        let (site, _) = admin.new_site("pruned", &["frappe"]).await;
        admin.wait_status(&site, "Active", 20).await;
        // One backup on demand first: never pruned, never counted.
        let (_, body) = admin
            .post("press.api.site.backup", json!({"name": site}))
            .await;
        wait_success(&admin, &body).await;

        // A backup every 200 ms until five scheduled ones succeeded...
        cloud.stop_press().await;
        cloud.opts.backup_policies = policy(200);
        cloud.start_press(None).await;
        let jobs = |admin: Client, site: String| async move {
            let (_, body) = admin
                .get(
                    "press.api.site.jobs",
                    &[("name", &site), ("limit_page_length", "1000")],
                )
                .await;
            body["message"].as_array().cloned().unwrap_or_default()
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let done = jobs(admin.clone(), site.clone())
                .await
                .iter()
                .filter(|j| j["job_type"] == "Backup Site" && j["status"] == "Success")
                .count();
            if done >= 6 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "only {done} backups");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        // ...then a policy that takes none for an hour: pruning settles at keep (2).
        cloud.stop_press().await;
        cloud.opts.backup_policies = policy(3_600_000);
        cloud.start_press(None).await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let list = loop {
            let all = jobs(admin.clone(), site.clone()).await;
            let busy = all
                .iter()
                .any(|j| j["status"] != "Success" && j["status"] != "Failure");
            let (_, body) = admin
                .get("press.api.site.backups", &[("name", &site)])
                .await;
            let list = body["message"].as_array().cloned().unwrap();
            let scheduled = list.iter().filter(|b| b["scheduled"] == true).count();
            if !busy && scheduled == 2 {
                break list;
            }
            assert!(std::time::Instant::now() < deadline, "{body}");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        // The listed backups: the newest two scheduled ones and the one on demand, all in S3.
        assert_eq!(list.len(), 3, "{list:?}");
        assert_eq!(list[2]["scheduled"], false);
        for b in &list {
            assert_eq!(b["status"], "Success");
            let key = format!("sites/{}/manifest.json", b["name"].as_str().unwrap());
            s3.head(&key.as_str().into()).await.unwrap();
        }
        // Every deleted one is older than those kept, and gone from S3.
        let all = jobs(admin.clone(), site.clone()).await;
        let deletions: Vec<&serde_json::Value> = all
            .iter()
            .filter(|j| j["job_type"] == "Delete Site Backup")
            .collect();
        assert!(deletions.len() >= 3, "{deletions:?}");
        // Ids start with their time, so the oldest kept one bounds the deleted ones.
        let oldest_kept = list[1]["name"].as_str().unwrap().to_string();
        for d in deletions {
            assert_eq!(d["status"], "Success", "{d}");
            let job = admin.wait_job(d["name"].as_str().unwrap(), 5).await;
            let name = job["result"]["backup"].as_str().unwrap().to_string();
            assert!(name < oldest_kept, "{name} deleted, {oldest_kept} kept");
            assert!(list.iter().all(|b| b["name"] != name.as_str()));
            let key = format!("sites/{name}/manifest.json");
            assert!(
                s3.head(&key.as_str().into()).await.is_err(),
                "{name} is still in S3"
            );
        }
        cloud.shutdown().await;
    }
    sd.trigger();
}

/// Press's store on the cloud's database, to act as the backup scheduler does and to read
/// job times to the millisecond.
async fn store_of(cloud: &Cloud) -> pressoir_press::store::Store {
    let cfg = cloud.press_config();
    pressoir_press::open_store(&cfg.database_url, &cfg.db_schema, 2)
        .await
        .unwrap()
}

/// Takes a backup on demand; returns its name.
async fn take_backup(admin: &Client, site: &str) -> String {
    let (s, body) = admin
        .post("press.api.site.backup", json!({"name": site}))
        .await;
    assert_eq!(s, 200, "{body}");
    let job = wait_success(admin, &body).await;
    job["result"]["backup"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_is_never_both_restored_and_deleted() {
    use pressoir_press::backup_policy::queue_deletion;
    let (url, _dir, sd) = start_s3().await;
    let opts = backed_up_to(&url);
    for backend in backends() {
        let mut cloud = Cloud::start(&backend, opts.clone()).await;
        let admin = cloud.admin().await;
        let (site, _) = admin.new_site("racing", &["frappe"]).await;
        admin.wait_status(&site, "Active", 20).await;
        let mut names = Vec::new();
        for _ in 0..7 {
            names.push(take_backup(&admin, &site).await);
        }
        let store = store_of(&cloud).await;
        let row = store.site(None, &site).await.unwrap().unwrap();
        // From here no job runs: restores and deletions stay unfinished.
        cloud.stop_agent().await;

        // The scheduler read the site's jobs before a restore and a new site from a backup
        // were accepted; its deletions of those backups, recorded after, are refused.
        let (s, body) = admin
            .post(
                "press.api.site.restore",
                json!({"name": site, "backup": names[0]}),
            )
            .await;
        assert_eq!(s, 200, "{body}");
        let restore = body["message"]["job"].as_str().unwrap().to_string();
        let (s, body) = admin
            .post(
                "press.api.site.new",
                json!({"site": {"name": "racecopy", "plan": "Starter", "backup": names[1]}}),
            )
            .await;
        assert_eq!(s, 200, "{body}");
        let copy = body["message"]["job"].as_str().unwrap().to_string();
        for b in &names[..2] {
            let e = queue_deletion(&store, &row, b).await.unwrap_err();
            assert!(e.to_string().contains("in use"), "{b}: {e}");
        }

        // A deletion recorded first: a restore or a new site from that backup is refused.
        let deletion = queue_deletion(&store, &row, &names[2]).await.unwrap();
        assert!(queue_deletion(&store, &row, &names[2]).await.is_err());
        let [restore_answer, new_answer] = uses_answered(&admin, &site, &names[2]).await;
        assert_eq!(
            restore_answer.0,
            (400, "ValidationError".into()),
            "{}",
            restore_answer.1
        );
        assert!(
            server_message(&restore_answer.1).contains("being deleted"),
            "{}",
            restore_answer.1
        );
        assert_eq!(
            new_answer.0,
            (400, "ValidationError".into()),
            "{}",
            new_answer.1
        );

        // Both at once: of a restore and a deletion of the same backup, exactly one is taken.
        for b in &names[3..] {
            let restore = admin.post("press.api.site.restore", json!({"name": site, "backup": b}));
            let ((s, body), deleted) = tokio::join!(restore, queue_deletion(&store, &row, b));
            assert!(
                (s == 200) != deleted.is_ok(),
                "{b}: restore {s} {body}, deletion {deleted:?}"
            );
        }

        // The jobs run: the restore and the new site find their backups, the deletion
        // succeeds, and from then on its backup does not exist.
        cloud.start_agent(None).await;
        let job = admin.wait_job(&restore, 30).await;
        assert_eq!(job["status"], "Success", "{job}");
        let job = admin.wait_job(&copy, 30).await;
        assert_eq!(job["status"], "Success", "{job}");
        let job = admin.wait_job(&deletion, 30).await;
        assert_eq!(job["status"], "Success", "{job}");
        for (answer, body) in uses_answered(&admin, &site, &names[2]).await {
            assert_eq!(answer, (404, "DoesNotExistError".into()), "{body}");
        }
        // The restore done, its backup may be deleted.
        queue_deletion(&store, &row, &names[0]).await.unwrap();
        store.db.pool.close().await;
        cloud.shutdown().await;
    }
    sd.trigger();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_backup_deletion_is_retried_with_a_backoff_that_survives_a_restart() {
    use pressoir_press::backup_policy::RetryBackoff;
    use std::time::Duration;
    let (url, _dir, sd) = start_s3().await;
    let policy = |every_ms, keep| starter_policy(Duration::from_millis(every_ms), keep);
    let backoff = RetryBackoff {
        base: Duration::from_millis(300),
        cap: Duration::from_millis(1200),
    };
    let opts = Opts {
        backup_delete_backoff: backoff,
        ..backed_up_to(&url)
    };
    for backend in backends() {
        let mut cloud = Cloud::start(&backend, opts.clone()).await;
        let admin = cloud.admin().await;
        let (site, _) = admin.new_site("backoff", &["frappe"]).await;
        admin.wait_status(&site, "Active", 20).await;
        let store = store_of(&cloud).await;
        let row = store.site(None, &site).await.unwrap().unwrap();
        let deletions = || async {
            let jobs = store.site_jobs(&row.id, 0, 1000).await.unwrap();
            let mut d: Vec<_> = jobs
                .into_iter()
                .filter(|j| j.job_type == "Delete Site Backup")
                .collect();
            d.reverse();
            d
        };

        // Two scheduled backups, none pruned.
        cloud.stop_press().await;
        cloud.opts.backup_policies = policy(100, 100);
        cloud.start_press(None).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (_, body) = admin
                .get("press.api.site.backups", &[("name", &site)])
                .await;
            let done = body["message"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|b| b["status"] == "Success")
                .count();
            if done >= 2 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{body}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Then an agent whose key may not delete, and a policy that keeps one: the older
        // backup's deletion fails, again and again, while the scheduler ticks every 50 ms.
        cloud.stop_press().await;
        cloud.stop_agent().await;
        cloud.opts.agent_storage = storage(&url, READER, READER_SECRET);
        cloud.start_agent(None).await;
        cloud.opts.backup_policies = policy(3_600_000, 1);
        cloud.start_press(None).await;
        let failed = |n: usize| async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            loop {
                let d = deletions().await;
                if d.iter().filter(|j| j.status == "Failure").count() >= n {
                    return;
                }
                assert!(std::time::Instant::now() < deadline, "{d:?}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        failed(3).await;
        // Restarted right after a failure, Press still waits out the backoff.
        cloud.stop_press().await;
        cloud.start_press(None).await;
        failed(5).await;
        cloud.stop_press().await;
        // Each backup's attempts (one or two backups are pruned, each at its own pace)
        // waited the backoff after the failure before them: 300, 600, 1200, 1200 ms.
        let mut by_backup: std::collections::BTreeMap<String, Vec<_>> = Default::default();
        for j in deletions().await {
            by_backup.entry(j.request_data.clone()).or_default().push(j);
        }
        for (backup, d) in &by_backup {
            for (k, pair) in d.windows(2).enumerate() {
                let (before, next) = (&pair[0], &pair[1]);
                assert_eq!(before.status, "Failure", "{before:?}");
                let waited = next.created - before.ended.unwrap();
                let wait = backoff.after(k as u32 + 1).as_millis() as i64;
                assert!(
                    waited >= wait,
                    "{backup}: attempt {} came {waited} ms after a failure, not {wait}",
                    k + 2
                );
            }
            assert!(
                d.len() <= 6,
                "{backup}: {} attempts; without the backoff there is one per tick",
                d.len()
            );
        }

        // With a key that may delete, the next attempt succeeds.
        cloud.stop_agent().await;
        cloud.opts.agent_storage = storage(&url, KEY, SECRET);
        cloud.start_agent(None).await;
        cloud.start_press(None).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !deletions().await.iter().any(|j| j.status == "Success") {
            assert!(
                std::time::Instant::now() < deadline,
                "{:?}",
                deletions().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        store.db.pool.close().await;
        cloud.shutdown().await;
    }
    sd.trigger();
}

/// How Press answers a restore of `backup` onto `site` and a new site made from it: each
/// answer's (status, `exc_type`), and its body.
async fn uses_answered(
    admin: &Client,
    site: &str,
    backup: &str,
) -> [((u16, String), serde_json::Value); 2] {
    let answer = |(s, body): (u16, serde_json::Value)| {
        let exc = body["exc_type"].as_str().unwrap_or("").to_string();
        ((s, exc), body)
    };
    let restore = admin
        .post(
            "press.api.site.restore",
            json!({"name": site, "backup": backup}),
        )
        .await;
    let new_site = admin
        .post(
            "press.api.site.new",
            json!({"site": {"name": "latecopy", "plan": "Starter", "backup": backup}}),
        )
        .await;
    [answer(restore), answer(new_site)]
}
