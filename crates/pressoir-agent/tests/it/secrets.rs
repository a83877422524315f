//! Secrets in job data never come back out: not in replies, logs, step output or the store.

use crate::common::*;
use serde_json::{Value, json};
use sqlx::{Connection, Row};

const ADMIN: &str = "Adm1n-Pa55word-That-Must-Not-Leak";
const ROOT: &str = "Mariadb-Root-Secret-Never-Stored";
const FAILED_ADMIN: &str = "Failed-Job-Admin-Password-Wiped";

#[tokio::test]
async fn secrets_are_absent_from_replies_logs_and_the_store() {
    let a = TestAgent::start(&None, |_| {}).await;
    let data = json!({"name": "secret.localhost", "apps": ["frappe"], "admin_password": ADMIN, "mariadb_root_password": ROOT});
    let r = a
        .post("/agent/job")
        .header("X-Agent-Job-Id", "S-1")
        .json(&json!({"job_type": "New Site", "data": data}))
        .send()
        .await
        .unwrap();
    let submit = r.text().await.unwrap();
    let id = serde_json::from_str::<Value>(&submit).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // While it may still be pending or running:
    let early = a
        .get(&format!("/agent/job/{id}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let done = a.wait(&id).await;
    assert_eq!(done["status"], "Success", "{done}");
    let mut replies = vec![submit, early, done.to_string()];
    for path in [
        "/agent/jobs",
        "/agent/jobs?agent_job_ids=S-1",
        &format!("/agent/jobs?ids={id}"),
        &format!("/jobs/{id}"),
    ] {
        replies.push(a.get(path).send().await.unwrap().text().await.unwrap());
    }
    for text in &replies {
        assert!(
            !text.contains(ADMIN) && !text.contains(ROOT),
            "a reply leaks a secret: {text}"
        );
    }
    let site_db_password = {
        let c: Value = serde_json::from_slice(
            &std::fs::read(a.sites().join("secret.localhost/site_config.json")).unwrap(),
        )
        .unwrap();
        c["db_password"].as_str().unwrap().to_string()
    };
    for text in &replies {
        assert!(
            !text.contains(&site_db_password),
            "a reply leaks the database password"
        );
    }
    // A job that fails (the site exists now) wipes its secrets too.
    let failed = a
        .run(
            "New Site",
            json!({"name": "secret.localhost", "apps": ["frappe"], "admin_password": FAILED_ADMIN}),
        )
        .await;
    assert_eq!(failed["status"], "Failure", "{failed}");
    let logs = logs();
    assert!(
        !logs.contains(ADMIN) && !logs.contains(ROOT) && !logs.contains(&site_db_password),
        "the logs leak a secret"
    );
    assert!(!logs.contains(PASSWORD), "the logs leak the agent password");

    // The store wiped the secrets when the job ended, and never held the unknown field.
    let (_root, config) = a.stop().await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&config.data_dir)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "the data dir is private");
    }
    let db = config.data_dir.join("agent.sqlite");
    let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let row = sqlx::query("SELECT data, secrets FROM jobs WHERE agent_job_id = 'S-1'")
        .fetch_one(&mut c)
        .await
        .unwrap();
    let stored: String = row.get(0);
    let secrets: Option<String> = row.get(1);
    assert!(secrets.is_none(), "secrets are wiped");
    assert!(
        !stored.contains(ADMIN) && !stored.contains(ROOT),
        "{stored}"
    );
    let outputs: Vec<String> = sqlx::query("SELECT COALESCE(output, '') FROM steps")
        .fetch_all(&mut c)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for o in outputs {
        assert!(!o.contains(ADMIN) && !o.contains(&site_db_password), "{o}");
    }
    // Not even in the file's free space: what a wipe frees is overwritten.
    let bytes = std::fs::read(&db).unwrap();
    let raw = String::from_utf8_lossy(&bytes);
    for secret in [ADMIN, ROOT, FAILED_ADMIN] {
        assert!(!raw.contains(secret), "agent.sqlite holds {secret}");
    }
    // The site keeps only a hash of the administrator password.
    let site = std::fs::read_dir(
        config
            .data_dir
            .join("benches/bench-0001/sites/secret.localhost/db"),
    )
    .unwrap();
    for f in site {
        let bytes = std::fs::read(f.unwrap().path()).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains(ADMIN));
    }
}
