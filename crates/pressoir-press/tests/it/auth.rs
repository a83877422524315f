use crate::common::*;
use pressoir_press::auth::{Access, BearerGrant, BearerRefusal};
use serde_json::json;

#[tokio::test]
async fn login_sessions_api_keys_and_csrf() {
    for b in backends() {
        let cloud = Cloud::start(&b, Opts::default()).await;
        let guest = cloud.guest();

        let (s, body) = guest.get("ping", &[]).await;
        assert_eq!((s, body), (200, json!({"message": "pong"})));

        // The reference's line: get_logged_user with usr/pwd names the user and starts a session.
        let (s, body, h) = guest
            .post_full(
                "frappe.auth.get_logged_user",
                json!({"usr": "Administrator", "pwd": ADMIN_PW}),
            )
            .await;
        assert_eq!(s, 200, "{body}");
        assert_eq!(body["message"], "Administrator");
        let sid = sid_of(&h).unwrap();
        assert_eq!(body["sid"], sid.as_str());
        let set = h
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .find(|c| c.starts_with("sid="))
            .unwrap();
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Lax"),
            "{set}"
        );

        let mut with_cookie = cloud.guest();
        with_cookie.cookie = Some(sid.clone());
        let (s, body) = with_cookie
            .post("frappe.auth.get_logged_user", json!({}))
            .await;
        assert_eq!((s, body["message"].as_str()), (200, Some("Administrator")));

        // Form login, as curl -d sends it.
        let (s, body, h) = guest
            .send(
                guest
                    .raw(reqwest::Method::POST, "login")
                    .await
                    .form(&[("usr", "Administrator"), ("pwd", ADMIN_PW)]),
            )
            .await;
        assert_eq!(s, 200, "{body}");
        assert_eq!(body["message"], "Logged In");
        assert_eq!(body["full_name"], "Administrator");
        assert!(sid_of(&h).is_some());

        // Wrong password, no credentials, a forged sid.
        let (s, body) = guest
            .post("login", json!({"usr": "Administrator", "pwd": "nope"}))
            .await;
        assert_eq!(s, 401);
        assert_eq!(body["exc_type"], "AuthenticationError");
        let (s, body) = guest.get("press.api.site.list", &[]).await;
        assert_eq!(
            (s, body["exc_type"].as_str()),
            (401, Some("AuthenticationError"))
        );
        let mut forged = cloud.guest();
        forged.cookie = Some("0123456789abcdef".into());
        assert_eq!(forged.get("press.api.site.list", &[]).await.0, 401);

        // CSRF: curl with the cookie and no Origin works; another origin does not, unless it
        // carries the token.
        let (s, _) = with_cookie.post("press.api.account.me", json!({})).await;
        assert_eq!(s, 200);
        let r = with_cookie
            .raw(reqwest::Method::POST, "press.api.site.list")
            .await
            .header("Origin", "http://evil.example")
            .json(&json!({}));
        let (s, body, _) = with_cookie.send(r).await;
        assert_eq!(s, 400, "{body}");
        let r = with_cookie
            .raw(reqwest::Method::POST, "press.api.site.list")
            .await
            .header("Origin", format!("http://{}", cloud.press_addr))
            .json(&json!({}));
        assert_eq!(with_cookie.send(r).await.0, 200);

        // API keys.
        let (s, body) = with_cookie
            .post("press.api.account.create_api_secret", json!({}))
            .await;
        assert_eq!(s, 200);
        let (key, secret) = (
            body["message"]["api_key"].as_str().unwrap(),
            body["message"]["api_secret"].as_str().unwrap(),
        );
        let mut tok = cloud.guest();
        tok.auth = Some(format!("token {key}:{secret}"));
        let (s, body) = tok.get("press.api.account.me", &[]).await;
        assert_eq!(s, 200, "{body}");
        assert_eq!(body["message"]["user"], "Administrator");
        assert_eq!(body["message"]["team"], "Administrator");
        tok.auth = Some(format!("token {key}:wrong"));
        assert_eq!(tok.get("press.api.account.me", &[]).await.0, 401);
        use base64::Engine;
        tok.auth = Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{key}:{secret}"))
        ));
        assert_eq!(tok.get("press.api.account.me", &[]).await.0, 200);

        // Logout ends the session.
        let (s, _) = with_cookie.get("logout", &[]).await;
        assert_eq!(s, 200);
        assert_eq!(with_cookie.get("press.api.account.me", &[]).await.0, 401);
        cloud.shutdown().await;
    }
}

