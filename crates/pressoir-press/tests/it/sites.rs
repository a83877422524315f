use crate::common::*;
use serde_json::json;

#[tokio::test]
async fn a_site_goes_from_new_to_active_to_archived() {
    for b in backends() {
        let cloud = Cloud::start(&b, Opts::default()).await;
        let admin = cloud.admin().await;

        // The reference's call.
        let (s, body) = admin
            .post("press.api.site.new", json!({"site": {"name": "mysite", "apps": ["frappe", "erpnext"], "plan": "Starter"}}))
            .await;
        assert_eq!(s, 200, "{body}");
        assert_eq!(body["message"]["site"], "mysite.cloud.localhost");
        let job = body["message"]["job"].as_str().unwrap().to_string();

        let site = admin
            .wait_status("mysite.cloud.localhost", "Active", 20)
            .await;
        assert_eq!(site["apps"], json!(["frappe", "erpnext"]));
        assert_eq!(site["plan"], "Starter");
        assert_eq!(site["server"], "app-server-1");
        assert_eq!(site["bench"], "bench-0001");
        // The agent really made it.
        let dir = cloud
            .agent_dir()
            .join("benches/bench-0001/sites/mysite.cloud.localhost");
        assert!(dir.join("site_config.json").exists(), "{dir:?}");

        let j = admin.wait_job(&job, 10).await;
        assert_eq!(j["status"], "Success");
        assert_eq!(j["job_type"], "New Site");
        let steps = j["steps"].as_array().unwrap();
        assert!(steps.len() >= 3, "{j}");
        assert!(steps.iter().all(|s| s["status"] == "Success"), "{j}");
        assert!(j["start"].is_string() && j["end"].is_string());

        let (s, body) = admin
            .get("press.api.site.jobs", &[("name", "mysite.cloud.localhost")])
            .await;
        assert_eq!(s, 200);
        assert_eq!(body["message"][0]["name"], job.as_str());

        // list (and its Frappe name, all), with a status filter.
        let (s, body) = admin.get("press.api.site.list", &[]).await;
        assert_eq!(s, 200);
        let row = &body["message"][0];
        assert_eq!(row["name"], "mysite.cloud.localhost");
        for k in ["status", "plan", "apps", "server", "bench", "creation"] {
            assert!(!row[k].is_null(), "{k} missing in {row}");
        }
        let (_, body) = admin
            .post(
                "press.api.site.all",
                json!({"site_filter": {"status": "Broken"}}),
            )
            .await;
        assert_eq!(body["message"], json!([]));
        let (_, body) = admin
            .get("press.api.site.list", &[("status", "Active")])
            .await;
        assert_eq!(body["message"].as_array().unwrap().len(), 1);

        // Apps and config drive their agent jobs.
        let (s, body) = admin
            .post(
                "press.api.site.install_app",
                json!({"name": "mysite.cloud.localhost", "app": "hrms"}),
            )
            .await;
        assert_eq!(s, 200, "{body}");
        let j = admin
            .wait_job(body["message"]["job"].as_str().unwrap(), 10)
            .await;
        assert_eq!(j["status"], "Success", "{j}");
        let (_, body) = admin.get("press.api.site.get", &[("name", "mysite")]).await;
        assert_eq!(
            body["message"]["apps"],
            json!(["frappe", "erpnext", "hrms"])
        );
        let (s, body) = admin
            .post(
                "press.api.site.uninstall_app",
                json!({"name": "mysite.cloud.localhost", "app": "erpnext"}),
            )
            .await;
        assert_eq!(s, 200, "{body}");
        admin
            .wait_job(body["message"]["job"].as_str().unwrap(), 10)
            .await;
        let (_, body) = admin.get("press.api.site.get", &[("name", "mysite")]).await;
        assert_eq!(body["message"]["apps"], json!(["frappe", "hrms"]));
        let (s, body) = admin
            .post(
                "press.api.site.update_config",
                json!({"name": "mysite.cloud.localhost", "config": {"mute_emails": 1}}),
            )
            .await;
        assert_eq!(s, 200, "{body}");
        let j = admin
            .wait_job(body["message"]["job"].as_str().unwrap(), 10)
            .await;
        assert_eq!(j["status"], "Success", "{j}");
        let cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("site_config.json")).unwrap()).unwrap();
        assert_eq!(cfg["mute_emails"], 1);
        let (_, body) = admin.get("press.api.site.get", &[("name", "mysite")]).await;
        assert_eq!(body["message"]["config"]["mute_emails"], 1);

        // Archive.
        let (s, body) = admin
            .post(
                "press.api.site.archive",
                json!({"name": "mysite.cloud.localhost"}),
            )
            .await;
        assert_eq!(s, 200, "{body}");
        admin
            .wait_status("mysite.cloud.localhost", "Archived", 20)
            .await;
        assert!(!dir.exists());
        let (s, body) = admin
            .post(
                "press.api.site.archive",
                json!({"name": "mysite.cloud.localhost"}),
            )
            .await;
        assert_eq!(s, 400, "{body}");
        assert_eq!(body["exc_type"], "ValidationError");
        let (s, _) = admin
            .post(
                "press.api.site.archive",
                json!({"name": "nosuchsite.cloud.localhost"}),
            )
            .await;
        assert_eq!(s, 404);
        let (_, body) = admin.get("press.api.site.list", &[]).await;
        assert_eq!(
            body["message"],
            json!([]),
            "archived sites leave the default list"
        );

        // The name is free again.
        admin.new_site("mysite", &["frappe"]).await;
        admin
            .wait_status("mysite.cloud.localhost", "Active", 20)
            .await;

        // Each change left its event in the outbox, in the same transaction.
        let cfg = cloud.press_config();
        let store = pressoir_press::open_store(&cfg.database_url, &cfg.db_schema, 1)
            .await
            .unwrap();
        let events: Vec<String> = store
            .pending_events(100)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.1)
            .collect();
        for e in ["site.created", "site.status_changed", "site.archived"] {
            assert!(events.iter().any(|x| x == e), "{e} missing from {events:?}");
        }
        assert_eq!(events.iter().filter(|e| *e == "site.created").count(), 2);
        assert_eq!(events.iter().filter(|e| *e == "site.archived").count(), 1);
        store.db.pool.close().await;
        cloud.shutdown().await;
    }
}

