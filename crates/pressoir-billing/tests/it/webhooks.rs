use crate::common::*;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug)]
struct Delivery {
    path: String,
    algo: String,
    signature: String,
    unique_key: String,
    body: Bytes,
}

type Log = Arc<Mutex<Vec<Delivery>>>;

/// A webhook receiver on 127.0.0.1:0. `/flaky` fails its first request.
async fn receiver() -> (String, Log) {
    let log: Log = Default::default();
    async fn hit(path: &'static str, log: Log, h: HeaderMap, body: Bytes) -> StatusCode {
        let get = |k: &str| {
            h.get(k)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let mut l = log.lock().unwrap();
        let first = !l.iter().any(|d| d.path == path);
        l.push(Delivery {
            path: path.into(),
            algo: get("x-lago-signature-algorithm"),
            signature: get("x-lago-signature"),
            unique_key: get("x-lago-unique-key"),
            body,
        });
        if path == "/flaky" && first {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::OK
        }
    }
    let app = Router::new()
        .route(
            "/hmac",
            post(|State(l): State<Log>, h: HeaderMap, b: Bytes| hit("/hmac", l, h, b)),
        )
        .route(
            "/jwt",
            post(|State(l): State<Log>, h: HeaderMap, b: Bytes| hit("/jwt", l, h, b)),
        )
        .route(
            "/flaky",
            post(|State(l): State<Log>, h: HeaderMap, b: Bytes| hit("/flaky", l, h, b)),
        )
        .with_state(log.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), log)
}

fn verify_hmac(d: &Delivery) -> bool {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(HMAC_KEY.as_bytes()).unwrap();
    mac.update(&d.body);
    let Ok(sig) = B64.decode(&d.signature) else {
        return false;
    };
    mac.verify_slice(&sig).is_ok()
}

fn verify_jwt(d: &Delivery, public_pem: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct Claims {
        data: String,
        iss: String,
    }
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(public_pem.as_bytes()).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    v.required_spec_claims.clear();
    v.validate_exp = false;
    v.set_issuer(&["http://billing.localhost"]);
    match jsonwebtoken::decode::<Claims>(&d.signature, &key, &v) {
        Ok(t) => {
            t.claims.data.as_bytes() == d.body.as_ref()
                && t.claims.iss == "http://billing.localhost"
        }
        Err(_) => false,
    }
}

fn types(log: &Log, path: &str) -> Vec<String> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|d| d.path == path)
        .map(|d| {
            serde_json::from_slice::<Value>(&d.body).unwrap()["webhook_type"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

#[tokio::test]
async fn webhooks_are_signed_both_ways_and_retried() {
    for b in backends() {
        let s = spawn(b).await;
        let (url, log) = receiver().await;
        let h = s
            .ok(
                "POST",
                "/webhook_endpoints",
                Some(
                    json!({"webhook_endpoint": {"webhook_url": format!("{url}/hmac"),
                "signature_algo": "hmac"}}),
                ),
            )
            .await;
        assert_eq!(h["webhook_endpoint"]["signature_algo"], "hmac");
        let j = s
            .ok(
                "POST",
                "/webhook_endpoints",
                Some(json!({"webhook_endpoint": {"webhook_url": format!("{url}/jwt")}})),
            )
            .await;
        assert_eq!(
            j["webhook_endpoint"]["signature_algo"], "jwt",
            "jwt is Lago's default"
        );
        s.ok(
            "POST",
            "/webhook_endpoints",
            Some(
                json!({"webhook_endpoint": {"webhook_url": format!("{url}/flaky"),
            "signature_algo": "hmac", "event_types": ["customer.created"]}}),
            ),
        )
        .await;
        let (st, v) = s
            .call(
                "POST",
                "/webhook_endpoints",
                Some(json!({"webhook_endpoint": {"webhook_url": format!("{url}/jwt")}})),
            )
            .await;
        assert_eq!(
            (st, v["error_details"]["webhook_url"].clone()),
            (422, json!(["value_already_exist"]))
        );
        let (st, v) = s
            .call(
                "POST",
                "/webhook_endpoints",
                Some(json!({"webhook_endpoint": {"webhook_url": "not a url"}})),
            )
            .await;
        assert_eq!(
            (st, v["error_details"]["webhook_url"].clone()),
            (422, json!(["url_is_invalid"]))
        );
        let list = s.ok("GET", "/webhook_endpoints", None).await;
        assert_eq!(list["webhook_endpoints"].as_array().unwrap().len(), 3);

        let pk = s.ok("GET", "/webhooks/json_public_key", None).await;
        let public_pem = String::from_utf8(
            B64.decode(pk["webhook"]["public_key"].as_str().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert!(public_pem.contains("BEGIN PUBLIC KEY"));

        s.ok(
            "POST",
            "/customers",
            Some(json!({"customer": {"external_id": "hooked"}})),
        )
        .await;
        s.ok(
            "POST",
            "/subscriptions",
            Some(json!({"subscription": {"external_customer_id": "hooked",
            "plan_code": "starter_monthly", "external_id": "site-h"}})),
        )
        .await;
        s.ok(
            "POST",
            "/events",
            Some(
                json!({"event": {"transaction_id": "e1", "external_subscription_id": "site-h",
            "code": "no_such_metric"}}),
            ),
        )
        .await;
        s.ok("DELETE", "/subscriptions/site-h", None).await;

        let want = [
            "customer.created",
            "subscription.started",
            "event.error",
            "subscription.terminated",
            "invoice.created",
        ];
        for path in ["/hmac", "/jwt"] {
            eventually(10, || async {
                let got = types(&log, path);
                want.iter()
                    .all(|w| got.iter().any(|g| g == w))
                    .then_some(())
            })
            .await;
        }
        // The flaky endpoint only wants customer.created; it failed once and was retried.
        let flaky = eventually(10, || async {
            let l = log.lock().unwrap();
            let f: Vec<Delivery> = l.iter().filter(|d| d.path == "/flaky").cloned().collect();
            (f.len() >= 2).then_some(f)
        })
        .await;
        assert_eq!(flaky[0].unique_key, flaky[1].unique_key);
        assert_eq!(
            types(&log, "/flaky"),
            vec!["customer.created", "customer.created"]
        );

        let all: Vec<Delivery> = log.lock().unwrap().clone();
        for d in &all {
            let body: Value = serde_json::from_slice(&d.body).unwrap();
            let object_type = body["object_type"].as_str().unwrap();
            assert!(body.get(object_type).is_some(), "{body}");
            assert!(!d.unique_key.is_empty());
            match d.algo.as_str() {
                "hmac" => {
                    assert!(verify_hmac(d), "hmac signature of {body}");
                    assert!(!verify_jwt(d, &public_pem));
                }
                "jwt" => {
                    assert!(verify_jwt(d, &public_pem), "jwt signature of {body}");
                    assert!(!verify_hmac(d));
                }
                other => panic!("algorithm {other:?}"),
            }
        }
        let err = all
            .iter()
            .find(|d| d.path == "/hmac" && String::from_utf8_lossy(&d.body).contains("event.error"))
            .unwrap();
        let body: Value = serde_json::from_slice(&err.body).unwrap();
        assert_eq!(body["event_error"]["input_params"]["transaction_id"], "e1");
        let id = h["webhook_endpoint"]["lago_id"].as_str().unwrap();
        s.ok("DELETE", &format!("/webhook_endpoints/{id}"), None)
            .await;
        let (st, _) = s
            .call("GET", &format!("/webhook_endpoints/{id}"), None)
            .await;
        assert_eq!(st, 404);
    }
}