#[tokio::test]
async fn failed_logins_are_limited() {
    let cloud = Cloud::start(
        &Backend::Sqlite,
        Opts {
            agent: false,
            ..Opts::default()
        },
    )
    .await;
    let guest = cloud.guest();
    let mut last = 0;
    for _ in 0..12 {
        last = guest
            .post("login", json!({"usr": "Administrator", "pwd": "guess"}))
            .await
            .0;
    }
    assert_eq!(last, 429);
    // Even the right password is refused during the lockout.
    let (s, body) = guest
        .post("login", json!({"usr": "Administrator", "pwd": ADMIN_PW}))
        .await;
    assert_eq!(
        (s, body["exc_type"].as_str()),
        (429, Some("TooManyRequestsError"))
    );
    cloud.shutdown().await;
}

#[tokio::test]
async fn sessions_expire() {
    let opts = Opts {
        agent: false,
        session_ttl: Some(std::time::Duration::from_millis(800)),
        ..Opts::default()
    };
    let cloud = Cloud::start(&Backend::Sqlite, opts).await;
    let mut c = cloud.guest();
    c.login("Administrator", ADMIN_PW).await;
    assert_eq!(c.get("press.api.account.me", &[]).await.0, 200);
    tokio::time::sleep(std::time::Duration::from_millis(900)).await;
    let (s, body) = c.get("press.api.account.me", &[]).await;
    assert_eq!(
        (s, body["exc_type"].as_str()),
        (401, Some("AuthenticationError"))
    );
    cloud.shutdown().await;
}

struct FakeIdentity;

impl pressoir_press::auth::BearerVerifier for FakeIdentity {
    fn verify(
        &self,
        token: &str,
    ) -> futures::future::BoxFuture<'_, Result<BearerGrant, BearerRefusal>> {
        let grant = |access| {
            Ok(BearerGrant {
                user: "Administrator".to_string(),
                access,
            })
        };
        let r = match token {
            "a-valid-access-token" => grant(Access::Full),
            "a-read-only-token" => grant(Access::ReadOnly),
            "a-token-without-roles" => Err(BearerRefusal::NoAccess),
            _ => Err(BearerRefusal::Invalid),
        };
        Box::pin(async move { r })
    }
}

/// The seam for the identity service: a Bearer token authenticates its user.
#[tokio::test]
async fn bearer_tokens_go_through_the_verifier() {
    let bearer = pressoir_press::Bearer(std::sync::Arc::new(FakeIdentity));
    let cloud = Cloud::start(
        &Backend::Sqlite,
        Opts {
            agent: false,
            bearer: Some(bearer),
            ..Opts::default()
        },
    )
    .await;
    let mut c = cloud.guest();
    c.auth = Some("Bearer a-valid-access-token".into());
    let (s, body) = c.get("press.api.account.me", &[]).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["message"]["user"], "Administrator");
    c.auth = Some("Bearer forged".into());
    assert_eq!(c.get("press.api.account.me", &[]).await.0, 401);
    c.auth = Some("Bearer a-token-without-roles".into());
    let (s, body) = c.get("press.api.account.me", &[]).await;
    assert_eq!(
        (s, body["exc_type"].as_str()),
        (403, Some("PermissionError"))
    );
    // Read-only: reads answer, writes are a PermissionError.
    c.auth = Some("Bearer a-read-only-token".into());
    let (s, body) = c.get("press.api.site.list", &[]).await;
    assert_eq!(s, 200, "{body}");
    let (s, body) = c
        .post(
            "press.api.site.new",
            json!({"site": {"name": "readonly", "apps": ["frappe"], "plan": "Starter"}}),
        )
        .await;
    assert_eq!(
        (s, body["exc_type"].as_str()),
        (403, Some("PermissionError"))
    );
    cloud.shutdown().await;
}
