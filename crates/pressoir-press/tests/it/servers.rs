use crate::common::*;
use serde_json::json;

#[tokio::test]
async fn servers_list_status_and_new() {
    for b in backends() {
        let cloud = Cloud::start(&b, Opts::default()).await;
        let admin = cloud.admin().await;
        let (s, body) = admin.get("press.api.server.list", &[]).await;
        assert_eq!(s, 200);
        assert_eq!(body["message"][0]["name"], "app-server-1");
        assert_eq!(body["message"][0]["status"], "Active");
        assert!(!body.to_string().contains(AGENT_PW), "no secret in replies");

        let (site, _) = admin.new_site("statussite", &["frappe"]).await;
        admin.wait_status(&site, "Active", 20).await;
        // The reference sends a JSON body on a GET.
        let (s, body) = admin
            .get_json("press.api.server.status", json!({"server": "app-server-1"}))
            .await;
        assert_eq!(s, 200, "{body}");
        let m = &body["message"];
        assert_eq!(m["status"], "Active");
        assert_eq!(m["agent"]["reachable"], true, "{m}");
        assert!(
            m["agent"]["version"]
                .as_str()
                .is_some_and(|v| !v.is_empty()),
            "{m}"
        );
        assert!(m["agent"]["latency_ms"].is_number());
        assert_eq!(m["sites"], 1);
        assert_eq!(m["jobs"]["pending"], 0);
        assert_eq!(m["jobs"]["running"], 0);
        assert!(!body.to_string().contains(AGENT_PW));
        let (s, _) = admin
            .get("press.api.server.status", &[("server", "app-server-1")])
            .await;
        assert_eq!(s, 200);
        let (s, _) = admin
            .get("press.api.server.status", &[("server", "nope")])
            .await;
        assert_eq!(s, 404);

        // A second server: an agent elsewhere (here: one that is down).
        let (s, body) = admin
            .post("press.api.server.new", json!({"name": "app-server-2", "agent_url": "http://127.0.0.1:9", "agent_password": "secret-two"}))
            .await;
        assert_eq!(s, 200, "{body}");
        let (s, _) = admin
            .post("press.api.server.new", json!({"name": "app-server-2", "agent_url": "http://127.0.0.1:9", "agent_password": "x"}))
            .await;
        assert_eq!(s, 409);
        let (s, _) = admin
            .post(
                "press.api.server.new",
                json!({"name": "../etc", "agent_url": "http://x", "agent_password": "x"}),
            )
            .await;
        assert_eq!(s, 400);
        let (_, body) = admin
            .get_json("press.api.server.status", json!({"server": "app-server-2"}))
            .await;
        assert_eq!(body["message"]["agent"]["reachable"], false);
        let (_, body) = admin.get("press.api.server.list", &[]).await;
        assert_eq!(body["message"].as_array().unwrap().len(), 2);
        // A site on the down server waits, undelivered, instead of failing.
        let (s, body) = admin
            .post("press.api.site.new", json!({"site": {"name": "waitsite", "apps": ["frappe"], "plan": "Starter", "server": "app-server-2"}}))
            .await;
        assert_eq!(s, 200, "{body}");
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let (_, body) = admin
            .get("press.api.site.get", &[("name", "waitsite")])
            .await;
        assert_eq!(body["message"]["status"], "Pending");
        // The agent's push endpoint takes only that server's agent password.
        let push = |auth: &'static str, server: &'static str| {
            let admin = admin.clone();
            async move {
                let mut c = admin.clone();
                c.auth = Some(auth.to_string());
                c.post(
                    "press.api.callbacks.agent_jobs",
                    json!({"server": server, "jobs": []}),
                )
                .await
            }
        };
        assert_eq!(push("Bearer wrong", "app-server-1").await.0, 401);
        assert_eq!(
            push("Bearer secret-two", "app-server-1").await.0,
            401,
            "another server's password"
        );
        let (s, body) = push("Bearer secret-two", "app-server-2").await;
        assert_eq!(
            (s, body["message"]["accepted"].as_i64()),
            (200, Some(0)),
            "{body}"
        );
        let mut c = admin.clone();
        c.auth = Some(format!("Bearer {AGENT_PW}"));
        let (s, body) = c
            .post("press.api.callbacks.agent_jobs", json!({"server": "app-server-1", "jobs": [{"id": "999", "agent_job_id": "nope", "status": "Success"}]}))
            .await;
        assert_eq!(
            (s, body["message"]["accepted"].as_i64()),
            (200, Some(0)),
            "unknown jobs change nothing"
        );
        cloud.shutdown().await;
    }
}

