//! The Keycloak OIDC surface over plain HTTP: the reference's curl lines, client
//! authentication, grants, refresh rotation, userinfo, revocation, keys, protection.

use crate::support::{claims, header, spawn, spawn_with};
use pressoir_identity::admin::{self, NewClient, NewUser};
use pressoir_identity::crypto::Alg;
use serde_json::Value;
use std::time::Duration;

#[tokio::test]
async fn the_reference_curl_lines_work_as_written() {
    let s = spawn().await;
    // curl -X POST .../token -d client_id=press -d client_secret=... -d grant_type=client_credentials
    let r = s
        .http
        .post(s.oc("token"))
        .body(format!(
            "client_id=press&client_secret={}&grant_type=client_credentials",
            s.secret
        ))
        .header("content-type", "application/x-www-form-urlencoded")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 300);
    assert_eq!(body["refresh_expires_in"], 0);
    assert_eq!(body["not-before-policy"], 0);
    assert_eq!(body["scope"], "openid profile email");
    assert!(body.get("refresh_token").is_none() && body.get("session_state").is_none());
    let at = body["access_token"].as_str().unwrap();
    let h = header(at);
    assert_eq!(h["alg"], "RS256");
    assert!(h["kid"].is_string());
    let c = claims(at);
    assert_eq!(c["iss"], s.issuer);
    assert_eq!(c["typ"], "Bearer");
    assert_eq!(c["azp"], "press");
    assert_eq!(c["client_id"], "press");
    assert_eq!(c["preferred_username"], "service-account-press");
    assert!(c["jti"].is_string() && c["iat"].is_i64() && c["exp"].is_i64());
    assert!(
        c["realm_access"]["roles"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "admin")
    );

    // GET .../userinfo with Authorization: Bearer <access_token>
    let r = s.userinfo(at).await;
    assert_eq!(r.status(), 200);
    let info: Value = r.json().await.unwrap();
    assert_eq!(info["preferred_username"], "service-account-press");
    assert_eq!(info["sub"], c["sub"]);
}

