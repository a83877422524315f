//! `GET /agent/benches/{bench}/sites/{site}/usage`: what Press bills storage from.

use crate::common::*;

const USAGE: &str = "/agent/benches/bench-0001/sites/usage.localhost/usage";

#[tokio::test]
async fn usage_measures_the_database_and_the_files_of_a_site() {
    let a = TestAgent::start(&None, |_| {}).await;
    let job = a.run("New Site", new_site("usage.localhost")).await;
    assert_eq!(job["status"], "Success", "{job}");

    let before: serde_json::Value = {
        let r = a.get(USAGE).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    };
    assert!(before["database_bytes"].as_u64().unwrap() > 0, "{before}");

    // A file of known size, nested, counts as the site's files (not its database).
    let dir = a.sites().join("usage.localhost/private/files");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("invoice.pdf"), vec![7u8; 100_000]).unwrap();
    // A symlink out of the folder is not followed.
    #[cfg(unix)]
    std::os::unix::fs::symlink(a.root.path(), dir.join("escape")).unwrap();

    let r = a.get(USAGE).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "application/json",
        "the agent answers JSON"
    );
    let v: serde_json::Value = r.json().await.unwrap();
    let files = v["files_bytes"].as_u64().unwrap();
    assert!(files >= 100_000, "{v}");
    assert!(
        files < before["files_bytes"].as_u64().unwrap() + 100_000 + 10_000,
        "the symlink's target is not counted: {v}"
    );
    assert_eq!(v["database_bytes"], before["database_bytes"], "{v}");
}

#[tokio::test]
async fn usage_answers_404_400_and_401_in_the_agent_format() {
    let a = TestAgent::start(&None, |_| {}).await;

    let r = a
        .get("/agent/benches/bench-0001/sites/nobody.localhost/usage")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(v.to_string().contains("nobody.localhost"), "{v}");

    let r = a
        .get("/agent/benches/bench-9999/sites/nobody.localhost/usage")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Names that could leave their directory are refused, naming the field.
    for (path, field) in [
        ("/agent/benches/bench-0001/sites/a%2Fb/usage", "site"),
        ("/agent/benches/bench-0001/sites/a..b/usage", "site"),
        ("/agent/benches/a%2Fb/sites/usage.localhost/usage", "bench"),
    ] {
        let r = a.get(path).send().await.unwrap();
        assert_eq!(r.status(), 400, "{path}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert!(v.to_string().contains(field), "{path}: {v}");
    }

    // A literal `..` segment (HTTP clients resolve it away, so sent raw).
    for (path, field) in [
        ("/agent/benches/bench-0001/sites/../usage", "site"),
        ("/agent/benches/../sites/usage.localhost/usage", "bench"),
    ] {
        let (status, body) = raw_get(&a, path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains(field), "{path}: {body}");
    }

    let r = a.client.get(a.url(USAGE)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = a
        .client
        .get(a.url(USAGE))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

/// A GET sent as written, for paths a URL library would normalise.
async fn raw_get(a: &TestAgent, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = a.base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {PASSWORD}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, out)
}
