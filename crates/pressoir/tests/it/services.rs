//! Every service behind `pressoir up`'s gateway, and Press accepting Bearer tokens: from the
//! embedded identity service through `up`, and from an outside issuer (a JWKS served by the
//! test, as a real Keycloak would) through `press serve --oidc-*`.

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const CLIENT_SECRET: &str = "press-client-secret";
const BILLING_KEY: &str = "billing-test-key";
const S3_SECRET: &str = "s3-test-secret";

struct Proc {
    child: Child,
    port: u16,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary and waits for its ready line; the port follows `marker` in it.
fn start(args: &[&str], marker: &str) -> Proc {
    let child = Command::new(env!("CARGO_BIN_EXE_pressoir"))
        .args(args)
        .env("PRESSOIR_ADMIN_PASSWORD", "admin")
        .env("PRESSOIR_OIDC_CLIENT_SECRET", CLIENT_SECRET)
        .env("PRESSOIR_BILLING_API_KEY", BILLING_KEY)
        .env("PRESSOIR_S3_SECRET_KEY", S3_SECRET)
        .env_remove("PRESSOIR_S3_ACCESS_KEY")
        .env_remove("PRESSOIR_AGENT_PASSWORD")
        .env_remove("PRESSOIR_DATABASE_URL")
        .env_remove("PRESSOIR_DATA_DIR")
        .env_remove("PRESSOIR_OIDC_ISSUER")
        .env_remove("PRESSOIR_OIDC_AUDIENCE")
        .env_remove("PRESSOIR_OIDC_JWKS_URL")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run pressoir");
    // Owned by a Proc at once, so a start that fails below still kills and reaps the child.
    let mut proc = Proc { child, port: 0 };
    let out = proc.child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("a ready line");
        if line.contains("ready")
            && let Some(rest) = line.split(marker).nth(1)
        {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            proc.port = digits.parse().unwrap();
            return proc;
        }
    }
}

