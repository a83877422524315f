use crate::common::*;
use std::time::Duration;

async fn count_dirs(cloud: &Cloud, prefix: &str) -> usize {
    std::fs::read_dir(cloud.agent_dir().join("benches/bench-0001/sites"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
                .count()
        })
        .unwrap_or(0)
}

/// Jobs recorded while the agent is down wait, and run once it is up; a Press restart in the
/// middle loses none and runs none twice.
#[tokio::test]
async fn no_job_is_lost_or_run_twice_across_restarts() {
    for b in backends() {
        let mut cloud = Cloud::start(
            &b,
            Opts {
                agent: false,
                ..Opts::default()
            },
        )
        .await;
        let admin = cloud.admin().await;
        let mut sites = Vec::new();
        for i in 0..4 {
            sites.push(admin.new_site(&format!("down{i}"), &["frappe"]).await.0);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (_, body) = admin
            .get("press.api.site.get", &[("name", &sites[0])])
            .await;
        assert_eq!(body["message"]["status"], "Pending");
        let (_, body) = admin
            .get("press.api.site.jobs", &[("name", &sites[0])])
            .await;
        assert_eq!(body["message"][0]["status"], "Pending");
        assert_eq!(body["message"][0]["delivery_status"], "Undelivered");

        // Press restarts with the jobs still undelivered, then the agent comes up.
        cloud.stop_press().await;
        cloud.start_press(None).await;
        cloud.start_agent(None).await;
        let admin = cloud.admin().await;
        for s in &sites {
            admin.wait_status(s, "Active", 30).await;
        }

        // More sites, and Press stops right after accepting them.
        for i in 0..4 {
            sites.push(admin.new_site(&format!("again{i}"), &["frappe"]).await.0);
        }
        cloud.stop_press().await;
        cloud.start_press(None).await;
        let admin = cloud.admin().await;
        for s in &sites {
            admin.wait_status(s, "Active", 30).await;
        }

        // And the agent restarts while Press keeps going.
        cloud.stop_agent().await;
        for i in 0..3 {
            sites.push(admin.new_site(&format!("agent{i}"), &["frappe"]).await.0);
        }
        cloud.start_agent(None).await;
        for s in &sites {
            admin.wait_status(s, "Active", 30).await;
            let (_, jobs) = admin.get("press.api.site.jobs", &[("name", s)]).await;
            assert_eq!(jobs["message"].as_array().unwrap().len(), 1, "{s}");
        }
        assert_eq!(count_dirs(&cloud, "down").await, 4);
        assert_eq!(count_dirs(&cloud, "again").await, 4);
        assert_eq!(count_dirs(&cloud, "agent").await, 3);
        cloud.shutdown().await;
    }
}

/// Without pushes, batched polling alone brings sites to Active.
#[tokio::test]
async fn polling_alone_catches_every_update() {
    let cloud = Cloud::start(
        &Backend::Sqlite,
        Opts {
            push: false,
            ..Opts::default()
        },
    )
    .await;
    let admin = cloud.admin().await;
    let (site, job) = admin.new_site("polled", &["frappe", "erpnext"]).await;
    admin.wait_status(&site, "Active", 20).await;
    let j = admin.wait_job(&job, 5).await;
    assert_eq!(j["status"], "Success");
    cloud.shutdown().await;
}

/// Pushes alone (polling every hour) are enough too.
#[tokio::test]
async fn pushes_alone_bring_sites_to_active() {
    let opts = Opts {
        poll_interval: Duration::from_secs(3600),
        ..Opts::default()
    };
    let cloud = Cloud::start(&Backend::Sqlite, opts).await;
    let admin = cloud.admin().await;
    let (site, _) = admin.new_site("pushed", &["frappe"]).await;
    admin.wait_status(&site, "Active", 20).await;
    cloud.shutdown().await;
}

/// Two Press replicas on one database share the outbox: every site ends Active, once.
#[tokio::test]
async fn two_replicas_share_the_outbox() {
    for b in backends() {
        let cloud = Cloud::start(&b, Opts::default()).await;
        let sd = pressoir_core::Shutdown::new();
        let mut second = cloud.start_replica(sd.clone()).await;
        let first = cloud.admin().await;
        second.auth = first.auth.clone();
        let mut sites = Vec::new();
        for i in 0..8 {
            let c = if i % 2 == 0 { &first } else { &second };
            sites.push(c.new_site(&format!("replica{i}"), &["frappe"]).await.0);
        }
        for s in &sites {
            second.wait_status(s, "Active", 30).await;
        }
        assert_eq!(count_dirs(&cloud, "replica").await, 8);
        sd.trigger();
        cloud.shutdown().await;
    }
}

/// A delivered job its agent does not know (the agent's store was reset, or the server now
/// points at another agent) goes back to the outbox and is delivered again, without running twice.
#[tokio::test]
async fn jobs_an_agent_lost_are_delivered_again() {
    for b in backends() {
        let cloud = Cloud::start(&b, Opts::default()).await;
        let admin = cloud.admin().await;
        let (site, job) = admin.new_site("lostjob", &["frappe"]).await;
        admin.wait_status(&site, "Active", 20).await;
        let cfg = cloud.press_config();
        let store = pressoir_press::open_store(&cfg.database_url, &cfg.db_schema, 1)
            .await
            .unwrap();
        sqlx::query("UPDATE jobs SET status = 'Running', agent_id = '999999' WHERE name = $1")
            .bind(&job)
            .execute(&store.db.pool)
            .await
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let j = store.job(&job).await.unwrap().unwrap();
            if j.status == "Success" {
                assert_ne!(j.agent_id.as_deref(), Some("999999"));
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "job stayed {}",
                j.status
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(count_dirs(&cloud, "lostjob").await, 1);
        store.db.pool.close().await;
        cloud.shutdown().await;
    }
}
