//! `pressoir up` on free ports with a temporary data dir, driven with the reference's curl
//! lines (curl itself, `--resolve` for the `*.localhost` names).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Up {
    child: Child,
    port: u16,
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn up(data: &std::path::Path) -> Up {
    up_with(data, &[])
}

fn up_with(data: &std::path::Path, extra: &[&str]) -> Up {
    let child = Command::new(env!("CARGO_BIN_EXE_pressoir"))
        .args([
            "up",
            "--listen",
            "127.0.0.1:0",
            "--agent-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(data)
        .args(extra)
        .env("PRESSOIR_ADMIN_PASSWORD", "admin")
        .env_remove("PRESSOIR_AGENT_PASSWORD")
        .env_remove("PRESSOIR_DATABASE_URL")
        .env_remove("PRESSOIR_DATA_DIR")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run pressoir up");
    // Owned by an Up at once, so a start that fails below still kills and reaps the child.
    let mut up = Up { child, port: 0 };
    let out = up.child.stdout.take().unwrap();
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
        if let Some(rest) = line.split("http://127.0.0.1:").nth(1)
            && line.contains("ready")
        {
            up.port = rest.split('/').next().unwrap().parse().unwrap();
            return up;
        }
    }
}

fn curl(port: u16, args: &[&str]) -> String {
    let resolve = format!("cloud.localhost:{port}:127.0.0.1");
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10", "--resolve", &resolve])
        .args(args.iter().map(|a| a.replace("30080", &port.to_string())))
        .output()
        .expect("curl runs");
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn wait_for(port: u16, cookies: &str, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let body = curl(
            port,
            &[
                "-b",
                cookies,
                "http://cloud.localhost:30080/api/method/press.api.site.get?name=mysite",
            ],
        );
        if body.contains(needle) {
            return body;
        }
        assert!(Instant::now() < deadline, "never saw {needle}: {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_reference_curl_lines_work_against_pressoir_up() {
    if Command::new("curl").arg("--version").output().is_err() {
        println!("SKIPPED: curl is not installed");
        return;
    }
    let dir = tempfile_dir();
    let jar = dir.join("cookies.txt");
    let jar = jar.to_str().unwrap();
    {
        let u = up(&dir);
        let p = u.port;
        assert_eq!(
            curl(p, &["http://127.0.0.1:30080/api/method/ping"]),
            r#"{"message":"pong"}"#
        );
        let body = curl(
            p,
            &[
                "-c",
                jar,
                "-X",
                "POST",
                "http://cloud.localhost:30080/api/method/frappe.auth.get_logged_user",
                "-H",
                "Content-Type: application/json",
                "-d",
                r#"{"usr": "Administrator", "pwd": "admin"}"#,
            ],
        );
        assert!(body.contains(r#""message":"Administrator""#), "{body}");
        let body = curl(
            p,
            &[
                "-b",
                jar,
                "-X",
                "POST",
                "http://cloud.localhost:30080/api/method/press.api.site.new",
                "-H",
                "Content-Type: application/json",
                "-d",
                r#"{"site": {"name": "mysite", "apps": ["frappe", "erpnext"], "plan": "Starter"}}"#,
            ],
        );
        assert!(
            body.contains(r#""site":"mysite.cloud.localhost""#),
            "{body}"
        );
        wait_for(p, jar, r#""status":"Active""#);
        let body = curl(
            p,
            &[
                "-b",
                jar,
                "http://cloud.localhost:30080/api/method/press.api.site.list",
            ],
        );
        assert!(body.contains("mysite.cloud.localhost"), "{body}");
        let body = curl(
            p,
            &[
                "-b",
                jar,
                "http://cloud.localhost:30080/api/method/press.api.server.list",
            ],
        );
        assert!(
            body.contains(r#""name":"app-server-1""#) && body.contains(r#""status":"Active""#),
            "{body}"
        );
        let body = curl(
            p,
            &[
                "-b",
                jar,
                "-X",
                "GET",
                "http://cloud.localhost:30080/api/method/press.api.server.status",
                "-H",
                "Content-Type: application/json",
                "-d",
                r#"{"server": "app-server-1"}"#,
            ],
        );
        assert!(body.contains(r#""reachable":true"#), "{body}");
        // Without credentials: 401 in Frappe's body.
        let body = curl(
            p,
            &["http://cloud.localhost:30080/api/method/press.api.site.list"],
        );
        assert!(body.contains("AuthenticationError"), "{body}");
    }
    // A restart on the same data dir keeps everything; the generated agent password was stored.
    let creds = std::fs::read_to_string(dir.join("credentials.json")).unwrap();
    assert!(creds.contains("agent_password"));
    {
        let u = up(&dir);
        let p = u.port;
        curl(
            p,
            &[
                "-c",
                jar,
                "-X",
                "POST",
                "http://cloud.localhost:30080/api/method/login",
                "-d",
                "usr=Administrator",
                "-d",
                "pwd=admin",
            ],
        );
        wait_for(p, jar, r#""status":"Active""#);
        let body = curl(
            p,
            &[
                "-b",
                jar,
                "-X",
                "POST",
                "http://cloud.localhost:30080/api/method/press.api.site.archive",
                "-H",
                "Content-Type: application/json",
                "-d",
                r#"{"name": "mysite.cloud.localhost"}"#,
            ],
        );
        assert!(body.contains("job"), "{body}");
        wait_for(p, jar, r#""status":"Archived""#);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `up` backs every seeded plan's sites up on a schedule (`--backup-every-secs`, here 1 s) to
/// the embedded S3 and keeps `--backup-keep` of them (here 2), deleting older ones.
#[test]
fn up_backs_sites_up_on_schedule_and_prunes_beyond_keep() {
    if Command::new("curl").arg("--version").output().is_err() {
        println!("SKIPPED: curl is not installed");
        return;
    }
    let dir = tempfile_dir();
    let jar = dir.join("cookies.txt");
    let jar = jar.to_str().unwrap();
    {
        let u = up_with(&dir, &["--backup-every-secs", "1", "--backup-keep", "2"]);
        let p = u.port;
        curl(
            p,
            &[
                "-c",
                jar,
                "-X",
                "POST",
                "http://cloud.localhost:30080/api/method/login",
                "-d",
                "usr=Administrator",
                "-d",
                "pwd=admin",
            ],
        );
        let body = curl(
            p,
            &[
                "-b",
                jar,
                "-X",
                "POST",
                "http://cloud.localhost:30080/api/method/press.api.site.new",
                "-H",
                "Content-Type: application/json",
                "-d",
                r#"{"site": {"name": "mysite", "apps": ["frappe"], "plan": "Starter"}}"#,
            ],
        );
        assert!(body.contains("mysite.cloud.localhost"), "{body}");
        wait_for(p, jar, r#""status":"Active""#);
        // Backups come every second; once one was deleted, at most keep (2) scheduled ones
        // (and one more just taken) are listed, all successful.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let jobs = curl(
                p,
                &[
                    "-b",
                    jar,
                    "http://cloud.localhost:30080/api/method/press.api.site.jobs?name=mysite&limit_page_length=1000",
                ],
            );
            let jobs: serde_json::Value = serde_json::from_str(&jobs).unwrap();
            let deleted = jobs["message"]
                .as_array()
                .unwrap()
                .iter()
                .any(|j| j["job_type"] == "Delete Site Backup" && j["status"] == "Success");
            if deleted {
                break;
            }
            assert!(Instant::now() < deadline, "no backup was pruned: {jobs}");
            std::thread::sleep(Duration::from_millis(200));
        }
        let body = curl(
            p,
            &[
                "-b",
                jar,
                "http://cloud.localhost:30080/api/method/press.api.site.backups?name=mysite",
            ],
        );
        let list: serde_json::Value = serde_json::from_str(&body).unwrap();
        let ok: Vec<_> = list["message"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["status"] == "Success" && b["deleting"] == false)
            .collect();
        assert!(!ok.is_empty() && ok.len() <= 3, "{body}");
        assert!(ok.iter().all(|b| b["scheduled"] == true), "{body}");
        // The backups went to the embedded S3 bucket `backups`.
        let job = curl(
            p,
            &[
                "-b",
                jar,
                &format!(
                    "http://cloud.localhost:30080/api/method/press.api.site.job?job={}",
                    ok[0]["job"].as_str().unwrap()
                ),
            ],
        );
        assert!(job.contains(r#""bucket":"backups""#), "{job}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let d = std::env::temp_dir().join(format!("pressoir-up-test-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