#[tokio::test]
async fn the_issuer_never_follows_the_host_header_and_old_paths_work() {
    let s = spawn().await;
    let r = s
        .http
        .get(format!("{}/.well-known/openid-configuration", s.issuer))
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    let d: Value = r.json().await.unwrap();
    assert_eq!(d["issuer"], s.issuer);
    assert_eq!(d["token_endpoint"], s.oc("token"));
    assert_eq!(d["jwks_uri"], s.oc("certs"));
    let old = format!(
        "{}/auth/realms/frappe-cloud/protocol/openid-connect/token",
        s.base
    );
    let r = s
        .http
        .post(old)
        .form(&[
            ("client_id", "press"),
            ("client_secret", s.secret.as_str()),
            ("grant_type", "client_credentials"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = s
        .http
        .get(format!("{}/realms/nope", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "Realm does not exist"
    );
    let info: Value = s
        .http
        .get(format!("{}/realms/frappe-cloud", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["realm"], "frappe-cloud");
    assert!(info["public_key"].as_str().unwrap().starts_with("MII"));
}

#[tokio::test]
async fn client_authentication_basic_post_and_its_errors() {
    let s = spawn().await;
    let r = s
        .http
        .post(s.oc("token"))
        .basic_auth("press", Some(&s.secret))
        .form(&[
            ("grant_type", "client_credentials"),
            ("username", ""),
            ("password", ""),
            ("code", ""),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let r = s
        .http
        .post(s.oc("token"))
        .basic_auth("press", Some("wrong"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        "Basic realm=\"frappe-cloud\""
    );
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"], "invalid_client");
    assert_eq!(
        e["error_description"],
        "Invalid client or Invalid client credentials"
    );

    let (st, e) = s
        .token(&[
            ("client_id", "ghost"),
            ("client_secret", "x"),
            ("grant_type", "client_credentials"),
        ])
        .await;
    assert_eq!((st, e["error"].as_str()), (401, Some("invalid_client")));
    let (st, e) = s.token(&[("grant_type", "client_credentials")]).await;
    assert_eq!(
        (st, e["error_description"].as_str()),
        (400, Some("Missing client_id parameter"))
    );
    let (st, e) = s.token(&[("client_id", "press")]).await;
    assert_eq!(
        (st, e["error_description"].as_str()),
        (400, Some("Missing form parameter: grant_type"))
    );
    let (st, e) = s
        .token(&[("client_id", "press"), ("grant_type", "magic")])
        .await;
    assert_eq!(
        (st, e["error"].as_str()),
        (400, Some("unsupported_grant_type"))
    );
    let (st, e) = s
        .token(&[
            ("client_id", "press"),
            ("grant_type", "client_credentials"),
            ("grant_type", "password"),
        ])
        .await;
    assert_eq!(
        (st, e["error_description"].as_str()),
        (400, Some("duplicated parameter"))
    );
    let (st, e) = s
        .token(&[
            ("client_id", "press"),
            ("client_secret", &s.secret),
            ("grant_type", "client_credentials"),
            ("scope", "openid root"),
        ])
        .await;
    assert_eq!((st, e["error"].as_str()), (400, Some("invalid_scope")));
}

#[tokio::test]
async fn userinfo_refuses_bad_tokens_and_tokens_without_openid() {
    let s = spawn().await;
    let r = s.userinfo("not.a.token").await;
    assert_eq!(r.status(), 401);
    let w = r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        w.starts_with("Bearer realm=\"frappe-cloud\"") && w.contains("error=\"invalid_token\""),
        "{w}"
    );

    let mut n = NewClient::new("frappe-cloud", "worker");
    n.service_accounts = true;
    let secret = admin::create_client(&s.svc.store, &n)
        .await
        .unwrap()
        .unwrap();
    s.svc.invalidate("frappe-cloud");
    let (st, body) = s
        .token(&[
            ("client_id", "worker"),
            ("client_secret", secret.expose()),
            ("grant_type", "client_credentials"),
        ])
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["scope"], "profile email");
    let r = s.userinfo(body["access_token"].as_str().unwrap()).await;
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "insufficient_scope"
    );

    // POST with the token in the form also works.
    let at = s.press_token().await;
    let r = s
        .http
        .post(s.oc("userinfo"))
        .form(&[("access_token", at.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn password_grant_refresh_rotation_and_reuse_detection() {
    let s = spawn().await;
    let t = s.admin_tokens().await;
    assert!(t["id_token"].is_string() && t["session_state"].is_string());
    assert_eq!(t["refresh_expires_in"], 1800);
    let c = claims(t["access_token"].as_str().unwrap());
    assert_eq!(c["preferred_username"], "administrator");
    assert_eq!(c["sid"], t["session_state"]);
    let id = claims(t["id_token"].as_str().unwrap());
    assert_eq!(
        (id["typ"].as_str(), id["aud"].as_str()),
        (Some("ID"), Some("press"))
    );

    let rt1 = t["refresh_token"].as_str().unwrap();
    let refresh = |rt: String| {
        let s = &s;
        async move {
            s.token(&[
                ("client_id", "press"),
                ("client_secret", &s.secret),
                ("grant_type", "refresh_token"),
                ("refresh_token", &rt),
            ])
            .await
        }
    };
    let (st, t2) = refresh(rt1.to_string()).await;
    assert_eq!(st, 200, "{t2}");
    let rt2 = t2["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(rt2, rt1);
    assert_eq!(
        s.userinfo(t2["access_token"].as_str().unwrap())
            .await
            .status(),
        200
    );

    // Replaying the first refresh token ends the session: the rotated one dies with it.
    let (st, e) = refresh(rt1.to_string()).await;
    assert_eq!(
        (st, e["error_description"].as_str()),
        (400, Some("Stale token"))
    );
    let (st, e) = refresh(rt2).await;
    assert_eq!(
        (st, e["error_description"].as_str()),
        (400, Some("Session not active"))
    );
    assert_eq!(
        s.userinfo(t2["access_token"].as_str().unwrap())
            .await
            .status(),
        401
    );

    let (st, e) = s
        .token(&[
            ("client_id", "press"),
            ("client_secret", &s.secret),
            ("grant_type", "password"),
            ("username", "Administrator"),
            ("password", "nope"),
        ])
        .await;
    assert_eq!(
        (st, e["error"].as_str(), e["error_description"].as_str()),
        (401, Some("invalid_grant"), Some("Invalid user credentials"))
    );
}

#[tokio::test]
async fn revocation_and_logout_end_tokens() {
    let s = spawn().await;
    let at = s.press_token().await;
    assert_eq!(s.userinfo(&at).await.status(), 200);
    let r = s
        .http
        .post(s.oc("revoke"))
        .form(&[
            ("client_id", "press"),
            ("client_secret", s.secret.as_str()),
            ("token", at.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(s.userinfo(&at).await.status(), 401);

    let t = s.admin_tokens().await;
    let at = t["access_token"].as_str().unwrap();
    let r = s
        .http
        .post(s.oc("logout"))
        .form(&[
            ("client_id", "press"),
            ("client_secret", s.secret.as_str()),
            ("refresh_token", t["refresh_token"].as_str().unwrap()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(s.userinfo(at).await.status(), 401);
    let r = s
        .http
        .post(s.oc("token/introspect"))
        .form(&[
            ("client_id", "press"),
            ("client_secret", s.secret.as_str()),
            ("token", at),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        serde_json::json!({"active": false})
    );
}

#[tokio::test]
async fn keys_rotate_and_old_tokens_stay_valid_until_they_expire() {
    let s = spawn().await;
    let before = s.press_token().await;
    let old_kid = header(&before)["kid"].as_str().unwrap().to_string();
    s.svc.rotate_keys("frappe-cloud").await.unwrap();
    let after = s.press_token().await;
    let new_kid = header(&after)["kid"].as_str().unwrap().to_string();
    assert_ne!(old_kid, new_kid);
    let jwks: Value = s
        .http
        .get(s.oc("certs"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert!(
        kids.contains(&old_kid.as_str()) && kids.contains(&new_kid.as_str()),
        "{kids:?}"
    );
    assert_eq!(s.userinfo(&before).await.status(), 200);
    assert_eq!(s.userinfo(&after).await.status(), 200);
    // Once the old key's grace is over, it leaves the JWKS.
    let later = pressoir_core::clock::now_ms() + 400_000;
    s.svc.store.purge(later).await.unwrap();
    s.svc.invalidate("frappe-cloud");
    let jwks: Value = s
        .http
        .get(s.oc("certs"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        !jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["kid"] == old_kid.as_str())
    );
    assert_eq!(s.userinfo(&before).await.status(), 401);
}

#[tokio::test]
async fn a_client_may_opt_into_es256_or_eddsa() {
    let s = spawn().await;
    for (id, alg) in [("ec", Alg::ES256), ("ed", Alg::EdDSA)] {
        let mut n = NewClient::new("frappe-cloud", id);
        n.service_accounts = true;
        n.alg = alg;
        n.default_scopes = Some(vec!["openid".into(), "profile".into()]);
        let secret = admin::create_client(&s.svc.store, &n)
            .await
            .unwrap()
            .unwrap();
        s.svc.invalidate("frappe-cloud");
        let (st, body) = s
            .token(&[
                ("client_id", id),
                ("client_secret", secret.expose()),
                ("grant_type", "client_credentials"),
            ])
            .await;
        assert_eq!(st, 200);
        let at = body["access_token"].as_str().unwrap();
        assert_eq!(header(at)["alg"], alg.as_str());
        assert_eq!(s.userinfo(at).await.status(), 200);
    }
}

#[tokio::test]
async fn repeated_bad_passwords_lock_the_user_but_not_others() {
    let s = spawn_with(|c| {
        c.brute_force = pressoir_identity::BruteForce {
            free_failures: 2,
            delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
            max_failures: 4,
            lockout: Duration::from_secs(60),
            window: Duration::from_secs(600),
        }
    })
    .await;
    let n = NewUser {
        realm: "frappe-cloud".into(),
        username: "ada".into(),
        password: Some(pressoir_core::Secret::new("ada-password")),
        ..NewUser::default()
    };
    admin::create_user(&s.svc.store, &n).await.unwrap();
    let login = |user: &'static str, pw: &'static str| {
        let s = &s;
        async move {
            s.token(&[
                ("client_id", "press"),
                ("client_secret", &s.secret),
                ("grant_type", "password"),
                ("username", user),
                ("password", pw),
            ])
            .await
            .0
        }
    };
    for _ in 0..4 {
        assert_eq!(login("Administrator", "guess").await, 401);
    }
    // Locked: even the right password is refused for now.
    let right = s.admin_password.clone();
    let (st, _) = s
        .token(&[
            ("client_id", "press"),
            ("client_secret", &s.secret),
            ("grant_type", "password"),
            ("username", "Administrator"),
            ("password", &right),
        ])
        .await;
    assert_eq!(st, 401);
    assert_eq!(login("ada", "ada-password").await, 200);
}

#[tokio::test]
async fn repeated_bad_client_secrets_lock_that_client_from_that_address() {
    let s = spawn_with(|c| {
        c.brute_force.max_failures = 3;
        c.brute_force.delay = Duration::from_millis(1);
        c.brute_force.max_delay = Duration::from_millis(2);
    })
    .await;
    for _ in 0..3 {
        let (st, _) = s
            .token(&[
                ("client_id", "press"),
                ("client_secret", "guess"),
                ("grant_type", "client_credentials"),
            ])
            .await;
        assert_eq!(st, 401);
    }
    let (st, _) = s
        .token(&[
            ("client_id", "press"),
            ("client_secret", &s.secret),
            ("grant_type", "client_credentials"),
        ])
        .await;
    assert_eq!(st, 401);
}

#[tokio::test]
async fn the_token_endpoint_is_rate_limited() {
    let s = spawn_with(|c| c.token_rate_limit = "3/min".parse().unwrap()).await;
    for _ in 0..3 {
        let (st, _) = s
            .token(&[
                ("client_id", "press"),
                ("client_secret", &s.secret),
                ("grant_type", "client_credentials"),
            ])
            .await;
        assert_eq!(st, 200);
    }
    let r = s
        .http
        .post(s.oc("token"))
        .form(&[
            ("client_id", "press"),
            ("client_secret", s.secret.as_str()),
            ("grant_type", "client_credentials"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "temporarily_unavailable"
    );
    // Other endpoints are not limited.
    assert_eq!(
        s.http.get(s.oc("certs")).send().await.unwrap().status(),
        200
    );
}
