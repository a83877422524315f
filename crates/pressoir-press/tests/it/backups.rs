//! press.api.site.backup / backups / restore, with the agent backing up to the real S3
//! service (`pressoir-objects`, in this process).

use crate::common::*;
use pressoir_core::{Secret, Shutdown};
use serde_json::json;

const KEY: &str = "agent";
const SECRET: &str = "agent-s3-secret-0123456789";

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
    let opts = Opts {
        agent_storage: Some(pressoir_agent::StorageConfig::new(
            url,
            "backups",
            KEY,
            Secret::new(SECRET),
        )),
        ..Opts::default()
    };
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
        agent_storage: Some(pressoir_agent::StorageConfig::new(
            url,
            "backups",
            KEY,
            Secret::new(SECRET),
        )),
        backup_policies: vec![pressoir_press::backup_policy::BackupPolicy {
            plan: "Starter".into(),
            every: std::time::Duration::from_secs(3600),
            keep: 7,
        }],
        ..Opts::default()
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
