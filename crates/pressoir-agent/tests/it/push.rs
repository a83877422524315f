//! The coalesced push of job changes to Press, through a fake Press on 127.0.0.1.

use crate::common::*;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Press {
    calls: Mutex<Vec<(Option<String>, Value)>>,
}

async fn callback(
    State(p): State<Arc<Press>>,
    headers: HeaderMap,
    body: axum::Json<Value>,
) -> axum::response::Response {
    let auth = headers
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_string());
    let mut calls = p.calls.lock().unwrap();
    calls.push((auth, body.0.clone()));
    if calls.len() == 1 {
        // The first push is refused: the agent must keep the batch and retry.
        return (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")], "{}").into_response();
    }
    let n = body.0["jobs"].as_array().map_or(0, Vec::len);
    axum::Json(json!({"message": {"accepted": n}})).into_response()
}

#[tokio::test]
async fn changes_are_pushed_in_batches_and_retried() {
    let press = Arc::new(Press::default());
    let app = axum::Router::new()
        .route("/api/method/press.api.callbacks.agent_jobs", post(callback))
        .with_state(press.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let press_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let a = TestAgent::start(&None, |c| {
        c.press_url = Some(press_url.clone());
        c.server_name = "app-server-9".into();
        c.push_interval = Duration::from_millis(200);
    })
    .await;
    let jobs: Vec<Value> = (0..20)
        .map(|i| json!({"agent_job_id": format!("P-{i}"), "job_type": "New Site", "data": new_site(&format!("p{i}.localhost"))}))
        .collect();
    let r = a
        .post("/agent/jobs")
        .json(&json!({"jobs": jobs}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);

    // Wait until Press has seen every job end.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let calls = press.calls.lock().unwrap().clone();
        let mut last: std::collections::HashMap<String, Value> = Default::default();
        for (_, body) in calls.iter().skip(1) {
            for j in body["jobs"].as_array().unwrap() {
                last.insert(j["agent_job_id"].as_str().unwrap().to_string(), j.clone());
            }
        }
        if last.len() == 20 && last.values().all(|j| j["status"] == "Success") {
            for (auth, body) in &calls {
                assert_eq!(auth.as_deref(), Some(format!("Bearer {PASSWORD}").as_str()));
                assert_eq!(body["server"], "app-server-9");
                let n = body["jobs"].as_array().unwrap().len();
                assert!((1..=100).contains(&n));
            }
            let j = &last["P-3"];
            assert_eq!(j["steps"].as_array().unwrap().len(), 5);
            assert!(j["id"].is_string());
            // Coalesced: far fewer requests than job changes (20 jobs x 7 changes each).
            assert!(calls.len() < 40, "{} pushes", calls.len());
            // The refused first batch was retried no sooner than Retry-After allowed.
            break;
        }
        assert!(
            Instant::now() < deadline,
            "press saw {} pushes: {:?}",
            calls.len(),
            last.keys()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