#[tokio::test]
async fn invalid_sites_answer_frappe_errors() {
    for b in backends() {
        let cloud = Cloud::start(&b, Opts::default()).await;
        let admin = cloud.admin().await;
        let new = |site: serde_json::Value| {
            let admin = admin.clone();
            async move {
                admin
                    .post("press.api.site.new", json!({ "site": site }))
                    .await
            }
        };
        let cases = [
            (
                json!({"name": "abc", "apps": ["frappe"], "plan": "Starter"}),
                400,
                "too short",
            ),
            (
                json!({"name": "-bad-name", "apps": ["frappe"], "plan": "Starter"}),
                400,
                "invalid characters",
            ),
            (
                json!({"name": "Upper", "apps": ["frappe"], "plan": "Starter"}),
                400,
                "invalid characters",
            ),
            (
                json!({"name": "x".repeat(33), "apps": ["frappe"], "plan": "Starter"}),
                400,
                "too long",
            ),
            (
                json!({"name": "goodname", "apps": ["erpnext", "frappe"], "plan": "Starter"}),
                400,
                "frappe",
            ),
            (
                json!({"name": "goodname", "apps": ["frappe", "erpnext", "erpnext"], "plan": "Starter"}),
                400,
                "more than once",
            ),
            (
                json!({"name": "goodname", "apps": ["frappe", "nosuchapp"], "plan": "Starter"}),
                400,
                "not available",
            ),
            (
                json!({"name": "goodname", "apps": ["frappe"], "plan": "Gold"}),
                404,
                "Plan Gold does not exist",
            ),
            (json!({"name": "goodname", "apps": ["frappe"]}), 400, "plan"),
            (
                json!({"name": "goodname", "apps": ["frappe"], "plan": "Starter", "bench": "nope"}),
                404,
                "Bench",
            ),
            (
                json!({"name": "goodname", "apps": ["frappe"], "plan": "Starter", "server": "nope"}),
                404,
                "Server",
            ),
        ];
        for (site, status, msg) in cases {
            let (s, body) = new(site.clone()).await;
            assert_eq!(s, status, "{site}: {body}");
            assert!(body["exc_type"].is_string(), "{body}");
            assert!(server_message(&body).contains(msg), "{site}: {body}");
        }
        // Frappe's clients send dict arguments as JSON text in a form.
        let r = admin
            .raw(reqwest::Method::POST, "press.api.site.new")
            .await
            .form(&[(
                "site",
                r#"{"name": "formsite", "apps": ["frappe"], "plan": "Starter"}"#,
            )]);
        let (s, body, _) = admin.send(r).await;
        assert_eq!(s, 200, "{body}");
        assert_eq!(body["message"]["site"], "formsite.cloud.localhost");
        // Taken names are 409.
        admin.new_site("takenname", &["frappe"]).await;
        let (s, body) =
            new(json!({"name": "takenname", "apps": ["frappe"], "plan": "Starter"})).await;
        assert_eq!(
            (s, body["exc_type"].as_str()),
            (409, Some("DuplicateEntryError")),
            "{body}"
        );

        // Malformed JSON is 400, not 500; so is a non-object body.
        let r = admin
            .raw(reqwest::Method::POST, "press.api.site.new")
            .await
            .header("Content-Type", "application/json")
            .body("{\"site\": ");
        let (s, body, _) = admin.send(r).await;
        assert_eq!(
            (s, body["exc_type"].as_str()),
            (400, Some("ValidationError")),
            "{body}"
        );
        let r = admin
            .raw(reqwest::Method::POST, "press.api.site.new")
            .await
            .header("Content-Type", "application/json")
            .body("[1,2]");
        assert_eq!(admin.send(r).await.0, 400);
        let (s, _) = admin
            .post("press.api.site.new", json!({"site": "not an object"}))
            .await;
        assert_eq!(s, 400);
        let (s, _) = admin.post("press.api.site.get", json!({})).await;
        assert_eq!(s, 400);
        let (s, body) = admin
            .post("press.api.site.get", json!({"name": "missing"}))
            .await;
        assert_eq!(
            (s, body["exc_type"].as_str()),
            (404, Some("DoesNotExistError"))
        );
        let (s, _) = admin.post("press.api.nope.nothing", json!({})).await;
        assert_eq!(s, 404);
        let (s, _) = admin
            .get("press.api.site.list", &[("status", "Bogus")])
            .await;
        assert_eq!(s, 400);
        let (s, _) = admin
            .post(
                "press.api.site.install_app",
                json!({"name": "takenname", "app": "nosuchapp"}),
            )
            .await;
        assert_eq!(s, 400);
        cloud.shutdown().await;
    }
}