/// curl with every `*.localhost` name used here resolved to loopback; returns (status, body).
fn curl(port: u16, args: &[&str]) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "--max-time", "10", "-w", "\n%{http_code}"]);
    for h in [
        "auth.localhost",
        "s3.localhost",
        "billing.localhost",
        "cloud.localhost",
        "other.example",
    ] {
        cmd.args(["--resolve", &format!("{h}:{port}:127.0.0.1")]);
    }
    let out = cmd
        .args(args.iter().map(|a| a.replace("30080", &port.to_string())))
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn have_curl() -> bool {
    Command::new("curl").arg("--version").output().is_ok()
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let d = std::env::temp_dir().join(format!("pressoir-{tag}-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// An Ed25519 signing key of the test's own, and its JWKS.
struct TestKey {
    der: Vec<u8>,
    jwks: Value,
}

impl TestKey {
    fn new(kid: &str) -> TestKey {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(doc.as_ref()).unwrap();
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
        TestKey {
            der: doc.as_ref().to_vec(),
            jwks: json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig"}]}),
        }
    }

    fn sign(&self, kid: &str, claims: &Value) -> String {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        h.kid = Some(kid.to_string());
        jsonwebtoken::encode(
            &h,
            claims,
            &jsonwebtoken::EncodingKey::from_ed_der(&self.der),
        )
        .unwrap()
    }
}

fn claims(iss: &str, aud: &str, exp: i64, user: &str, roles: &[&str]) -> Value {
    json!({
        "iss": iss, "aud": aud, "sub": format!("sub-{user}"), "exp": exp, "iat": now() - 10,
        "typ": "Bearer", "azp": "press", "preferred_username": user,
        "realm_access": {"roles": roles},
    })
}

fn site_list(port: u16, token: &str) -> (u16, String) {
    curl(
        port,
        &[
            "http://cloud.localhost:30080/api/method/press.api.site.list",
            "-H",
            &format!("Authorization: Bearer {token}"),
        ],
    )
}

#[test]
fn up_serves_identity_s3_and_billing_and_press_takes_identity_tokens() {
    if !have_curl() {
        println!("SKIPPED: curl is not installed");
        return;
    }
    check_up(None);
}

/// The same on PostgreSQL (a fresh database: `up` gives each service a fixed schema in it).
#[test]
fn up_serves_every_service_on_postgres() {
    let Some(url) = pressoir_core::db::test_postgres_url() else {
        println!("SKIPPED: PRESSOIR_TEST_POSTGRES_URL is unset");
        return;
    };
    if !have_curl() || Command::new("psql").arg("--version").output().is_err() {
        println!("SKIPPED: curl or psql is not installed");
        return;
    }
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let db = format!("t_up_{}_{n}", std::process::id());
    let psql = |sql: &str| {
        let out = Command::new("psql")
            .args([url.as_str(), "-qc", sql])
            .output()
            .expect("psql runs");
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    psql(&format!("CREATE DATABASE {db}"));
    let (base, query) = url
        .split_once('?')
        .map_or((url.as_str(), String::new()), |(b, q)| (b, format!("?{q}")));
    let db_url = format!("{}/{db}{query}", base.rsplit_once('/').unwrap().0);
    check_up(Some(&db_url));
    psql(&format!("DROP DATABASE {db} WITH (FORCE)"));
}

fn check_up(database_url: Option<&str>) {
    let dir = temp_dir("services");
    let mut args = vec![
        "up",
        "--listen",
        "127.0.0.1:0",
        "--agent-listen",
        "127.0.0.1:0",
        "--data-dir",
        dir.to_str().unwrap(),
    ];
    if let Some(u) = database_url {
        args.extend(["--database-url", u]);
    }
    let u = start(&args, "http://127.0.0.1:");
    let p = u.port;

    // The reference's Keycloak lines, through the gateway with Host auth.localhost.
    let (code, body) = curl(
        p,
        &[
            "-X",
            "POST",
            "http://auth.localhost:30080/realms/frappe-cloud/protocol/openid-connect/token",
            "-d",
            "client_id=press",
            "-d",
            &format!("client_secret={CLIENT_SECRET}"),
            "-d",
            "grant_type=client_credentials",
        ],
    );
    assert_eq!(code, 200, "{body}");
    let token = json_of(&body)["access_token"]
        .as_str()
        .expect("access_token")
        .to_string();
    let (code, body) = curl(
        p,
        &[
            "http://auth.localhost:30080/realms/frappe-cloud/protocol/openid-connect/userinfo",
            "-H",
            &format!("Authorization: Bearer {token}"),
        ],
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        json_of(&body)["preferred_username"],
        "service-account-press",
        "{body}"
    );
    // `/realms/` and `/auth/realms/` route to identity on any host.
    let (code, body) = curl(
        p,
        &["http://127.0.0.1:30080/auth/realms/frappe-cloud/.well-known/openid-configuration"],
    );
    assert_eq!(code, 200, "{body}");
    let issuer = json_of(&body)["issuer"].as_str().unwrap().to_string();
    assert_eq!(
        issuer,
        format!("http://auth.localhost:{p}/realms/frappe-cloud")
    );

    // Press takes the embedded IdP's token (the `press` service account is its system client).
    let (code, body) = site_list(p, &token);
    assert_eq!(code, 200, "{body}");
    assert!(json_of(&body)["message"].is_array(), "{body}");

    // A token signed by a key the IdP never published: 401.
    let stranger = TestKey::new("stranger");
    let forged = stranger.sign(
        "stranger",
        &claims(
            &issuer,
            "press",
            now() + 300,
            "service-account-press",
            &["admin"],
        ),
    );
    let (code, body) = site_list(p, &forged);
    assert_eq!(code, 401, "{body}");
    // A tampered token (its claims changed under the IdP's signature): 401.
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(
        serde_json::to_vec(&claims(
            &issuer,
            "press",
            now() + 300,
            "Administrator",
            &["admin"],
        ))
        .unwrap(),
    );
    let (code, body) = site_list(p, &parts.join("."));
    assert_eq!(code, 401, "{body}");

    // A token the IdP issues to another client carries that client's `aud`: 401 at Press.
    let (code, body) = curl(
        p,
        &[
            "-X",
            "POST",
            "http://auth.localhost:30080/admin/realms/frappe-cloud/clients",
            "-H",
            &format!("Authorization: Bearer {token}"),
            "-H",
            "Content-Type: application/json",
            "-d",
            r#"{"clientId": "other-app", "secret": "other-secret", "serviceAccountsEnabled": true}"#,
        ],
    );
    assert_eq!(code, 201, "{body}");
    let (code, body) = curl(
        p,
        &[
            "-X",
            "POST",
            "http://auth.localhost:30080/realms/frappe-cloud/protocol/openid-connect/token",
            "-d",
            "client_id=other-app",
            "-d",
            "client_secret=other-secret",
            "-d",
            "grant_type=client_credentials",
        ],
    );
    assert_eq!(code, 200, "{body}");
    let other = json_of(&body)["access_token"].as_str().unwrap().to_string();
    let (code, body) = site_list(p, &other);
    assert_eq!(code, 401, "{body}");

    // User tokens: Keycloak lowercases `administrator`; with the admin role it is Press's
    // Administrator. Another user is their email, and must be a Press user.
    let password_token = |user: &str, pw: &str| {
        let (code, body) = curl(
            p,
            &[
                "-X",
                "POST",
                "http://auth.localhost:30080/realms/frappe-cloud/protocol/openid-connect/token",
                "-d",
                "client_id=press",
                "-d",
                &format!("client_secret={CLIENT_SECRET}"),
                "-d",
                "grant_type=password",
                "-d",
                &format!("username={user}"),
                "-d",
                &format!("password={pw}"),
            ],
        );
        assert_eq!(code, 200, "{user}: {body}");
        json_of(&body)["access_token"].as_str().unwrap().to_string()
    };
    let logged_user = |t: &str| {
        curl(
            p,
            &[
                "http://cloud.localhost:30080/api/method/frappe.auth.get_logged_user",
                "-H",
                &format!("Authorization: Bearer {t}"),
            ],
        )
    };
    let (code, body) = logged_user(&password_token("Administrator", "admin"));
    assert_eq!(
        (code, json_of(&body)["message"].clone()),
        (200, json!("Administrator")),
        "{body}"
    );
    // Users of the IdP, given Press's realm roles through the admin API, as in Keycloak:
    // `press-user` acts as the Press user, `press-read` reads only, no Press role is a 403.
    for (name, role) in [
        ("jane", Some("press-user")),
        ("ghost", Some("press-user")),
        ("reader", Some("press-read")),
        ("norole", None),
    ] {
        let (code, body) = curl(
            p,
            &[
                "-X",
                "POST",
                "http://auth.localhost:30080/admin/realms/frappe-cloud/users",
                "-H",
                &format!("Authorization: Bearer {token}"),
                "-H",
                "Content-Type: application/json",
                "-d",
                &json!({"username": name, "email": format!("{name}@example.com"), "enabled": true,
                "credentials": [{"type": "password", "value": "user-pw-1", "temporary": false}]})
                .to_string(),
            ],
        );
        assert_eq!(code, 201, "{body}");
        let id = json_of(&body)["id"].as_str().unwrap().to_string();
        if let Some(role) = role {
            let (code, body) = curl(
                p,
                &[
                    "-X",
                    "POST",
                    &format!(
                        "http://auth.localhost:30080/admin/realms/frappe-cloud/users/{id}/role-mappings/realm"
                    ),
                    "-H",
                    &format!("Authorization: Bearer {token}"),
                    "-H",
                    "Content-Type: application/json",
                    "-d",
                    &json!([{"name": role}]).to_string(),
                ],
            );
            assert_eq!(code, 204, "{body}");
        }
    }
    for (user, team) in [
        ("jane@example.com", None),
        ("reader@example.com", Some("Administrator")),
        ("norole@example.com", Some("Administrator")),
    ] {
        let mut add = Command::new(env!("CARGO_BIN_EXE_pressoir"));
        add.args(["press", "user", "add", "--data-dir", dir.to_str().unwrap()]);
        if let Some(u) = database_url {
            add.args(["--database-url", u]);
        }
        if let Some(t) = team {
            add.args(["--team", t]);
        }
        let out = add
            .arg(user)
            .env("PRESSOIR_ADMIN_PASSWORD", "admin")
            .env("PRESSOIR_USER_PASSWORD", "press-pw-1")
            .env_remove("PRESSOIR_DATABASE_URL")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (code, body) = logged_user(&password_token("jane", "user-pw-1"));
    assert_eq!(
        (code, json_of(&body)["message"].clone()),
        (200, json!("jane@example.com")),
        "{body}"
    );
    // The role is there but the Press user is not: 401.
    let (code, body) = logged_user(&password_token("ghost", "user-pw-1"));
    assert_eq!(code, 401, "{body}");
    // A Press user whose token holds no Press role: 403, not full access.
    let norole = password_token("norole", "user-pw-1");
    let (code, body) = site_list(p, &norole);
    assert_eq!(code, 403, "{body}");
    assert_eq!(json_of(&body)["exc_type"], "PermissionError", "{body}");
    // Read-only: the read methods answer, the writes are a PermissionError.
    let reader = password_token("reader", "user-pw-1");
    let (code, body) = site_list(p, &reader);
    assert_eq!(code, 200, "{body}");
    assert!(json_of(&body)["message"].is_array(), "{body}");
    let call = |t: &str, method: &str, data: &str| {
        curl(
            p,
            &[
                "-X",
                "POST",
                &format!("http://cloud.localhost:30080/api/method/press.api.{method}"),
                "-H",
                &format!("Authorization: Bearer {t}"),
                "-H",
                "Content-Type: application/json",
                "-d",
                data,
            ],
        )
    };
    let (code, body) = call(&reader, "server.list", "{}");
    assert_eq!(code, 200, "{body}");
    let new_site = r#"{"site": {"name": "readonly1", "apps": ["frappe"], "plan": "Starter"}}"#;
    let (code, body) = call(&reader, "site.new", new_site);
    assert_eq!(code, 403, "{body}");
    assert_eq!(json_of(&body)["exc_type"], "PermissionError", "{body}");
    // The system client's token makes the site; the reader sees it and cannot archive it.
    let (code, body) = call(&token, "site.new", new_site);
    assert_eq!(code, 200, "{body}");
    let (code, body) = call(&reader, "site.get", r#"{"name": "readonly1"}"#);
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        json_of(&body)["message"]["name"],
        "readonly1.cloud.localhost",
        "{body}"
    );
    let (code, body) = call(&reader, "site.archive", r#"{"name": "readonly1"}"#);
    assert_eq!(code, 403, "{body}");
    assert_eq!(json_of(&body)["exc_type"], "PermissionError", "{body}");

    // Sessions keep working beside Bearer tokens.
    let (code, body) = curl(
        p,
        &[
            "-X",
            "POST",
            "http://cloud.localhost:30080/api/method/frappe.auth.get_logged_user",
            "-H",
            "Content-Type: application/json",
            "-d",
            r#"{"usr": "Administrator", "pwd": "admin"}"#,
        ],
    );
    assert_eq!(code, 200, "{body}");

    // Billing: the Lago API on Host billing. and under /api/v1/ on any host.
    for url in [
        "http://billing.localhost:30080/api/v1/customers",
        "http://other.example:30080/api/v1/customers",
    ] {
        let (code, body) = curl(
            p,
            &[url, "-H", &format!("Authorization: Bearer {BILLING_KEY}")],
        );
        assert_eq!(code, 200, "{url}: {body}");
        assert!(json_of(&body)["customers"].is_array(), "{body}");
    }
    let (code, _) = curl(
        p,
        &[
            "http://billing.localhost:30080/api/v1/customers",
            "-H",
            "Authorization: Bearer nope",
        ],
    );
    assert_eq!(code, 401);

    // S3: ListBuckets with SigV4 on Host s3.localhost (curl's signer; boto3 too when available).
    let empty_sha = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    let sigv4 = |secret: &str| {
        curl(
            p,
            &[
                "--aws-sigv4",
                "aws:amz:us-east-1:s3",
                "--user",
                &format!("minioadmin:{secret}"),
                "-H",
                &format!("x-amz-content-sha256: {empty_sha}"),
                "http://s3.localhost:30080/",
            ],
        )
    };
    let (code, body) = sigv4(S3_SECRET);
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("<ListAllMyBucketsResult") && body.contains("<Name>backups</Name>"),
        "{body}"
    );
    let (code, body) = sigv4("wrong-secret");
    assert_eq!(code, 403, "{body}");
    match std::env::var("PRESSOIR_TEST_PYTHON") {
        Err(_) => println!("SKIPPED: boto3 ListBuckets (PRESSOIR_TEST_PYTHON is unset)"),
        Ok(py) => {
            let script = r#"
import sys, boto3
from botocore.config import Config
port, secret = sys.argv[1], sys.argv[2]
s3 = boto3.client('s3', endpoint_url=f'http://127.0.0.1:{port}', aws_access_key_id='minioadmin',
                  aws_secret_access_key=secret, region_name='us-east-1',
                  config=Config(s3={'addressing_style': 'path'}))
# Host s3.localhost, as the reference's endpoint, while connecting to loopback.
s3.meta.events.register('before-sign.s3', lambda request, **kw: request.headers.__setitem__('Host', f's3.localhost:{port}'))
print(' '.join(b['Name'] for b in s3.list_buckets()['Buckets']))
"#;
            let out = Command::new(py)
                .args(["-c", script, &p.to_string(), S3_SECRET])
                .output()
                .expect("python runs");
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{stdout} {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                stdout.split_whitespace().any(|b| b == "backups"),
                "{stdout}"
            );
        }
    }
    drop(u);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A JWKS endpoint on loopback, as an outside issuer would publish it; counts its requests.
fn serve_jwks(jwks: Value) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        let body = jwks.to_string();
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (port, hits)
}

#[test]
fn press_serve_takes_an_outside_issuers_tokens_by_configuration() {
    if !have_curl() {
        println!("SKIPPED: curl is not installed");
        return;
    }
    let key = TestKey::new("kc-key-1");
    let (jwks_port, hits) = serve_jwks(key.jwks.clone());
    let issuer = "https://keycloak.example/realms/frappe-cloud";
    let dir = temp_dir("press-oidc");
    let jwks_url = format!("http://127.0.0.1:{jwks_port}/certs");
    let press = start(
        &[
            "press",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            dir.to_str().unwrap(),
            "--oidc-issuer",
            issuer,
            "--oidc-audience",
            "press",
            "--oidc-jwks-url",
            &jwks_url,
        ],
        "http://127.0.0.1:",
    );
    let p = press.port;
    let ok = key.sign(
        "kc-key-1",
        &claims(issuer, "press", now() + 300, "administrator", &["admin"]),
    );
    let (code, body) = site_list(p, &ok);
    assert_eq!(code, 200, "{body}");
    // The keys are cached: a second token costs no fetch.
    let before = hits.load(std::sync::atomic::Ordering::SeqCst);
    let (code, _) = site_list(p, &ok);
    assert_eq!(code, 200);
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), before);

    let refused = [
        (
            "expired",
            key.sign(
                "kc-key-1",
                &claims(issuer, "press", now() - 3600, "administrator", &["admin"]),
            ),
        ),
        (
            "other audience",
            key.sign(
                "kc-key-1",
                &claims(issuer, "account", now() + 300, "administrator", &["admin"]),
            ),
        ),
        (
            "other issuer",
            key.sign(
                "kc-key-1",
                &claims(
                    "https://evil.example/realms/x",
                    "press",
                    now() + 300,
                    "administrator",
                    &["admin"],
                ),
            ),
        ),
        (
            "unknown key",
            TestKey::new("kc-key-1").sign(
                "kc-key-1",
                &claims(issuer, "press", now() + 300, "administrator", &["admin"]),
            ),
        ),
        (
            "unknown kid",
            key.sign(
                "kc-key-9",
                &claims(issuer, "press", now() + 300, "administrator", &["admin"]),
            ),
        ),
        (
            "no such Press user",
            key.sign(
                "kc-key-1",
                &claims(
                    issuer,
                    "press",
                    now() + 300,
                    "nobody@example.com",
                    &["press-user"],
                ),
            ),
        ),
        ("garbage", "not.a.jwt".to_string()),
    ];
    for (what, token) in refused {
        let (code, body) = site_list(p, &token);
        assert_eq!(code, 401, "{what}: {body}");
        assert!(body.contains("AuthenticationError"), "{what}: {body}");
    }
    // A valid token whose roles grant nothing in Press: 403.
    let bare = key.sign(
        "kc-key-1",
        &claims(
            issuer,
            "press",
            now() + 300,
            "administrator",
            &["offline_access"],
        ),
    );
    let (code, body) = site_list(p, &bare);
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("PermissionError"), "{body}");
    drop(press);

    // A stock Keycloak client without an audience mapper: `aud` is `account`, `azp` the client.
    let press = start(
        &[
            "press",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            dir.to_str().unwrap(),
            "--oidc-issuer",
            issuer,
            "--oidc-jwks-url",
            &jwks_url,
            "--oidc-accept-azp",
        ],
        "http://127.0.0.1:",
    );
    let mut c = claims(issuer, "account", now() + 300, "administrator", &["admin"]);
    let (code, body) = site_list(press.port, &key.sign("kc-key-1", &c));
    assert_eq!(code, 200, "{body}");
    c["azp"] = json!("another-client");
    let (code, body) = site_list(press.port, &key.sign("kc-key-1", &c));
    assert_eq!(code, 401, "{body}");
    drop(press);
    let _ = std::fs::remove_dir_all(&dir);
}
