//! `BearerVerifier` (what Press calls) against the running server.

use crate::support::{Server, spawn};
use pressoir_identity::admin::{self, NewClient};
use pressoir_identity::crypto::{Alg, SigningKey};
use pressoir_identity::verify::{BearerVerifier, VerifierConfig, VerifyError};
use serde_json::json;
use std::time::Duration;

fn verifier(s: &Server) -> BearerVerifier {
    let mut cfg = VerifierConfig::keycloak(&s.issuer, "press");
    cfg.min_refetch = Duration::ZERO;
    BearerVerifier::new(cfg)
}

#[tokio::test]
async fn accepts_service_account_and_user_tokens() {
    let s = spawn().await;
    let v = verifier(&s);
    let c = v.verify(&s.press_token().await).await.unwrap();
    assert!(c.is_service_account);
    assert_eq!(c.client_id.as_deref(), Some("press"));
    assert_eq!(
        c.preferred_username.as_deref(),
        Some("service-account-press")
    );
    assert!(c.has_role("admin"));

    let t = s.admin_tokens().await;
    let c = v.verify(t["access_token"].as_str().unwrap()).await.unwrap();
    assert!(!c.is_service_account);
    assert_eq!(c.preferred_username.as_deref(), Some("administrator"));
    assert_eq!(c.azp.as_deref(), Some("press"));
    assert!(c.has_role("admin"));
    // An ID token carries the same issuer and audience, but is not an access token.
    let e = v.verify(t["id_token"].as_str().unwrap()).await.unwrap_err();
    assert_eq!(e, VerifyError::NotAccessToken);
}

#[tokio::test]
async fn refuses_unknown_keys_expired_tokens_and_other_audiences() {
    let s = spawn().await;
    let v = verifier(&s);
    let view = s.svc.view("frappe-cloud").await.unwrap().unwrap();
    let key = view.keys.signer(Alg::RS256).unwrap().clone();
    let now = pressoir_core::clock::now_ms() / 1000;
    let claims = |exp: i64, aud: &str| json!({"iss": s.issuer, "aud": aud, "sub": "x", "typ": "Bearer", "exp": exp, "iat": now});

    // Signed by a key the issuer never published.
    let (stranger, _) = SigningKey::generate(Alg::RS256).unwrap();
    let forged = stranger.sign(&claims(now + 300, "press")).unwrap();
    assert_eq!(
        v.verify(&forged).await.unwrap_err(),
        VerifyError::UnknownKey
    );

    let expired = key.sign(&claims(now - 3600, "press")).unwrap();
    assert_eq!(v.verify(&expired).await.unwrap_err(), VerifyError::Expired);

    let mut n = NewClient::new("frappe-cloud", "other");
    n.service_accounts = true;
    let secret = admin::create_client(&s.svc.store, &n)
        .await
        .unwrap()
        .unwrap();
    s.svc.invalidate("frappe-cloud");
    let (st, body) = s
        .token(&[
            ("client_id", "other"),
            ("client_secret", secret.expose()),
            ("grant_type", "client_credentials"),
        ])
        .await;
    assert_eq!(st, 200);
    let e = v
        .verify(body["access_token"].as_str().unwrap())
        .await
        .unwrap_err();
    assert_eq!(e, VerifyError::Audience);

    // A valid signature over a tampered payload, and another issuer.
    let good = s.press_token().await;
    let parts: Vec<&str> = good.split('.').collect();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        parts[1].replacen('e', "f", 1),
        parts[2]
    );
    assert!(v.verify(&tampered).await.is_err());
    let other_iss = key.sign(&json!({"iss": "http://elsewhere/realms/x", "aud": "press", "sub": "x", "exp": now + 300})).unwrap();
    assert_eq!(v.verify(&other_iss).await.unwrap_err(), VerifyError::Issuer);
    assert_eq!(
        v.verify("garbage").await.unwrap_err(),
        VerifyError::Malformed
    );
}

#[tokio::test]
async fn a_rotated_key_is_fetched_on_first_sight_and_refetches_are_throttled() {
    let s = spawn().await;
    let mut cfg = VerifierConfig::keycloak(&s.issuer, "press");
    cfg.min_refetch = Duration::from_secs(3600);
    let v = BearerVerifier::new(cfg);
    v.verify(&s.press_token().await).await.unwrap();
    s.svc.rotate_keys("frappe-cloud").await.unwrap();
    let fresh = s.press_token().await;
    // Within the refetch interval an unknown kid is refused without asking again...
    assert_eq!(v.verify(&fresh).await.unwrap_err(), VerifyError::UnknownKey);
    // ...and a verifier allowed to refetch picks the new key up.
    let v = verifier(&s);
    v.verify(&s.press_token().await).await.unwrap();
    s.svc.rotate_keys("frappe-cloud").await.unwrap();
    v.verify(&s.press_token().await).await.unwrap();
}

/// A JWKS endpoint that serves the issuer's keys, or none once `revoked` is set.
async fn jwks_proxy(s: &Server) -> (String, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let revoked = std::sync::Arc::new(AtomicBool::new(false));
    let upstream = format!("{}/protocol/openid-connect/certs", s.issuer);
    let (http, flag) = (s.http.clone(), revoked.clone());
    let app = axum::Router::new().route(
        "/certs",
        axum::routing::get(move || {
            let (http, flag, upstream) = (http.clone(), flag.clone(), upstream.clone());
            async move {
                if flag.load(Ordering::SeqCst) {
                    return axum::Json(json!({"keys": []}));
                }
                let doc = http.get(&upstream).send().await.unwrap().json().await;
                axum::Json(doc.unwrap())
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/certs", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    (url, revoked)
}

#[tokio::test]
async fn a_remembered_token_is_refused_once_its_key_is_revoked() {
    let s = spawn().await;
    let (url, revoked) = jwks_proxy(&s).await;
    let mut cfg = VerifierConfig::keycloak(&s.issuer, "press");
    cfg.jwks_url = url;
    cfg.min_refetch = Duration::ZERO;
    let v = BearerVerifier::new(cfg);
    let token = s.press_token().await;
    let first = v.verify(&token).await.unwrap();
    let again = v.verify(&token).await.unwrap();
    assert!(
        std::sync::Arc::ptr_eq(&first, &again),
        "the second check is the remembered one"
    );
    // The issuer drops the key; the next fetch (here forced, else after max_key_age) sees it.
    revoked.store(true, std::sync::atomic::Ordering::SeqCst);
    v.refresh().await.unwrap();
    assert_eq!(v.verify(&token).await.unwrap_err(), VerifyError::UnknownKey);
    // A key kept across a refetch keeps its tokens valid (checked afresh once).
    revoked.store(false, std::sync::atomic::Ordering::SeqCst);
    v.refresh().await.unwrap();
    let c = v.verify(&token).await.unwrap();
    assert!(!std::sync::Arc::ptr_eq(&first, &c));
}

#[tokio::test]
async fn old_keys_are_fetched_again() {
    let s = spawn().await;
    let (url, revoked) = jwks_proxy(&s).await;
    let mut cfg = VerifierConfig::keycloak(&s.issuer, "press");
    cfg.jwks_url = url;
    cfg.min_refetch = Duration::from_secs(3600);
    cfg.max_key_age = Duration::from_millis(200);
    let v = BearerVerifier::new(cfg);
    let token = s.press_token().await;
    v.verify(&token).await.unwrap();
    revoked.store(true, std::sync::atomic::Ordering::SeqCst);
    v.verify(&token).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(v.verify(&token).await.unwrap_err(), VerifyError::UnknownKey);
}