/// `site.get` is served from memory between changes; every change made through this Press
/// shows on the very next read, and another team never gets a cached site.
#[tokio::test]
async fn site_reads_show_every_change_at_once() {
    for b in backends() {
        let cloud = Cloud::start(&b, Opts::default()).await;
        let admin = cloud.admin().await;
        let (site, _) = admin.new_site("cached", &["frappe"]).await;
        admin.wait_status(&site, "Active", 20).await;
        let get = |c: &Client| {
            let c = c.clone();
            let site = site.clone();
            async move {
                let (s, b) = c.get("press.api.site.get", &[("name", &site)]).await;
                assert_eq!(s, 200, "{b}");
                b["message"].clone()
            }
        };
        for _ in 0..3 {
            assert_eq!(get(&admin).await["plan"], "Starter");
        }

        // Another team, and the Administrator acting for it, never see the cached site.
        admin
            .post(
                "press.api.account.new_user",
                json!({"email": "bo@example.com", "full_name": "Bo", "password": "bo-password-1"}),
            )
            .await;
        admin
            .post(
                "press.api.account.new_team",
                json!({"name": "other", "title": "Other", "user": "bo@example.com"}),
            )
            .await;
        let bo = cloud.login_token("bo@example.com", "bo-password-1").await;
        let mut as_other = admin.clone();
        as_other.team = Some("other".into());
        for c in [&bo, &as_other] {
            let (s, body) = c.get("press.api.site.get", &[("name", &site)]).await;
            assert_eq!(
                (s, body["exc_type"].as_str()),
                (404, Some("DoesNotExistError"))
            );
        }

        // A plan change, then each job's effect, read once, right after it happened.
        let (s, body) = admin
            .post(
                "press.api.site.change_plan",
                json!({"name": site, "plan": "Pro"}),
            )
            .await;
        assert_eq!(s, 200, "{body}");
        assert_eq!(get(&admin).await["plan"], "Pro");

        let (s, body) = admin
            .post(
                "press.api.site.install_app",
                json!({"name": site, "app": "hrms"}),
            )
            .await;
        assert_eq!(s, 200, "{body}");
        admin
            .wait_job(body["message"]["job"].as_str().unwrap(), 20)
            .await;
        assert_eq!(get(&admin).await["apps"], json!(["frappe", "hrms"]));

        let (s, body) = admin
            .post(
                "press.api.site.update_config",
                json!({"name": site, "config": {"cached_key": 7}}),
            )
            .await;
        assert_eq!(s, 200, "{body}");
        admin
            .wait_job(body["message"]["job"].as_str().unwrap(), 20)
            .await;
        assert_eq!(get(&admin).await["config"]["cached_key"], 7);

        let (s, body) = admin
            .post("press.api.site.archive", json!({"name": site}))
            .await;
        assert_eq!(s, 200, "{body}");
        admin
            .wait_job(body["message"]["job"].as_str().unwrap(), 20)
            .await;
        assert_eq!(get(&admin).await["status"], "Archived");
        cloud.shutdown().await;
    }
}

