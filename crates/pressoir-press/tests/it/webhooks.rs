//! Webhooks against a real HTTP receiver on 127.0.0.1: signature and headers, retries after a
//! 500 and after a timeout, nothing lost across a Press restart, per-site order, SSRF refusals,
//! auto-disable, scoping and redelivery; on SQLite and PostgreSQL.

use crate::common::*;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use pressoir_press::webhooks::{WebhookConfig, sign};
use serde_json::{Value, json};
use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub enum Act {
    Status(u16),
    Sleep(Duration),
}

#[derive(Clone, Debug)]
pub struct Received {
    pub headers: http::HeaderMap,
    pub raw: String,
    pub body: Value,
}

#[derive(Default)]
struct RecvState {
    ok: Mutex<Vec<Received>>,
    hits: Mutex<usize>,
    script: Mutex<VecDeque<Act>>,
    default: Mutex<Option<u16>>,
    stall: Mutex<Option<Duration>>,
}

/// A webhook receiver: answers 200 unless scripted otherwise; keeps what it answered 2xx to.
pub struct Receiver {
    pub url: String,
    st: Arc<RecvState>,
}

async fn hook(State(st): State<Arc<RecvState>>, headers: http::HeaderMap, body: Bytes) -> Response {
    *st.hits.lock().unwrap() += 1;
    let stall = *st.stall.lock().unwrap();
    let fallback = match stall {
        Some(d) => Act::Sleep(d),
        None => Act::Status(st.default.lock().unwrap().unwrap_or(200)),
    };
    let act = st.script.lock().unwrap().pop_front().unwrap_or(fallback);
    match act {
        Act::Sleep(d) => {
            tokio::time::sleep(d).await;
            (http::StatusCode::OK, "late").into_response()
        }
        Act::Status(code) if (200..300).contains(&code) => {
            let raw = String::from_utf8_lossy(&body).into_owned();
            let body = serde_json::from_str(&raw).unwrap_or(Value::Null);
            st.ok.lock().unwrap().push(Received { headers, raw, body });
            (http::StatusCode::from_u16(code).unwrap(), "thanks").into_response()
        }
        Act::Status(code) => {
            // Echo a configured secret back, so the test can check the log scrubs it.
            let echo = headers
                .get("x-secret")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            (
                http::StatusCode::from_u16(code).unwrap(),
                format!("receiver broke (saw {echo})"),
            )
                .into_response()
        }
    }
}

