use crate::common::*;
use std::process::Command;

const SCRIPT: &str = include_str!("lago_client.py");

async fn run_python(s: &Server, mode: &str) {
    let Ok(python) = std::env::var("PRESSOIR_TEST_PYTHON") else {
        println!("SKIPPED: PRESSOIR_TEST_PYTHON is not set");
        return;
    };
    let base = format!("{}/", s.base);
    let out = tokio::task::spawn_blocking({
        let python = python.clone();
        let mode = mode.to_string();
        move || {
            Command::new(python)
                .arg("-c")
                .arg(SCRIPT)
                .arg(mode)
                .arg(base)
                .arg(KEY)
                .output()
                .expect("run python")
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("PY-OK"),
        "python failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
}

#[tokio::test]
async fn lago_python_client_drives_the_whole_api() {
    for b in backends() {
        let s = spawn(b).await;
        run_python(&s, "api").await;
    }
}

#[tokio::test]
async fn lago_python_client_backs_off_on_429() {
    let s = spawn_with(Backend::Sqlite, |c| c.rate_limit = "3/2s".parse().unwrap()).await;
    run_python(&s, "ratelimit").await;
}
