//! Jobs survive anything: a kill -9 with jobs in flight, and steps caught mid-way.

use crate::common::*;
use pressoir_agent::job::JobSpec;
use pressoir_agent::store::{NewJob, Store};
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHILD_DIR: &str = "PRESSOIR_AGENT_TEST_CHILD_DIR";

/// Not a test on its own: when the parent test re-runs this binary with `CHILD_DIR` set, it
/// serves an agent until it is killed.
#[test]
fn child_agent() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let dir = Path::new(&dir);
        let mut c = config(&dir.join("agent"), &None);
        c.workers = 2;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        std::fs::write(dir.join("addr.tmp"), addr.to_string()).unwrap();
        std::fs::rename(dir.join("addr.tmp"), dir.join("addr")).unwrap();
        pressoir_agent::run(c, listener, pressoir_core::Shutdown::new())
            .await
            .unwrap();
    });
}

/// A child agent, killed (SIGKILL) and reaped when dropped, so a failing test leaves none behind.
struct ChildAgent(Child);

impl ChildAgent {
    fn kill_9(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for ChildAgent {
    fn drop(&mut self) {
        self.kill_9();
    }
}

fn spawn_child(dir: &Path) -> (ChildAgent, String) {
    let _ = std::fs::remove_file(dir.join("addr"));
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "restart::child_agent",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = ChildAgent(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(a) = std::fs::read_to_string(dir.join("addr")) {
            return (child, format!("http://{a}"));
        }
        if Instant::now() > deadline {
            child.kill_9();
            panic!("the child agent did not start");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

async fn by_agent_ids(client: &reqwest::Client, base: &str, ids: &[String]) -> Vec<Value> {
    let mut out = Vec::new();
    for chunk in ids.chunks(100) {
        let v: Value = client
            .get(format!(
                "{base}/agent/jobs?agent_job_ids={}",
                chunk.join(",")
            ))
            .bearer_auth(PASSWORD)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        out.extend(v["jobs"].as_array().unwrap().iter().cloned());
    }
    out
}

#[tokio::test]
async fn kill_9_with_jobs_in_flight_loses_nothing_and_leaves_nothing_running() {
    let root = tempfile::tempdir().unwrap();
    let (mut child, base) = spawn_child(root.path());
    let client = reqwest::Client::new();
    // 60 new sites, each followed by an app install and a config change on the same site.
    let mut agent_ids = Vec::new();
    for batch in 0..3 {
        let mut jobs = Vec::new();
        for i in batch * 20..batch * 20 + 20 {
            let site = format!("k{i}.localhost");
            for (k, (t, d)) in [
                ("New Site", new_site(&site)),
                ("Install App on Site", json!({"name": site, "app": "crm"})),
                (
                    "Update Site Configuration",
                    json!({"name": site, "config": {"k": i}}),
                ),
            ]
            .into_iter()
            .enumerate()
            {
                let aid = format!("K-{i}-{k}");
                agent_ids.push(aid.clone());
                jobs.push(json!({"agent_job_id": aid, "job_type": t, "data": d}));
            }
        }
        let r = client
            .post(format!("{base}/agent/jobs"))
            .bearer_auth(PASSWORD)
            .json(&json!({"jobs": jobs}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    // Kill it once some jobs have finished and others are still to run.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let jobs = by_agent_ids(&client, &base, &agent_ids).await;
        let done = jobs.iter().filter(|j| j["status"] == "Success").count();
        if done >= 3 {
            assert!(
                done < jobs.len(),
                "all jobs ended before the kill; the test proves nothing"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no job finished");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill_9();

    let (mut child, base) = spawn_child(root.path());
    let deadline = Instant::now() + Duration::from_secs(60);
    let jobs = loop {
        let jobs = by_agent_ids(&client, &base, &agent_ids).await;
        assert_eq!(jobs.len(), agent_ids.len(), "no job is lost");
        if jobs
            .iter()
            .all(|j| j["status"] == "Success" || j["status"] == "Failure")
        {
            break jobs;
        }
        assert!(Instant::now() < deadline, "jobs stuck after the restart");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    child.kill_9();
    // Every step of these jobs may run again, so every job ends Success after the restart.
    for j in &jobs {
        assert_eq!(j["status"], "Success", "{j}");
        assert!(
            j["steps"]
                .as_array()
                .unwrap()
                .iter()
                .all(|s| s["status"] == "Success"),
            "{j}"
        );
    }
    let sites = root.path().join("agent/benches/bench-0001/sites");
    for i in 0..60 {
        let c: Value = serde_json::from_slice(
            &std::fs::read(sites.join(format!("k{i}.localhost/site_config.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(c["k"], i);
    }
    let leftovers: Vec<_> = std::fs::read_dir(&sites)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(
        leftovers.is_empty(),
        "half-made sites left behind: {leftovers:?}"
    );
}

fn stored(spec: &JobSpec) -> NewJob {
    let (data, secrets) = spec.stored();
    NewJob {
        agent_job_id: None,
        job_type: spec.job_type().into(),
        site_key: spec.ordering_key(),
        data,
        secrets,
        steps: spec.plan().into_iter().map(|k| k.name()).collect(),
    }
}

#[tokio::test]
async fn a_step_caught_running_resumes_if_it_can_and_otherwise_fails_interrupted() {
    for db in backends() {
        // A first run creates a site, then stops.
        let a = TestAgent::start(&db, |_| {}).await;
        assert_eq!(
            a.run("New Site", new_site("old.localhost")).await["status"],
            "Success"
        );
        let (root, config) = a.stop().await;

        // What a kill -9 leaves behind: jobs marked Running in the middle of a step.
        let url = config.database_url.clone().unwrap_or_else(|| {
            pressoir_core::db::sqlite_url(&config.data_dir.join("agent.sqlite"))
        });
        let store = Store::open(&url, &config.database_schema).await.unwrap();
        let benches = config.benches.clone();
        let spec = |t: &str, d: Value| JobSpec::parse(t, &d, &benches).unwrap();
        let jobs = [
            stored(&spec("New Site", new_site("resumed.localhost"))),
            stored(&spec("Archive Site", json!({"name": "old.localhost"}))),
            stored(&spec("Ping Job", json!({}))),
        ];
        let s = store
            .submit(&jobs, pressoir_core::clock::now_ms())
            .await
            .unwrap();
        let now = pressoir_core::clock::now_ms();
        store.start_step(s[0].id, 0, now).await.unwrap();
        store.start_step(s[1].id, 0, now).await.unwrap();
        store.close().await;

        let a = TestAgent::start_with(root, config).await;
        let resumed = a.wait(&s[0].id.to_string()).await;
        assert_eq!(resumed["status"], "Success", "{resumed}");
        assert!(
            resumed["steps"][0]["output"]
                .as_str()
                .unwrap()
                .contains("resumed after a restart")
        );
        assert!(
            a.sites()
                .join("resumed.localhost/site_config.json")
                .exists()
        );

        let failed = a.wait(&s[1].id.to_string()).await;
        assert_eq!(failed["status"], "Failure");
        assert_eq!(failed["error"], "interrupted");
        assert_eq!(failed["steps"][0]["status"], "Failure");
        assert!(
            a.sites().join("old.localhost").exists(),
            "a step that cannot run twice is not run again"
        );

        assert_eq!(
            a.wait(&s[2].id.to_string()).await["status"],
            "Success",
            "pending jobs run after a restart"
        );
        let v: Value = a
            .get("/agent/jobs?status=Running")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["jobs"], json!([]));
        a.stop().await;
    }
}