/// A server whose agent stops answering turns Broken after a few failed checks, and Active
/// again once it answers, each change sent as `server.status_changed` to a real receiver.
#[tokio::test]
async fn unreachable_agents_turn_servers_broken_and_back() {
    use crate::webhooks::{Receiver, fast};
    use std::time::{Duration, Instant};
    for b in backends() {
        let opts = Opts {
            webhooks: Some(fast(true)),
            health: Some((Duration::from_millis(60), 3)),
            ..Opts::default()
        };
        let mut cloud = Cloud::start(&b, opts).await;
        let admin = cloud.admin().await;
        let rx = Receiver::start().await;
        let (s, body) = admin
            .post(
                "press.api.webhook.add",
                json!({"events": ["server.status_changed"], "url": rx.url}),
            )
            .await;
        assert_eq!(s, 200, "{body}");
        let status_of = |name: &'static str| {
            let admin = admin.clone();
            async move {
                let (_, body) = admin
                    .get_json("press.api.server.status", json!({"server": name}))
                    .await;
                body["message"]["status"].as_str().unwrap_or("").to_string()
            }
        };
        let listed = |name: &'static str| {
            let admin = admin.clone();
            async move {
                let (_, body) = admin.get("press.api.server.list", &[]).await;
                let row = body["message"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|s| s["name"] == name)
                    .cloned();
                row.map(|r| r["status"].as_str().unwrap_or("").to_string())
                    .unwrap_or_default()
            }
        };
        let change = |ev: &[serde_json::Value], name: &str, old: &str, new: &str| {
            ev.iter().any(|e| {
                e["event"] == "server.status_changed"
                    && e["data"]["name"] == name
                    && e["data"]["old_status"] == old
                    && e["data"]["new_status"] == new
            })
        };

        // Healthy for a while: no event.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(status_of("app-server-1").await, "Active");
        assert!(rx.events().is_empty(), "{:#?}", rx.events());

        let t = Instant::now();
        cloud.stop_agent().await;
        rx.wait("app-server-1 Active -> Broken", 20, |ev| {
            change(ev, "app-server-1", "Active", "Broken")
        })
        .await;
        // Sustained: three checks at least one interval apart.
        assert!(
            t.elapsed() >= Duration::from_millis(90),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(status_of("app-server-1").await, "Broken");
        assert_eq!(listed("app-server-1").await, "Broken");

        cloud.start_agent(None).await;
        let ev = rx
            .wait("app-server-1 Broken -> Active", 20, |ev| {
                change(ev, "app-server-1", "Broken", "Active")
            })
            .await;
        assert_eq!(status_of("app-server-1").await, "Active");
        assert_eq!(listed("app-server-1").await, "Active");
        let mine: Vec<_> = ev
            .iter()
            .filter(|e| e["data"]["name"] == "app-server-1")
            .collect();
        assert_eq!(mine.len(), 2, "one event per change: {mine:#?}");
        assert!(
            !serde_json::to_string(&ev).unwrap().contains(AGENT_PW),
            "no secret in events"
        );

        // A new server pointed at a closed port turns Broken too.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let (s, body) = admin
            .post("press.api.server.new", json!({"name": "app-server-9", "agent_url": format!("http://127.0.0.1:{port}"), "agent_password": "nine"}))
            .await;
        assert_eq!(s, 200, "{body}");
        rx.wait("app-server-9 Active -> Broken", 20, |ev| {
            change(ev, "app-server-9", "Active", "Broken")
        })
        .await;
        assert_eq!(listed("app-server-9").await, "Broken");
        assert_eq!(status_of("app-server-1").await, "Active");
        cloud.shutdown().await;
    }
}
