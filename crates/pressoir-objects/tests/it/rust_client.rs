//! The `object_store` crate (the agent's S3 client) against the server: path-style,
//! us-east-1, an access key and secret, as a real MinIO or AWS would be configured.

use crate::common::*;
use futures::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{ObjectStore, PutMode, PutPayload, WriteMultipart};

pub fn client(url: &str, bucket: &str, key: &str, secret: &str) -> AmazonS3 {
    AmazonS3Builder::new()
        .with_endpoint(url)
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_bucket_name(bucket)
        .with_access_key_id(key)
        .with_secret_access_key(secret)
        .build()
        .expect("object_store client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_store_put_get_list_multipart_with_the_agents_key() {
    let server = start(|_| {}).await;
    // The agent's key: read and write, but only the backups bucket.
    let s3 = client(&server.url, "backups", "agent", "agent-secret");
    let p = Path::from("sites/site1.local/2026-01-01/database.sql.gz");
    s3.put(&p, PutPayload::from(b"dump".to_vec()))
        .await
        .unwrap();
    assert_eq!(
        s3.get(&p).await.unwrap().bytes().await.unwrap().as_ref(),
        b"dump"
    );
    let meta = s3.head(&p).await.unwrap();
    assert_eq!(meta.size, 4);
    assert_eq!(s3.get_range(&p, 1..3).await.unwrap().as_ref(), b"um");

    // Streaming multipart, as a large backup is uploaded: 5 MiB parts, uploaded in parallel;
    // over 64 MiB, so the completion answers with keep-alive whitespace before its XML.
    let big = Path::from("sites/site1.local/2026-01-01/files.tar.gz");
    let data: Vec<u8> = (0..(66u32 << 20))
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let upload = s3.put_multipart(&big).await.unwrap();
    let mut w = WriteMultipart::new_with_chunk_size(upload, 5 << 20);
    for chunk in data.chunks(1 << 20) {
        w.write(chunk);
    }
    let put = w.finish().await.unwrap();
    assert!(put.e_tag.unwrap().ends_with("-14\""));
    assert_eq!(
        s3.get(&big).await.unwrap().bytes().await.unwrap().as_ref(),
        &data[..]
    );

    let odd = Path::parse("sites/a+b c/ü.txt").unwrap();
    s3.put(&odd, PutPayload::from_static(b"odd")).await.unwrap();
    let listed: Vec<String> = s3
        .list(Some(&Path::from("sites")))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        listed,
        [
            "sites/a+b c/ü.txt",
            "sites/site1.local/2026-01-01/database.sql.gz",
            "sites/site1.local/2026-01-01/files.tar.gz"
        ]
    );
    let top = s3
        .list_with_delimiter(Some(&Path::from("sites")))
        .await
        .unwrap();
    let dirs: Vec<String> = top.common_prefixes.iter().map(|p| p.to_string()).collect();
    assert_eq!(dirs, ["sites/a+b c", "sites/site1.local"]);

    // Create-only writes (If-None-Match: *), as a backup that must never be overwritten.
    let once = Path::from("sites/once");
    s3.put_opts(&once, PutPayload::from_static(b"1"), PutMode::Create.into())
        .await
        .unwrap();
    let again = s3
        .put_opts(&once, PutPayload::from_static(b"2"), PutMode::Create.into())
        .await;
    assert!(
        matches!(again, Err(object_store::Error::AlreadyExists { .. })),
        "{again:?}"
    );
    assert_eq!(
        s3.get(&once).await.unwrap().bytes().await.unwrap().as_ref(),
        b"1"
    );
    s3.delete(&once).await.unwrap();

    s3.delete(&p).await.unwrap();
    assert!(matches!(
        s3.get(&p).await,
        Err(object_store::Error::NotFound { .. })
    ));

    // The same key cannot reach another bucket.
    let other = client(&server.url, "elsewhere", ACCESS, SECRET);
    assert!(
        other.put(&p, PutPayload::from_static(b"x")).await.is_err(),
        "no such bucket yet"
    );
    let agent_elsewhere = client(&server.url, "elsewhere", "agent", "agent-secret");
    let err = agent_elsewhere.get(&p).await.unwrap_err().to_string();
    assert!(err.contains("AccessDenied") || err.contains("403"), "{err}");

    // A read-only key reads but cannot write.
    let reader = client(&server.url, "backups", "reader", "reader-secret");
    assert_eq!(
        reader
            .get(&odd)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .as_ref(),
        b"odd"
    );
    let err = reader
        .put(&odd, PutPayload::from_static(b"no"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("AccessDenied") || err.contains("403"), "{err}");
    assert_eq!(
        s3.get(&odd).await.unwrap().bytes().await.unwrap().as_ref(),
        b"odd"
    );
}