/// Another replica's site and list caches follow a change within the site cache's lifetime.
#[tokio::test]
async fn a_replica_sees_a_change_within_the_site_cache_lifetime() {
    for b in backends() {
        let cloud = Cloud::start(&b, Opts::default()).await;
        let admin = cloud.admin().await;
        let (site, _) = admin.new_site("replicated", &["frappe"]).await;
        admin.wait_status(&site, "Active", 20).await;
        let sd = pressoir_core::Shutdown::new();
        let mut other = cloud.start_replica(sd.clone()).await;
        other.auth = admin.auth.clone();
        let (_, b) = other.get("press.api.site.get", &[("name", &site)]).await;
        assert_eq!(b["message"]["plan"], "Starter", "{b}");
        let (_, l) = other.get("press.api.site.list", &[]).await;
        assert_eq!(l["message"][0]["plan"], "Starter", "{l}");

        let (s, body) = admin
            .post(
                "press.api.site.change_plan",
                json!({"name": site, "plan": "Pro"}),
            )
            .await;
        assert_eq!(s, 200, "{body}");
        let changed = std::time::Instant::now();
        loop {
            let (_, b) = other.get("press.api.site.get", &[("name", &site)]).await;
            let (_, l) = other.get("press.api.site.list", &[]).await;
            if b["message"]["plan"] == "Pro" && l["message"][0]["plan"] == "Pro" {
                break;
            }
            assert!(
                changed.elapsed()
                    < pressoir_press::store::SITE_CACHE_TTL + std::time::Duration::from_secs(2),
                "the replica still answers {b}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        sd.trigger();
        cloud.shutdown().await;
    }
}
