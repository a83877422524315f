//! The Rust `openidconnect` crate as an independent OIDC client: discovery, the
//! authorization-code flow with PKCE through the login page, the code exchange and ID-token
//! verification.

use crate::support::spawn;
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, RedirectUrl, Scope, TokenResponse,
};
use pressoir_identity::admin::{self, NewClient};

#[tokio::test]
async fn authorization_code_with_pkce_through_the_login_page() {
    let s = spawn().await;
    let redirect = format!("{}/app/callback", s.base);
    let mut n = NewClient::new("frappe-cloud", "webapp");
    n.redirect_uris = vec![redirect.clone()];
    let secret = admin::create_client(&s.svc.store, &n)
        .await
        .unwrap()
        .unwrap();
    s.svc.invalidate("frappe-cloud");

    let http = openidconnect::reqwest::ClientBuilder::new()
        .redirect(openidconnect::reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let meta =
        CoreProviderMetadata::discover_async(IssuerUrl::new(s.issuer.clone()).unwrap(), &http)
            .await
            .unwrap();
    let client = CoreClient::from_provider_metadata(
        meta,
        ClientId::new("webapp".into()),
        Some(ClientSecret::new(secret.expose().to_string())),
    )
    .set_redirect_uri(RedirectUrl::new(redirect.clone()).unwrap());
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, csrf, nonce) = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("profile".into()))
        .set_pkce_challenge(challenge)
        .url();

    // The browser: GET the login page, post the credentials back to it.
    let page = s.http.get(url.as_str()).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("kc-form-login"));
    let wrong = s
        .http
        .post(url.as_str())
        .form(&[("username", "Administrator"), ("password", "nope")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(
        wrong
            .text()
            .await
            .unwrap()
            .contains("Invalid username or password.")
    );
    let r = s
        .http
        .post(url.as_str())
        .form(&[
            ("username", "Administrator"),
            ("password", s.admin_password.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let location = url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    assert!(location.as_str().starts_with(&redirect));
    let q: std::collections::HashMap<_, _> = location.query_pairs().into_owned().collect();
    assert_eq!(q["state"], *csrf.secret());
    assert_eq!(q["iss"], s.issuer);
    let code = q["code"].clone();

    let token = client
        .exchange_code(AuthorizationCode::new(code.clone()))
        .unwrap()
        .set_pkce_verifier(verifier)
        .request_async(&http)
        .await
        .unwrap();
    let id = token.id_token().expect("an id_token for the openid scope");
    let claims = id.claims(&client.id_token_verifier(), &nonce).unwrap();
    assert_eq!(
        claims.preferred_username().unwrap().as_str(),
        "administrator"
    );
    assert_eq!(claims.issuer().as_str(), s.issuer);
    assert!(token.refresh_token().is_some());
    assert_eq!(
        s.userinfo(token.access_token().secret()).await.status(),
        200
    );

    // A code works once.
    let (st, e) = s
        .token(&[
            ("client_id", "webapp"),
            ("client_secret", secret.expose()),
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &redirect),
        ])
        .await;
    assert_eq!((st, e["error"].as_str()), (400, Some("invalid_grant")));
}

#[tokio::test]
async fn a_wrong_pkce_verifier_or_redirect_uri_is_refused() {
    let s = spawn().await;
    let redirect = format!("{}/cb", s.base);
    let (challenge, _) = PkceCodeChallenge::new_random_sha256();
    let url = format!(
        "{}?client_id=press&response_type=code&redirect_uri={}&scope=openid&state=xyz&code_challenge={}&code_challenge_method=S256",
        s.oc("auth"),
        urlenc(&redirect),
        challenge.as_str()
    );
    let bad = format!(
        "{}?client_id=press&response_type=code&redirect_uri={}",
        s.oc("auth"),
        urlenc("http://evil/cb")
    );
    let r = s.http.get(&bad).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let silent = format!("{url}&prompt=none");
    let r = s.http.get(&silent).send().await.unwrap();
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    assert!(
        loc.starts_with(&redirect)
            && loc.contains("error=login_required")
            && loc.contains("state=xyz"),
        "{loc}"
    );
    let r = s
        .http
        .post(&url)
        .form(&[
            ("username", "Administrator"),
            ("password", s.admin_password.as_str()),
        ])
        .send()
        .await
        .unwrap();
    let location = url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    let code = location
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let (st, e) = s
        .token(&[
            ("client_id", "press"),
            ("client_secret", &s.secret),
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &redirect),
            (
                "code_verifier",
                "a-verifier-that-does-not-match-the-challenge-at-all",
            ),
        ])
        .await;
    assert_eq!(
        (st, e["error_description"].as_str()),
        (400, Some("PKCE verification failed"))
    );
}

fn urlenc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
