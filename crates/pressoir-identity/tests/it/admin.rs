//! The admin API (Keycloak's `/admin/realms/...` shapes).

use crate::support::spawn;
use serde_json::{Value, json};

#[tokio::test]
async fn an_admin_adds_a_realm_client_role_and_user_that_can_then_log_in() {
    let s = spawn().await;
    let admin = s.admin_tokens().await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let api = |path: &str| format!("{}/admin/realms{path}", s.base);

    let r = s
        .http
        .post(api(""))
        .json(&json!({"realm": "acme"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = s
        .http
        .post(api(""))
        .bearer_auth(&admin)
        .json(&json!({"realm": "acme"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = s
        .http
        .post(api(""))
        .bearer_auth(&admin)
        .json(&json!({"realm": "acme"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let r = s
        .http
        .post(api(""))
        .bearer_auth(&admin)
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    let r = s
        .http
        .post(api("/acme/roles"))
        .bearer_auth(&admin)
        .json(&json!({"name": "ops"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = s
        .http
        .post(api("/acme/clients"))
        .bearer_auth(&admin)
        .json(
            &json!({"clientId": "portal", "defaultClientScopes": ["openid", "profile", "email"],
                      "attributes": {"access.token.signed.response.alg": "ES256"}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let secret = r.json::<Value>().await.unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let r = s
        .http
        .post(api("/acme/users"))
        .bearer_auth(&admin)
        .json(&json!({"username": "grace", "email": "grace@example.com", "enabled": true,
                      "credentials": [{"type": "password", "value": "s3cret-grace", "temporary": false}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = s
        .http
        .post(api(&format!("/acme/users/{id}/role-mappings/realm")))
        .bearer_auth(&admin)
        .json(&json!([{"name": "ops"}]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let users: Value = s
        .http
        .get(api("/acme/users"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(users[0]["username"], "grace");

    let r = s
        .http
        .post(format!(
            "{}/realms/acme/protocol/openid-connect/token",
            s.base
        ))
        .form(&[
            ("client_id", "portal"),
            ("client_secret", secret.as_str()),
            ("grant_type", "password"),
            ("username", "grace@example.com"),
            ("password", "s3cret-grace"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let t: Value = r.json().await.unwrap();
    let at = t["access_token"].as_str().unwrap();
    assert_eq!(crate::support::header(at)["alg"], "ES256");
    let c = crate::support::claims(at);
    assert_eq!(c["iss"], format!("{}/realms/acme", s.base));
    assert!(
        c["realm_access"]["roles"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "ops")
    );

    // A user without the admin role cannot administer.
    let r = s.http.get(api("")).bearer_auth(at).send().await.unwrap();
    assert_eq!(
        r.status(),
        401,
        "a token of another realm is not an admin token"
    );
    // A user of the admin realm without the admin role is refused with 403.
    let r = s
        .http
        .post(api("/frappe-cloud/users"))
        .bearer_auth(&admin)
        .json(&json!({"username": "viewer", "credentials": [{"type": "password", "value": "viewer-pw"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let (st, t) = s
        .token(&[
            ("client_id", "press"),
            ("client_secret", &s.secret),
            ("grant_type", "password"),
            ("username", "viewer"),
            ("password", "viewer-pw"),
        ])
        .await;
    assert_eq!(st, 200);
    let r = s
        .http
        .get(api(""))
        .bearer_auth(t["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = s
        .http
        .post(api("/acme/keys/rotate"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
