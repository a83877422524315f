//! Real clients: the reference's boto3 snippet, a boto3 suite over every operation, the aws CLI.

use crate::common::*;
use axum::Router;
use pressoir_core::{Secret, Shutdown};

/// The reference's snippet, unchanged but for its password placeholder, against the S3 router
/// mounted behind `pressoir up`'s gateway, which routes Host `s3.localhost` to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_boto3_snippet_through_a_host_routing_gateway() {
    let Some(py) = python("reference_boto3_snippet") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s3 = pressoir_objects::app(
        pressoir_objects::Config::new(&data, "minioadmin", Secret::new(SECRET)),
        Shutdown::new(),
    )
    .await
    .unwrap();
    // The real gateway of `pressoir up`: S3 on Host `s3.*`, another router everywhere else.
    let other =
        Router::new().fallback(|| async { (http::StatusCode::NOT_FOUND, "not the S3 router") });
    let gateway = pressoir_core::gateway::Gateway::new(other)
        .host("s3.", s3)
        .into_router();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = Shutdown::new();
    tokio::spawn(pressoir_core::serve(listener, gateway, shutdown.clone()));

    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let dump: Vec<u8> = (0..3_000_000u32)
        .flat_map(|i| format!("INSERT INTO t VALUES ({i});\n").into_bytes())
        .take(20 << 20)
        .collect();
    std::fs::write(work.join("backup.sql"), &dump).unwrap();
    let snippet = include_str!("py/reference.py").replace("<minio_password>", SECRET);
    let script = format!("{}\n{}", include_str!("py/resolve_localhost.py"), snippet);
    let out = tokio::process::Command::new(&py)
        .arg("-c")
        .arg(&script)
        .current_dir(&work)
        .env("S3_PORT", addr.port().to_string())
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env_remove("AWS_DEFAULT_REGION")
        .output()
        .await
        .unwrap();
    let stdout = check(&out, "reference snippet");
    assert_eq!(stdout.trim(), "backup.sql");
    assert_eq!(std::fs::read(work.join("local_backup.sql")).unwrap(), dump);
    // Other hosts do not reach the S3 router.
    let r = reqwest::get(format!("http://{addr}/backups"))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    shutdown.trigger();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_every_operation() {
    let Some(py) = python("boto3_every_operation") else {
        return;
    };
    let server = start(|_| {}).await;
    let work = server.dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let out = run_python(
        &py,
        include_str!("py/boto3_suite.py"),
        &server,
        (ACCESS, SECRET),
        &work,
    )
    .await;
    let stdout = check(&out, "boto3 suite");
    assert!(stdout.trim_end().ends_with("OK"), "{stdout}");
    assert_layout(&server.data_dir());
}

async fn aws(py: &std::path::Path, server: &Server, args: &[&str]) -> String {
    let bin = py.parent().unwrap().join("aws");
    let out = tokio::process::Command::new(py)
        .arg(&bin)
        .arg("--endpoint-url")
        .arg(&server.url)
        .args(args)
        .env("AWS_ACCESS_KEY_ID", ACCESS)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .output()
        .await
        .unwrap();
    check(&out, &format!("aws {}", args.join(" ")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_cli_cp_ls_sync() {
    let Some(py) = python("aws_cli_cp_ls_sync") else {
        return;
    };
    let server = start(|_| {}).await;
    let work = server.dir.path().join("work");
    let src = work.join("src");
    std::fs::create_dir_all(src.join("sub dir")).unwrap();
    std::fs::write(src.join("a.txt"), b"alpha").unwrap();
    std::fs::write(src.join("sub dir/b+c.txt"), b"beta").unwrap();
    let big: Vec<u8> = (0..(20u32 << 20)).map(|i| (i % 251) as u8).collect();
    std::fs::write(src.join("big.bin"), &big).unwrap();

    let p = |x: &std::path::Path| x.to_str().unwrap().to_string();
    aws(
        &py,
        &server,
        &["s3", "cp", &p(&src.join("a.txt")), "s3://backups/one/a.txt"],
    )
    .await;
    let ls = aws(&py, &server, &["s3", "ls", "s3://backups/one/"]).await;
    assert!(ls.contains("a.txt") && ls.contains(" 5 "), "{ls}");
    let buckets = aws(&py, &server, &["s3", "ls"]).await;
    assert!(buckets.contains("backups"), "{buckets}");

    aws(
        &py,
        &server,
        &["s3", "sync", &p(&src), "s3://backups/sync/"],
    )
    .await;
    let ls = aws(
        &py,
        &server,
        &["s3", "ls", "--recursive", "s3://backups/sync/"],
    )
    .await;
    for name in ["sync/a.txt", "sync/sub dir/b+c.txt", "sync/big.bin"] {
        assert!(ls.contains(name), "{name} missing from:\n{ls}");
    }
    // A second sync uploads nothing.
    let again = aws(
        &py,
        &server,
        &["s3", "sync", &p(&src), "s3://backups/sync/"],
    )
    .await;
    assert!(!again.contains("upload:"), "{again}");
    let dst = work.join("dst");
    aws(
        &py,
        &server,
        &["s3", "sync", "s3://backups/sync/", &p(&dst)],
    )
    .await;
    assert_eq!(std::fs::read(dst.join("a.txt")).unwrap(), b"alpha");
    assert_eq!(std::fs::read(dst.join("sub dir/b+c.txt")).unwrap(), b"beta");
    assert_eq!(std::fs::read(dst.join("big.bin")).unwrap(), big);
    aws(
        &py,
        &server,
        &[
            "s3",
            "cp",
            "s3://backups/one/a.txt",
            &p(&work.join("back.txt")),
        ],
    )
    .await;
    assert_eq!(std::fs::read(work.join("back.txt")).unwrap(), b"alpha");
    aws(
        &py,
        &server,
        &["s3", "rm", "--recursive", "s3://backups/sync/"],
    )
    .await;
    let ls = aws(&py, &server, &["s3", "ls", "--recursive", "s3://backups/"]).await;
    assert_eq!(ls.trim().lines().count(), 1, "{ls}");
}
