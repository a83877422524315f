use pressoir_core::{Secret, Shutdown};
use pressoir_identity::{Config, Service, app_with_service};
use serde_json::Value;
use std::sync::Arc;

pub struct Server {
    pub base: String,
    pub issuer: String,
    pub secret: String,
    pub admin_password: String,
    pub svc: Arc<Service>,
    pub http: reqwest::Client,
    shutdown: Shutdown,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

pub async fn spawn() -> Server {
    spawn_with(|_| {}).await
}

pub async fn spawn_with(f: impl FnOnce(&mut Config)) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let url = pressoir_core::db::sqlite_url(&dir.path().join("identity.sqlite"));
    spawn_on(&url, "identity", dir, f).await
}

pub async fn spawn_on(
    url: &str,
    schema: &str,
    dir: tempfile::TempDir,
    f: impl FnOnce(&mut Config),
) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let secret = Secret::generate(32);
    let admin = Secret::generate(16);
    let mut cfg = Config::new(url, &base, secret.clone(), admin.clone());
    cfg.db_schema = schema.to_string();
    cfg.token_rate_limit = pressoir_core::RateSpec::off();
    cfg.client_redirect_uris = vec![format!("{base}/cb")];
    f(&mut cfg);
    let shutdown = Shutdown::new();
    let (router, svc) = app_with_service(cfg, shutdown.clone()).await.unwrap();
    let s = shutdown.clone();
    tokio::spawn(async move { pressoir_core::serve(listener, router, s).await });
    Server {
        issuer: format!("{base}/realms/frappe-cloud"),
        base,
        secret: secret.expose().to_string(),
        admin_password: admin.expose().to_string(),
        svc,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        shutdown,
        _dir: dir,
    }
}

impl Server {
    pub fn oc(&self, path: &str) -> String {
        format!("{}/protocol/openid-connect/{path}", self.issuer)
    }

    pub async fn token(&self, form: &[(&str, &str)]) -> (u16, Value) {
        let r = self
            .http
            .post(self.oc("token"))
            .form(form)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }

    /// A client_credentials access token for the seeded client `press`.
    pub async fn press_token(&self) -> String {
        let (s, body) = self
            .token(&[
                ("client_id", "press"),
                ("client_secret", &self.secret),
                ("grant_type", "client_credentials"),
            ])
            .await;
        assert_eq!(s, 200, "{body}");
        body["access_token"].as_str().unwrap().to_string()
    }

    pub async fn admin_tokens(&self) -> Value {
        let (s, body) = self
            .token(&[
                ("client_id", "press"),
                ("client_secret", &self.secret),
                ("grant_type", "password"),
                ("username", "Administrator"),
                ("password", &self.admin_password),
                ("scope", "openid"),
            ])
            .await;
        assert_eq!(s, 200, "{body}");
        body
    }

    pub async fn userinfo(&self, token: &str) -> reqwest::Response {
        self.http
            .get(self.oc("userinfo"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }
}

/// The claims of a JWT, unverified (for asserting on what was issued).
pub fn claims(token: &str) -> Value {
    use base64::Engine;
    let part = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

pub fn header(token: &str) -> Value {
    pressoir_identity::crypto::peek_header(token).unwrap()
}