impl Receiver {
    pub async fn start() -> Receiver {
        let st = Arc::new(RecvState::default());
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(hook))
            .with_state(st.clone());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(l, app).await;
        });
        Receiver {
            url: format!("http://{addr}/hook"),
            st,
        }
    }

    pub fn script(&self, acts: impl IntoIterator<Item = Act>) {
        self.st.script.lock().unwrap().extend(acts);
    }

    pub fn answer(&self, code: u16) {
        *self.st.default.lock().unwrap() = Some(code);
    }

    /// Every request from now on answers only after `d`.
    pub fn stall(&self, d: Duration) {
        *self.st.stall.lock().unwrap() = Some(d);
    }

    pub fn hits(&self) -> usize {
        *self.st.hits.lock().unwrap()
    }

    pub fn received(&self) -> Vec<Received> {
        self.st.ok.lock().unwrap().clone()
    }

    /// Event bodies answered 2xx, without the validation pings, first copy of each id only.
    pub fn events(&self) -> Vec<Value> {
        let mut seen = HashSet::new();
        self.received()
            .into_iter()
            .map(|r| r.body)
            .filter(|b| b["event"] != "Webhook Validate")
            .filter(|b| seen.insert(b["id"].as_str().unwrap_or("").to_string()))
            .collect()
    }

    pub async fn wait(&self, what: &str, secs: u64, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let ev = self.events();
            if pred(&ev) {
                return ev;
            }
            assert!(
                Instant::now() < deadline,
                "receiver: {what} not seen; got {ev:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

pub fn fast(allow_private: bool) -> WebhookConfig {
    WebhookConfig {
        allow_private,
        timeout: Duration::from_millis(600),
        backoff_base: Duration::from_millis(30),
        backoff_cap: Duration::from_millis(150),
        poll_interval: Duration::from_millis(10),
        max_attempts: 50,
        ..WebhookConfig::default()
    }
}

fn opts(w: WebhookConfig) -> Opts {
    Opts {
        webhooks: Some(w),
        ..Opts::default()
    }
}

/// The events of `site` in arrival order: `site.created` first, then status changes that each
/// start where the previous one ended, ending Active.
fn check_site_order(events: &[Value], site: &str) {
    let mine: Vec<&Value> = events
        .iter()
        .filter(|e| e["data"]["name"] == site)
        .collect();
    assert!(!mine.is_empty(), "no events for {site}");
    assert_eq!(mine[0]["event"], "site.created", "{site}: {mine:#?}");
    let mut status = mine[0]["data"]["status"].as_str().unwrap().to_string();
    for e in &mine[1..] {
        if e["event"] == "site.status_changed" {
            assert_eq!(
                e["data"]["old_status"].as_str().unwrap(),
                status,
                "{site} out of order: {mine:#?}"
            );
            status = e["data"]["new_status"].as_str().unwrap().to_string();
        }
    }
    assert_eq!(status, "Active", "{site}: {mine:#?}");
}

fn active(events: &[Value], site: &str) -> bool {
    events
        .iter()
        .any(|e| e["data"]["name"] == site && e["data"]["new_status"] == "Active")
}

async fn add(c: &Client, body: Value) -> Value {
    let (s, b) = c.post("press.api.webhook.add", body).await;
    assert_eq!(s, 200, "webhook.add: {b}");
    b["message"].clone()
}

#[tokio::test]
async fn deliveries_are_signed_carry_their_headers_and_keep_site_order() {
    for b in backends() {
        let cloud = Cloud::start(&b, opts(fast(true))).await;
        let admin = cloud.admin().await;
        let rx = Receiver::start().await;

        let (_, ev) = admin.get("press.api.webhook.events", &[]).await;
        let names: Vec<&str> = ev["message"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        for e in [
            "site.created",
            "site.status_changed",
            "site.archived",
            "site.plan_changed",
            "backup.completed",
            "backup.failed",
            "job.failed",
            "server.status_changed",
        ] {
            assert!(names.contains(&e), "{e} missing from {names:?}");
        }

        // The reference's shape: one event, a URL, headers.
        let w = add(&admin, json!({"event": "site.created", "url": rx.url, "headers": {"X-Secret": "your-secret"}, "secret": "frappe-shared-secret"})).await;
        let name = w["name"].as_str().unwrap().to_string();
        let signing = w["signing_secret"].as_str().unwrap().to_string();
        assert!(signing.starts_with("whsec_"));
        let ping = rx.received().into_iter().next().expect("a validation ping");
        assert_eq!(ping.body["event"], "Webhook Validate");
        let (s, b) = admin.post("press.api.webhook.update", json!({"name": name, "events": ["site.created", "site.status_changed", "site.archived"]})).await;
        assert_eq!(s, 200, "{b}");

        let mut sites = Vec::new();
        for i in 0..3 {
            sites.push(admin.new_site(&format!("hook{i}"), &["frappe"]).await.0);
        }
        // A change that rolls back (a taken name) invents no event.
        let (s, _) = admin
            .post(
                "press.api.site.new",
                json!({"site": {"name": "hook0", "apps": ["frappe"], "plan": "Starter"}}),
            )
            .await;
        assert_eq!(s, 409);
        let events = rx
            .wait("every site Active", 30, |ev| {
                sites.iter().all(|s| active(ev, s))
            })
            .await;
        for s in &sites {
            check_site_order(&events, s);
        }
        assert_eq!(
            events
                .iter()
                .filter(|e| e["event"] == "site.created" && e["data"]["name"] == sites[0])
                .count(),
            1
        );

        // Headers and the Standard Webhooks signature, on every delivery.
        for r in rx.received() {
            assert_eq!(r.headers["x-secret"], "your-secret");
            assert_eq!(r.headers["x-webhook-secret"], "frappe-shared-secret");
            assert_eq!(r.headers["content-type"], "application/json");
            let id = r.headers["webhook-id"].to_str().unwrap();
            assert_eq!(r.body["id"], id);
            let ts: i64 = r.headers["webhook-timestamp"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((ts - pressoir_core::clock::now_ms() / 1000).abs() < 120);
            let sig = r.headers["webhook-signature"].to_str().unwrap();
            assert!(sig.starts_with("v1,"));
            assert!(
                sign::verify(&signing, id, ts, r.raw.as_bytes(), sig),
                "bad signature on {}",
                r.raw
            );
            assert!(!sign::verify(
                &signing,
                id,
                ts,
                format!("{} ", r.raw).as_bytes(),
                sig
            ));
            if r.body["event"] != "Webhook Validate" {
                assert!(r.body["timestamp"].is_string());
                assert!(r.body["data"]["name"].is_string() && r.body["data"]["plan"] == "Starter");
            }
        }

        // Archiving sends site.status_changed and site.archived.
        let (s, b) = admin
            .post(
                "press.api.site.archive",
                json!({"name": sites[2], "force": true}),
            )
            .await;
        assert_eq!(s, 200, "{b}");
        rx.wait("site.archived", 30, |ev| {
            ev.iter()
                .any(|e| e["event"] == "site.archived" && e["data"]["name"] == sites[2])
        })
        .await;

        // No secret in list, get or attempts.
        let (_, list) = admin.get("press.api.webhook.list", &[]).await;
        let (_, attempts) = admin
            .get("press.api.webhook.attempts", &[("name", &name)])
            .await;
        assert!(
            attempts["message"]
                .as_array()
                .unwrap()
                .iter()
                .all(|a| a["status"] == "Sent")
        );
        assert!(!attempts["message"].as_array().unwrap().is_empty());
        for text in [list.to_string(), attempts.to_string()] {
            for secret in [signing.as_str(), "your-secret", "frappe-shared-secret"] {
                assert!(!text.contains(secret), "a secret leaked: {text}");
            }
        }
        assert_eq!(list["message"][0]["headers"]["X-Secret"], "***");
        assert_eq!(list["message"][0]["has_secret"], true);

        // Redelivery sends the same event (same webhook-id) again.
        let delivery = attempts["message"][0]["delivery"]
            .as_str()
            .unwrap()
            .to_string();
        let event_id = attempts["message"][0]["event_id"]
            .as_str()
            .unwrap()
            .to_string();
        let before = rx
            .received()
            .iter()
            .filter(|r| r.body["id"] == event_id.as_str())
            .count();
        let (s, b) = admin
            .post("press.api.webhook.redeliver", json!({"delivery": delivery}))
            .await;
        assert_eq!(s, 200, "{b}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while rx
            .received()
            .iter()
            .filter(|r| r.body["id"] == event_id.as_str())
            .count()
            == before
        {
            assert!(Instant::now() < deadline, "redelivery not received");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        cloud.shutdown().await;
    }
}

#[tokio::test]
async fn retries_after_a_500_and_a_timeout_and_logs_each_attempt() {
    for b in backends() {
        let cloud = Cloud::start(&b, opts(fast(true))).await;
        let admin = cloud.admin().await;
        let rx = Receiver::start().await;
        let w = add(&admin, json!({"events": ["site.created"], "url": rx.url, "headers": {"X-Secret": "echoed-secret"}})).await;
        let name = w["name"].as_str().unwrap().to_string();
        // The first delivery meets a 500, then a receiver slower than the timeout, then a 200.
        rx.script([Act::Status(500), Act::Sleep(Duration::from_millis(1500))]);
        let started = Instant::now();
        let (site, _) = admin.new_site("retry1", &["frappe"]).await;
        rx.wait("site.created after retries", 20, |ev| {
            ev.iter().any(|e| e["data"]["name"] == site)
        })
        .await;
        assert!(
            started.elapsed() >= Duration::from_millis(600),
            "the timeout was not waited for"
        );

        // The receiver has the event before the sender records the successful attempt.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut log = loop {
            let (_, a) = admin
                .get("press.api.webhook.attempts", &[("name", &name)])
                .await;
            let log = a["message"].as_array().unwrap().clone();
            if log.len() >= 3 || Instant::now() > deadline {
                break log;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        log.reverse();
        assert_eq!(log.len(), 3, "{log:#?}");
        assert_eq!(
            (
                log[0]["status"].as_str(),
                log[0]["response_status_code"].as_i64(),
                log[0]["attempt"].as_i64()
            ),
            (Some("Failed"), Some(500), Some(1))
        );
        assert_eq!(
            log[0]["response_body"], "receiver broke (saw ***)",
            "the echoed secret is scrubbed"
        );
        assert!(
            log[1]["error"].as_str().unwrap().contains("timed out"),
            "{log:#?}"
        );
        assert!(log[1]["duration_ms"].as_i64().unwrap() >= 500);
        assert_eq!(
            (
                log[2]["status"].as_str(),
                log[2]["response_status_code"].as_i64(),
                log[2]["attempt"].as_i64()
            ),
            (Some("Sent"), Some(200), Some(3))
        );
        assert_eq!(log[2]["response_body"], "thanks");
        assert!(
            !Value::from(log.clone())
                .to_string()
                .contains("echoed-secret")
        );
        cloud.shutdown().await;
    }
}

#[tokio::test]
async fn nothing_is_lost_across_a_press_restart() {
    for b in backends() {
        let mut cloud = Cloud::start(&b, opts(fast(true))).await;
        let admin = cloud.admin().await;
        let rx = Receiver::start().await;
        add(
            &admin,
            json!({"events": ["site.created", "site.status_changed"], "url": rx.url}),
        )
        .await;
        rx.answer(503);
        let mut sites = Vec::new();
        for i in 0..4 {
            sites.push(admin.new_site(&format!("keep{i}"), &["frappe"]).await.0);
        }
        for s in &sites {
            admin.wait_status(s, "Active", 30).await;
        }
        // Every event is recorded and none delivered; Press stops.
        cloud.stop_press().await;
        assert!(rx.events().is_empty());
        rx.answer(200);
        cloud.start_press(None).await;
        let events = rx
            .wait("every event after the restart", 30, |ev| {
                sites.iter().all(|s| active(ev, s))
            })
            .await;
        for s in &sites {
            check_site_order(&events, s);
        }
        cloud.shutdown().await;
    }
}

#[tokio::test]
async fn private_targets_are_refused_unless_allowed() {
    for b in backends() {
        let rx = Receiver::start().await;
        let port = rx
            .url
            .split(':')
            .nth(2)
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let mut cloud = Cloud::start(&b, opts(fast(false))).await;
        let admin = cloud.admin().await;
        for url in [
            rx.url.clone(),
            format!("http://localhost:{port}/hook"),
            format!("http://[::1]:{port}/hook"),
            format!("http://0x7f000001:{port}/hook"),
            "http://169.254.169.254/latest/meta-data".to_string(),
            "http://10.0.0.1/hook".to_string(),
            "ftp://example.com/hook".to_string(),
            "not a url".to_string(),
        ] {
            let (s, body) = admin
                .post(
                    "press.api.webhook.add",
                    json!({"event": "site.created", "url": url}),
                )
                .await;
            assert_eq!(
                (s, body["exc_type"].as_str()),
                (400, Some("ValidationError")),
                "{url}: {body}"
            );
        }
        let (_, body) = admin
            .post(
                "press.api.webhook.add",
                json!({"event": "site.created", "url": rx.url}),
            )
            .await;
        assert!(server_message(&body).contains("refused"), "{body}");
        assert_eq!(rx.hits(), 0, "a refused target was contacted");

        // A webhook stored while private targets were allowed is refused at delivery time.
        cloud.stop_press().await;
        cloud.opts.webhooks = Some(fast(true));
        cloud.start_press(None).await;
        let admin = cloud.admin().await;
        let w = add(&admin, json!({"event": "site.created", "url": rx.url})).await;
        let hits = rx.hits();
        cloud.stop_press().await;
        cloud.opts.webhooks = Some(fast(false));
        cloud.start_press(None).await;
        let admin = cloud.admin().await;
        admin.new_site("ssrf1", &["frappe"]).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (_, a) = admin
                .get(
                    "press.api.webhook.attempts",
                    &[("name", w["name"].as_str().unwrap())],
                )
                .await;
            if let Some(first) = a["message"].as_array().and_then(|l| l.first()) {
                assert!(first["error"].as_str().unwrap().contains("refused"), "{a}");
                break;
            }
            assert!(Instant::now() < deadline, "no attempt logged");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            rx.hits(),
            hits,
            "the receiver was contacted although private targets are refused"
        );
        cloud.shutdown().await;
    }
}

#[tokio::test]
async fn sustained_failure_disables_and_enabling_resumes() {
    for b in backends() {
        let cfg = WebhookConfig {
            disable_after_failures: 3,
            disable_after: Duration::ZERO,
            ..fast(true)
        };
        let cloud = Cloud::start(&b, opts(cfg)).await;
        let admin = cloud.admin().await;
        let rx = Receiver::start().await;
        let w = add(&admin, json!({"events": ["site.created"], "url": rx.url})).await;
        let name = w["name"].as_str().unwrap().to_string();
        rx.answer(500);
        let (site, _) = admin.new_site("failing1", &["frappe"]).await;
        let deadline = Instant::now() + Duration::from_secs(15);
        let why = loop {
            let (_, g) = admin.get("press.api.webhook.get", &[("name", &name)]).await;
            if g["message"]["enabled"] == false {
                break g["message"]["disabled_reason"]
                    .as_str()
                    .unwrap()
                    .to_string();
            }
            assert!(Instant::now() < deadline, "never disabled: {g}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(
            why.contains("consecutive failed attempts") && why.contains("HTTP 500"),
            "{why}"
        );
        let hits = rx.hits();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(rx.hits(), hits, "a disabled webhook is still called");

        // The owner fixes the receiver and enables it again: the event was kept and arrives.
        rx.answer(200);
        let (s, b) = admin
            .post(
                "press.api.webhook.update",
                json!({"name": name, "enabled": true}),
            )
            .await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(b["message"]["enabled"], true);
        rx.wait("the kept event", 15, |ev| {
            ev.iter().any(|e| e["data"]["name"] == site)
        })
        .await;
        cloud.shutdown().await;
    }
}

#[tokio::test]
async fn teams_see_their_own_webhooks_and_global_ones_see_all() {
    for b in backends() {
        let cfg = WebhookConfig {
            max_per_team: 2,
            ..fast(true)
        };
        let cloud = Cloud::start(&b, opts(cfg)).await;
        let admin = cloud.admin().await;
        let rx = Receiver::start().await;
        let global_rx = Receiver::start().await;
        let (s, _) = admin
            .post("press.api.account.new_user", json!({"email": "hana@example.com", "full_name": "Hana", "password": "hana-password-1"}))
            .await;
        assert_eq!(s, 200);
        let (s, _) = admin
            .post(
                "press.api.account.new_team",
                json!({"name": "hooks", "title": "Hooks", "user": "hana@example.com"}),
            )
            .await;
        assert_eq!(s, 200);
        let hana = cloud
            .login_token("hana@example.com", "hana-password-1")
            .await;

        let g = add(
            &admin,
            json!({"events": ["site.created"], "url": global_rx.url, "scope": "global"}),
        )
        .await;
        let (s, _) = hana
            .post(
                "press.api.webhook.add",
                json!({"events": ["site.created"], "url": global_rx.url, "scope": "global"}),
            )
            .await;
        assert_eq!(s, 403);
        let mine = add(&hana, json!({"events": ["site.created"], "url": rx.url})).await;
        let (s, _) = hana
            .post(
                "press.api.webhook.add",
                json!({"events": ["site.created"], "url": rx.url}),
            )
            .await;
        assert_eq!(s, 409, "the same endpoint twice");
        add(
            &hana,
            json!({"events": ["site.created"], "url": format!("{}?second", rx.url)}),
        )
        .await;
        let (s, b) = hana
            .post(
                "press.api.webhook.add",
                json!({"events": ["site.created"], "url": format!("{}?third", rx.url)}),
            )
            .await;
        assert_eq!(s, 400, "over the per-team limit: {b}");
        let (s, _) = hana
            .post(
                "press.api.webhook.add",
                json!({"events": ["site.nope"], "url": rx.url}),
            )
            .await;
        assert_eq!(s, 400);
        let (s, _) = hana
            .get(
                "press.api.webhook.get",
                &[("name", g["name"].as_str().unwrap())],
            )
            .await;
        assert_eq!(s, 404, "a global webhook is the Administrator's");
        let (_, list) = hana.get("press.api.webhook.list", &[]).await;
        assert_eq!(list["message"].as_array().unwrap().len(), 2);
        let (_, list) = admin.get("press.api.webhook.list", &[]).await;
        assert_eq!(
            list["message"].as_array().unwrap().len(),
            0,
            "the Administrator's own team has none"
        );
        let (s, _) = admin
            .get(
                "press.api.webhook.attempts",
                &[("name", mine["name"].as_str().unwrap())],
            )
            .await;
        assert_eq!(s, 200);

        // Hana's site reaches her webhooks and the global one; the Administrator's only the global one.
        let (hs, _) = hana.new_site("hanasite", &["frappe"]).await;
        let (as_, _) = admin.new_site("adminsite2", &["frappe"]).await;
        global_rx
            .wait("both sites", 20, |ev| {
                [&hs, &as_]
                    .iter()
                    .all(|s| ev.iter().any(|e| e["data"]["name"] == s.as_str()))
            })
            .await;
        // Both of Hana's webhooks get it: one event id, two deliveries.
        rx.wait("hana's site", 20, |ev| {
            ev.iter().any(|e| e["data"]["name"] == hs.as_str())
        })
        .await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while rx
            .received()
            .iter()
            .filter(|r| r.body["data"]["name"] == hs.as_str())
            .count()
            < 2
        {
            assert!(
                Instant::now() < deadline,
                "one of hana's webhooks missed her site"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            rx.events()
                .iter()
                .all(|e| e["data"]["name"] != as_.as_str()),
            "another team's event leaked"
        );

        let (s, _) = hana
            .post("press.api.webhook.delete", json!({"name": mine["name"]}))
            .await;
        assert_eq!(s, 200);
        let (_, list) = hana.get("press.api.webhook.list", &[]).await;
        assert_eq!(list["message"].as_array().unwrap().len(), 1);
        cloud.shutdown().await;
    }
}

#[tokio::test]
async fn a_failed_job_sends_job_failed_and_the_broken_status() {
    for b in backends() {
        // No agent: the job waits undelivered until the "agent" below reports it failed.
        let cloud = Cloud::start(
            &b,
            Opts {
                agent: false,
                ..opts(fast(true))
            },
        )
        .await;
        let admin = cloud.admin().await;
        let rx = Receiver::start().await;
        add(
            &admin,
            json!({"events": ["job.failed", "site.status_changed"], "url": rx.url}),
        )
        .await;
        let (site, job) = admin.new_site("jobfail1", &["frappe"]).await;
        let push = json!({"server": "app-server-1", "jobs": [{"id": "1", "agent_job_id": job, "job_type": "New Site", "status": "Failure", "error": "disk full", "steps": []}]});
        let r = cloud
            .guest()
            .raw(reqwest::Method::POST, "press.api.callbacks.agent_jobs")
            .await;
        let (s, body, _) = cloud
            .guest()
            .send(
                r.header("Authorization", format!("Bearer {AGENT_PW}"))
                    .json(&push),
            )
            .await;
        assert_eq!(s, 200, "{body}");
        let events = rx
            .wait("job.failed and Broken", 20, |ev| {
                ev.iter().any(|e| e["event"] == "job.failed")
                    && ev.iter().any(|e| e["data"]["new_status"] == "Broken")
            })
            .await;
        let failed = events.iter().find(|e| e["event"] == "job.failed").unwrap();
        assert_eq!(failed["data"]["name"], job.as_str());
        assert_eq!(failed["data"]["site"], site.as_str());
        assert_eq!(failed["data"]["status"], "Failure");
        assert_eq!(failed["data"]["error"], "disk full");
        let broken = events
            .iter()
            .find(|e| e["data"]["new_status"] == "Broken")
            .unwrap();
        assert_eq!(
            (
                broken["data"]["name"].as_str(),
                broken["data"]["old_status"].as_str()
            ),
            (Some(site.as_str()), Some("Pending"))
        );
        cloud.shutdown().await;
    }
}

#[tokio::test]
async fn a_stalled_receiver_holds_up_no_other() {
    for b in backends() {
        let cloud = Cloud::start(&b, opts(fast(true))).await;
        let admin = cloud.admin().await;
        let slow = Receiver::start().await;
        let quick = Receiver::start().await;
        let s = add(&admin, json!({"events": ["site.created"], "url": slow.url})).await;
        add(
            &admin,
            json!({"events": ["site.created"], "url": quick.url}),
        )
        .await;
        slow.stall(Duration::from_secs(10));
        let t = Instant::now();
        let mut sites = Vec::new();
        for i in 0..5 {
            sites.push(admin.new_site(&format!("stall{i}"), &["frappe"]).await.0);
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the API waited for a receiver"
        );
        quick
            .wait("every site.created", 5, |ev| {
                sites
                    .iter()
                    .all(|s| ev.iter().any(|e| e["data"]["name"] == s.as_str()))
            })
            .await;
        assert!(
            t.elapsed() < Duration::from_secs(6),
            "a stalled receiver held up another"
        );
        // The stalled one's attempts time out and are logged as such.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (_, a) = admin
                .get(
                    "press.api.webhook.attempts",
                    &[("name", s["name"].as_str().unwrap())],
                )
                .await;
            let l = a["message"].as_array().cloned().unwrap_or_default();
            if !l.is_empty() {
                assert!(
                    l.iter().all(|x| x["status"] == "Failed"
                        && x["error"].as_str().unwrap_or("").contains("timed out")),
                    "{a}"
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no attempt logged for the stalled receiver"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        cloud.shutdown().await;
    }
}

#[tokio::test]
async fn plan_changes_and_backups_are_sent() {
    for b in backends() {
        let cloud = Cloud::start(&b, opts(fast(true))).await;
        let admin = cloud.admin().await;
        let rx = Receiver::start().await;
        add(&admin, json!({"events": ["site.plan_changed", "backup.completed", "backup.failed"], "url": rx.url})).await;
        let (site, _) = admin.new_site("planned1", &["frappe"]).await;
        admin.wait_status(&site, "Active", 30).await;
        let (s, body) = admin
            .post(
                "press.api.site.change_plan",
                json!({"name": site, "plan": "Pro"}),
            )
            .await;
        assert_eq!(s, 200, "{body}");
        let (s, body) = admin
            .post("press.api.site.backup", json!({"name": site}))
            .await;
        assert_eq!(s, 200, "{body}");
        let events = rx
            .wait("plan change and backup", 30, |ev| {
                ev.iter().any(|e| e["event"] == "site.plan_changed")
                    && ev
                        .iter()
                        .any(|e| e["event"] == "backup.completed" || e["event"] == "backup.failed")
            })
            .await;
        let p = events
            .iter()
            .find(|e| e["event"] == "site.plan_changed")
            .unwrap();
        assert_eq!(
            (
                p["data"]["name"].as_str(),
                p["data"]["old_plan"].as_str(),
                p["data"]["new_plan"].as_str()
            ),
            (Some(site.as_str()), Some("Starter"), Some("Pro"))
        );
        let bk = events
            .iter()
            .find(|e| e["event"].as_str().unwrap().starts_with("backup."))
            .unwrap();
        assert_eq!(bk["data"]["site"], site.as_str());
        assert_eq!(bk["data"]["job_type"], "Backup Site");
        // The same plan again is no change and sends nothing.
        let (s, _) = admin
            .post(
                "press.api.site.change_plan",
                json!({"name": site, "plan": "Pro"}),
            )
            .await;
        assert_eq!(s, 200);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            rx.events()
                .iter()
                .filter(|e| e["event"] == "site.plan_changed")
                .count(),
            1
        );
        cloud.shutdown().await;
    }
}
