//! Every reference call, the compatible extras, auth, and every error.

use crate::common::*;
use base64::Engine as _;
use serde_json::{Value, json};

#[tokio::test]
async fn ping_and_pong() {
    let a = TestAgent::start(&None, |_| {}).await;
    let r = a.get("/agent/ping").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v,
        json!({"status": "ok", "agent": env!("CARGO_PKG_VERSION")})
    );
    let v: Value = a.get("/ping").send().await.unwrap().json().await.unwrap();
    assert_eq!(v, json!({"message": "pong"}));
}

#[tokio::test]
async fn auth_bearer_basic_and_refusals() {
    let a = TestAgent::start(&None, |_| {}).await;
    let c = &a.client;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("frappe:{PASSWORD}"));
    let r = c
        .get(a.url("/agent/ping"))
        .header("Authorization", format!("Basic {basic}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .get(a.url("/agent/ping"))
        .header("Authorization", format!("bearer {PASSWORD}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the scheme is case-insensitive");
    for auth in [
        None,
        Some("Bearer wrong".to_string()),
        Some(format!("Token {PASSWORD}")),
        Some("Basic Zm9v".into()),
    ] {
        let mut req = c.get(a.url("/agent/ping"));
        if let Some(h) = &auth {
            req = req.header("Authorization", h);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401, "{auth:?}");
        assert!(
            r.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer")
        );
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"], "unauthorized");
    }
    // Unauthenticated callers learn nothing, not even which paths exist.
    let r = c.get(a.url("/agent/job/1")).send().await.unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn submit_get_and_list_on_every_backend() {
    for db in backends() {
        let a = TestAgent::start(&db, |_| {}).await;
        let s = a.submit("Ping Job", json!({})).await;
        assert_eq!(s["job_type"], "Ping Job");
        assert!(s["status"] == "Pending" || s["status"] == "Running" || s["status"] == "Success");
        let id = s["id"].as_str().unwrap().to_string();
        let j = a.wait(&id).await;
        assert_eq!(j["status"], "Success", "{j}");
        for key in [
            "id",
            "agent_job_id",
            "job_type",
            "status",
            "created_at",
            "started_at",
            "ended_at",
            "duration_ms",
            "steps",
            "result",
            "error",
        ] {
            assert!(j.get(key).is_some(), "job JSON has {key}: {j}");
        }
        assert_eq!(j["steps"][0]["name"], "Ping Step");
        assert_eq!(j["steps"][0]["status"], "Success");
        assert_eq!(j["steps"][0]["output"], "pong");
        assert!(j["steps"][0]["duration_ms"].is_number());
        assert!(j["created_at"].as_str().unwrap().ends_with('Z'));

        // The compatible frappe/agent path.
        let v: Value = a
            .get(&format!("/jobs/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["id"], id);

        let s2 = a.submit("Ping Job", json!(null)).await;
        let id2 = s2["id"].as_str().unwrap().to_string();
        a.wait(&id2).await;
        let v: Value = a
            .get(&format!("/agent/jobs?ids={id},{id2},999999"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let ids: Vec<_> = v["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].clone())
            .collect();
        assert_eq!(ids, vec![json!(id), json!(id2)]);
        let v: Value = a
            .get(&format!("/jobs/{id},{id2}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v.as_array().unwrap().len(), 2);
        let v: Value = a
            .get("/agent/jobs?status=Success")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["jobs"].as_array().unwrap().len(), 2);
        let v: Value = a
            .get("/agent/jobs?status=Running")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["jobs"], json!([]));
        let v: Value = a
            .get("/agent/jobs")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["jobs"].as_array().unwrap().len(), 2);
        a.stop().await;
    }
}

#[tokio::test]
async fn idempotent_submission_on_every_backend() {
    for db in backends() {
        let a = TestAgent::start(&db, |_| {}).await;
        let body = json!({"job_type": "New Site", "data": new_site("idem.localhost")});
        let mut ids = Vec::new();
        for _ in 0..3 {
            let r = a
                .post("/agent/job")
                .header("X-Agent-Job-Id", "AGJ-0001")
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 202);
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["agent_job_id"], "AGJ-0001");
            ids.push(v["id"].as_str().unwrap().to_string());
        }
        assert!(ids.iter().all(|i| *i == ids[0]), "{ids:?}");
        let j = a.wait(&ids[0]).await;
        assert_eq!(
            j["status"], "Success",
            "ran once, so the site did not already exist: {j}"
        );
        // Submitting again after it ended still returns the job and runs nothing.
        let r = a
            .post("/agent/job")
            .header("X-Agent-Job-Id", "AGJ-0001")
            .json(&body)
            .send()
            .await
            .unwrap();
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["id"], json!(ids[0]));
        assert_eq!(v["status"], "Success");
        let v: Value = a
            .get("/agent/jobs?agent_job_ids=AGJ-0001,AGJ-none")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["jobs"].as_array().unwrap().len(), 1);
        assert_eq!(v["jobs"][0]["id"], json!(ids[0]));
        let all: Value = a
            .get("/agent/jobs")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(all["jobs"].as_array().unwrap().len(), 1);
        a.stop().await;
    }
}

#[tokio::test]
async fn batch_submission() {
    for db in backends() {
        let a = TestAgent::start(&db, |_| {}).await;
        let jobs: Vec<Value> = (0..5)
            .map(|i| json!({"agent_job_id": format!("B-{i}"), "job_type": "New Site", "data": new_site(&format!("b{i}.localhost"))}))
            .chain([json!({"agent_job_id": "B-0", "job_type": "Ping Job", "data": {}})])
            .collect();
        let r = a
            .post("/agent/jobs")
            .json(&json!({"jobs": jobs}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let v: Value = r.json().await.unwrap();
        let list = v["jobs"].as_array().unwrap();
        assert_eq!(list.len(), 6);
        assert_eq!(
            list[5]["id"], list[0]["id"],
            "a repeated agent_job_id is the same job"
        );
        assert_eq!(list[5]["job_type"], "New Site");
        for (i, j) in list.iter().take(5).enumerate() {
            assert_eq!(j["agent_job_id"], format!("B-{i}"));
            assert_eq!(a.wait(j["id"].as_str().unwrap()).await["status"], "Success");
        }

        // One bad entry refuses the whole batch, naming it, and stores nothing.
        let bad = json!({"jobs": [
            {"agent_job_id": "C-0", "job_type": "Ping Job", "data": {}},
            {"agent_job_id": "C-1", "job_type": "New Site", "data": {"name": "../x", "apps": ["frappe"], "admin_password": "p"}},
        ]});
        let r = a.post("/agent/jobs").json(&bad).send().await.unwrap();
        assert_eq!(r.status(), 400);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["field"], "jobs[1].data.name", "{v}");
        let v: Value = a
            .get("/agent/jobs?agent_job_ids=C-0")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["jobs"], json!([]));

        let too_many: Vec<Value> = (0..101).map(|_| json!({"job_type": "Ping Job"})).collect();
        let r = a
            .post("/agent/jobs")
            .json(&json!({"jobs": too_many}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let r = a
            .post("/agent/jobs")
            .json(&json!({"nope": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        a.stop().await;
    }
}

async fn error(a: &TestAgent, req: reqwest::RequestBuilder, status: u16) -> Value {
    let r = req.send().await.unwrap();
    assert_eq!(r.status().as_u16(), status);
    assert_eq!(r.headers()["content-type"], "application/json");
    let v: Value = r.json().await.unwrap();
    assert!(v["error"].is_string() && v["message"].is_string(), "{v}");
    let _ = a;
    v
}

#[tokio::test]
async fn every_error_is_a_clear_4xx() {
    let a = TestAgent::start(&None, |_| {}).await;
    let v = error(
        &a,
        a.post("/agent/job")
            .header("content-type", "application/json")
            .body("{not json"),
        400,
    )
    .await;
    assert_eq!(v["error"], "malformed_json");
    let v = error(&a, a.post("/agent/job").body(""), 400).await;
    assert_eq!(v["error"], "malformed_json");
    let v = error(&a, a.post("/agent/job").json(&json!([1, 2])), 400).await;
    assert_eq!(v["error"], "invalid_request");
    let v = error(&a, a.post("/agent/job").json(&json!({"data": {}})), 400).await;
    assert_eq!(v["field"], "job_type");
    let v = error(
        &a,
        a.post("/agent/job")
            .json(&json!({"job_type": "Make Coffee", "data": {}})),
        400,
    )
    .await;
    assert_eq!(v["field"], "job_type");
    assert!(v["message"].as_str().unwrap().contains("Make Coffee"));
    let cases = [
        (
            json!({"apps": ["frappe"], "admin_password": "x"}),
            "data.name",
        ),
        (
            json!({"name": 5, "apps": ["frappe"], "admin_password": "x"}),
            "data.name",
        ),
        (json!({"name": "a.b", "admin_password": "x"}), "data.apps"),
        (
            json!({"name": "a.b", "apps": ["erpnext", "frappe"], "admin_password": "x"}),
            "data.apps[0]",
        ),
        (
            json!({"name": "a.b", "apps": ["frappe", "erpnext", "erpnext"], "admin_password": "x"}),
            "data.apps[2]",
        ),
        (
            json!({"name": "a.b", "apps": ["frappe", "nosuchapp"], "admin_password": "x"}),
            "data.apps[1]",
        ),
        (
            json!({"name": "a.b", "apps": ["frappe"]}),
            "data.admin_password",
        ),
        (
            json!({"name": "a.b", "apps": ["frappe"], "admin_password": "x", "config": []}),
            "data.config",
        ),
        (
            json!({"name": "a.b", "apps": ["frappe"], "admin_password": "x", "bench": "other"}),
            "data.bench",
        ),
    ];
    for (data, field) in cases {
        let v = error(
            &a,
            a.post("/agent/job")
                .json(&json!({"job_type": "New Site", "data": data})),
            400,
        )
        .await;
        assert_eq!(v["field"], field, "{v}");
        assert_eq!(v["error"], "invalid_request");
    }
    let v = error(
        &a,
        a.post("/agent/job")
            .json(&json!({"job_type": "Install App on Site", "data": {"name": "a.b"}})),
        400,
    )
    .await;
    assert_eq!(v["field"], "data.app");
    let v = error(
        &a,
        a.post("/agent/job")
            .header("X-Agent-Job-Id", "")
            .json(&json!({"job_type": "Ping Job"})),
        400,
    )
    .await;
    assert_eq!(v["field"], "X-Agent-Job-Id");

    let v = error(&a, a.get("/agent/job/424242"), 404).await;
    assert_eq!(v["error"], "not_found");
    error(&a, a.get("/agent/job/not-a-number"), 404).await;
    error(&a, a.get("/jobs/77"), 404).await;
    error(&a, a.get("/agent/nothing-here"), 404).await;
    let v = error(&a, a.get("/agent/jobs?ids=1,x"), 400).await;
    assert_eq!(v["field"], "ids");
    let v = error(&a, a.get("/agent/jobs?status=Sleeping"), 400).await;
    assert_eq!(v["field"], "status");
    error(&a, a.get("/agent/jobs?ids=1&status=Running"), 400).await;
    let v = error(
        &a,
        a.client.delete(a.url("/agent/ping")).bearer_auth(PASSWORD),
        405,
    )
    .await;
    assert_eq!(v["error"], "method_not_allowed");
    let big = "x".repeat(3 * 1024 * 1024);
    let v = error(&a, a.post("/agent/job").body(big), 413).await;
    assert_eq!(v["error"], "payload_too_large");
}

#[tokio::test]
async fn the_51st_request_in_a_minute_is_refused() {
    let a = TestAgent::start(&None, |c| c.rate_limit = "50/min".parse().unwrap()).await;
    // GCRA refills one request every 1.2 s: on a slow machine a refill may land mid-loop.
    let start = std::time::Instant::now();
    let mut n = 0u32;
    let r = loop {
        let r = a.get("/agent/ping").send().await.unwrap();
        n += 1;
        if r.status() == 429 {
            break r;
        }
        assert_eq!(r.status(), 200, "request {n}");
        assert_eq!(r.headers()["x-ratelimit-limit"], "50");
        let remaining: u32 = r.headers()["x-ratelimit-remaining"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        if start.elapsed() < std::time::Duration::from_millis(1100) {
            assert_eq!(remaining, 50 - n, "request {n}");
        }
        assert!(n <= 60, "no 429 after {n} requests");
    };
    if start.elapsed() < std::time::Duration::from_millis(1100) {
        assert_eq!(n, 51, "the 51st request is the first refused");
    }
    assert_eq!(r.status(), 429);
    let h = r.headers().clone();
    assert!(h["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(h["x-ratelimit-limit"], "50");
    assert_eq!(h["x-ratelimit-remaining"], "0");
    assert!(h.contains_key("x-ratelimit-reset"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], "rate_limited");
    // Another credential has its own budget.
    let r = a
        .client
        .get(a.url("/agent/ping"))
        .bearer_auth("someone-else")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}
