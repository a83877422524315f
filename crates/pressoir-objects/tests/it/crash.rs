//! Killing the server (SIGKILL) in the middle of a large upload: afterwards no partial
//! object is visible, and the earlier object under the same key is intact.

use crate::common::*;
use crate::rust_client::client;
use object_store::path::Path;
use object_store::{ObjectStore, PutPayload};
use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn spawn(data_dir: &std::path::Path, listen: &str) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pressoir-objects-server"))
        .args([
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--access-key",
            ACCESS,
            "--secret-key",
            SECRET,
            "--listen",
            listen,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the server");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .expect("a listening line")
        .to_string();
    (child, format!("http://{addr}"))
}

/// The largest temp file being written, in bytes.
fn staged_bytes(data_dir: &std::path::Path) -> u64 {
    std::fs::read_dir(data_dir.join("objects/tmp"))
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_mid_upload_leaves_the_old_object_intact() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut child, url) = spawn(&data, "127.0.0.1:0");
    let s3 = client(&url, "backups", ACCESS, SECRET);
    let key = Path::from("site/backup.tar.gz");
    let old = b"the earlier, complete backup".to_vec();
    s3.put(&key, PutPayload::from(old.clone())).await.unwrap();

    // A large overwrite of the same key and an unfinished multipart upload of another.
    let mp_key = Path::from("site/never-finished");
    let mut mp = s3.put_multipart(&mp_key).await.unwrap();
    mp.put_part(PutPayload::from(vec![1u8; 5 << 20]))
        .await
        .unwrap();
    let big = vec![42u8; 256 << 20];
    let writer = {
        let s3 = client(&url, "backups", ACCESS, SECRET);
        let key = key.clone();
        tokio::spawn(async move { s3.put(&key, PutPayload::from(big)).await })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while staged_bytes(&data) < (8 << 20) {
        assert!(Instant::now() < deadline, "the upload never started");
        assert!(
            !writer.is_finished(),
            "the upload finished before it could be interrupted"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    child.kill().unwrap(); // SIGKILL: no drain, no cleanup
    child.wait().unwrap();
    assert!(
        writer.await.unwrap().is_err(),
        "the interrupted upload must fail for the client"
    );

    let (mut child, url) = spawn(&data, "127.0.0.1:0");
    let s3 = client(&url, "backups", ACCESS, SECRET);
    let got = s3.get(&key).await.unwrap().bytes().await.unwrap();
    assert_eq!(got.as_ref(), &old[..], "the earlier object must be intact");
    assert!(matches!(
        s3.head(&mp_key).await,
        Err(object_store::Error::NotFound { .. })
    ));
    let listed: Vec<_> = futures::TryStreamExt::try_collect::<Vec<_>>(s3.list(None))
        .await
        .unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].size, old.len() as u64);
    assert_eq!(
        staged_bytes(&data),
        0,
        "leftover temp files are removed at start"
    );
    assert_layout(&data);
    child.kill().unwrap();
    child.wait().unwrap();
}
