use crate::common::*;
use pressoir_core::RateSpec;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn the_press_api_answers_429_past_its_limit() {
    let opts = Opts {
        press_rate: RateSpec::per(5, Duration::from_secs(60)),
        agent: false,
        ..Opts::default()
    };
    let cloud = Cloud::start(&Backend::Sqlite, opts).await;
    let guest = cloud.guest();
    // (The start-up probe already spent one of the five.)
    let mut seen = Vec::new();
    for _ in 0..6 {
        let r = guest.raw(reqwest::Method::GET, "ping").await;
        let (s, body, h) = guest.send(r).await;
        let limited = s == 429;
        seen.push((s, body, h));
        if limited {
            break;
        }
    }
    assert!(
        seen.len() <= 5,
        "the limit let {} calls through",
        seen.len()
    );
    let (s, body, h) = seen.pop().unwrap();
    assert_eq!(s, 429);
    assert_eq!(body["exc_type"], "TooManyRequestsError");
    assert!(h.get("retry-after").is_some());
    assert_eq!(h.get("x-ratelimit-limit").unwrap(), "5");
    assert_eq!(h.get("x-ratelimit-remaining").unwrap(), "0");
    assert!(h.get("x-ratelimit-reset").is_some());
    assert!(
        seen.iter()
            .all(|(s, _, h)| *s == 200 && h.get("x-ratelimit-remaining").is_some())
    );
    // Another credential has its own budget.
    let mut other = cloud.guest();
    other.auth = Some("token a:b".into());
    assert_eq!(other.post("press.api.account.me", json!({})).await.0, 401);
    cloud.shutdown().await;
}

/// A burst of site.new several times the agent's limit (scaled down: 60 sites against 5 agent
/// requests per 10 s) ends with every site Active, none duplicated and none lost.
#[tokio::test]
async fn a_burst_beyond_the_agents_limit_ends_all_active() {
    for b in backends() {
        let opts = Opts {
            agent_rate: RateSpec::per(5, Duration::from_secs(10)),
            poll_interval: Duration::from_millis(500),
            ..Opts::default()
        };
        let cloud = Cloud::start(&b, opts).await;
        let admin = cloud.admin().await;
        let n = 60;
        let calls = (0..n).map(|i| {
            let admin = admin.clone();
            async move { admin.new_site(&format!("burst{i:03}"), &["frappe"]).await }
        });
        let created = futures::future::join_all(calls).await;
        assert_eq!(created.len(), n);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let (_, body) = admin
                .get("press.api.site.list", &[("status", "Active")])
                .await;
            let active = body["message"].as_array().unwrap().len();
            if active == n {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "only {active} of {n} Active"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (_, body) = admin.get("press.api.site.list", &[]).await;
        assert_eq!(
            body["message"].as_array().unwrap().len(),
            n,
            "no extra sites"
        );
        // The agent made each site exactly once: one directory each, one New Site job each.
        let sites = std::fs::read_dir(cloud.agent_dir().join("benches/bench-0001/sites"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("burst"))
            .count();
        assert_eq!(sites, n);
        for (site, _) in &created {
            let (_, jobs) = admin.get("press.api.site.jobs", &[("name", site)]).await;
            assert_eq!(jobs["message"].as_array().unwrap().len(), 1);
        }
        cloud.shutdown().await;
    }
}
