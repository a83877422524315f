//! Multipart uploads a client left unfinished (an agent killed mid-backup never aborts its
//! own) are aborted by the server once stale, as MinIO does: ListMultipartUploads stops
//! showing them and their parts leave the disk, while younger uploads are kept.

use crate::common::*;
use crate::rust_client::client;
use crate::sig::{Signer, amz_date, raw};
use object_store::path::Path;
use object_store::{ObjectStore, PutPayload};
use std::time::{Duration, Instant};

/// The upload ids ListMultipartUploads shows for the `backups` bucket.
async fn listed_uploads(server: &Server) -> Vec<String> {
    let s = Signer {
        host: server.addr.to_string(),
        access: ACCESS,
        secret: SECRET,
        amz_date: amz_date(0),
    };
    let r = raw(
        server.addr,
        "GET",
        &s.presign("GET", "/backups", &[("uploads", "")], 60),
        &[],
        b"",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
        .split("<UploadId>")
        .skip(1)
        .filter_map(|t| t.split("</UploadId>").next())
        .map(str::to_string)
        .collect()
}

/// The files on disk under the bucket's unfinished uploads.
fn upload_files(server: &Server) -> usize {
    let dir = server.data_dir().join("objects/buckets/backups/uploads");
    if !dir.exists() {
        return 0;
    }
    files_under(&dir).len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_multipart_uploads_are_aborted_and_their_parts_deleted() {
    let expiry = Duration::from_millis(2000);
    let server = start(|c| {
        c.upload_expiry = expiry;
        c.upload_sweep_interval = Duration::from_millis(100);
    })
    .await;
    let s3 = client(&server.url, "backups", "agent", "agent-secret");

    // An upload with a part, then nothing more: its client was killed. (The server stamps
    // its start in whole milliseconds, after this.)
    let started = Instant::now() - Duration::from_millis(1);
    let mut old = s3
        .put_multipart(&Path::from("sites/a/files.tar.gz"))
        .await
        .unwrap();
    old.put_part(PutPayload::from(vec![7u8; 5 << 20]))
        .await
        .unwrap();
    assert_eq!(listed_uploads(&server).await.len(), 1);
    assert_eq!(upload_files(&server), 2, "upload.json and one part");

    // Younger than the expiry it stays, sweep after sweep.
    tokio::time::sleep(expiry / 2).await;
    let mut young = s3
        .put_multipart(&Path::from("sites/b/files.tar.gz"))
        .await
        .unwrap();
    young
        .put_part(PutPayload::from(vec![8u8; 5 << 20]))
        .await
        .unwrap();
    assert_eq!(listed_uploads(&server).await.len(), 2);

    // Once older than the expiry, the next sweep aborts it: gone from the listing and the
    // disk, while the younger upload is still there and still completes.
    let deadline = started + expiry + Duration::from_secs(5);
    while listed_uploads(&server).await.len() > 1 {
        assert!(
            Instant::now() < deadline,
            "the stale upload was never aborted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(started.elapsed() >= expiry, "aborted before it was stale");
    assert_eq!(
        upload_files(&server),
        2,
        "only the young upload's files remain"
    );
    assert!(
        old.put_part(PutPayload::from(vec![7u8; 5 << 20]))
            .await
            .is_err(),
        "an aborted upload takes no more parts"
    );
    young.complete().await.unwrap();
    let got = s3
        .get(&Path::from("sites/b/files.tar.gz"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got.len(), 5 << 20);
    assert!(listed_uploads(&server).await.is_empty());
    assert_eq!(upload_files(&server), 0);
    assert_layout(&server.data_dir());
}
