//! Bad input gets the S3 error AWS would send, and nothing is written where it should not be.

use crate::common::*;
use crate::sig::{Signer, amz_date, raw, sha256_hex, uri_encode};
use base64::Engine as _;

fn signer(
    server: &Server,
    access: &'static str,
    secret: &'static str,
    offset: i64,
) -> Signer<'static> {
    Signer {
        host: server.addr.to_string(),
        access,
        secret,
        amz_date: amz_date(offset),
    }
}

#[tokio::test]
async fn signatures_keys_and_expiry_are_checked() {
    let server = start(|_| {}).await;
    let ok = signer(&server, ACCESS, SECRET, 0);
    let put = ok.presign("PUT", "/backups/signed.txt", &[], 300);
    let r = raw(server.addr, "PUT", &put, &[], b"signed").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let get = ok.presign("GET", "/backups/signed.txt", &[], 300);
    let r = raw(server.addr, "GET", &get, &[], b"").await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"signed"[..]));

    // A tampered signature.
    let last = get.chars().last().unwrap();
    let flipped = format!(
        "{}{}",
        &get[..get.len() - 1],
        if last == '0' { '1' } else { '0' }
    );
    let r = raw(server.addr, "GET", &flipped, &[], b"").await;
    assert_eq!(
        (r.status, r.code()),
        (403, "SignatureDoesNotMatch".to_string()),
        "{}",
        r.text()
    );
    // The right key with the wrong secret.
    let wrong = signer(&server, ACCESS, "not-the-secret", 0).presign(
        "GET",
        "/backups/signed.txt",
        &[],
        300,
    );
    let r = raw(server.addr, "GET", &wrong, &[], b"").await;
    assert_eq!(
        (r.status, r.code()),
        (403, "SignatureDoesNotMatch".to_string())
    );
    // A key that does not exist.
    let nobody =
        signer(&server, "nobody", SECRET, 0).presign("GET", "/backups/signed.txt", &[], 300);
    let r = raw(server.addr, "GET", &nobody, &[], b"").await;
    assert_eq!(
        (r.status, r.code()),
        (403, "InvalidAccessKeyId".to_string())
    );
    // Expired an hour ago.
    let old = signer(&server, ACCESS, SECRET, -3600).presign("GET", "/backups/signed.txt", &[], 60);
    let r = raw(server.addr, "GET", &old, &[], b"").await;
    assert_eq!(
        (r.status, r.code()),
        (403, "AccessDenied".to_string()),
        "{}",
        r.text()
    );
    assert!(r.text().contains("expired"), "{}", r.text());
    // Valid for more than 7 days.
    let long = ok.presign("GET", "/backups/signed.txt", &[], 604_801);
    let r = raw(server.addr, "GET", &long, &[], b"").await;
    assert_eq!(
        (r.status, r.code()),
        (400, "AuthorizationQueryParametersError".to_string())
    );
    // Dated an hour in the future (clock skew over 15 minutes).
    let future =
        signer(&server, ACCESS, SECRET, 3600).presign("GET", "/backups/signed.txt", &[], 60);
    let r = raw(server.addr, "GET", &future, &[], b"").await;
    assert_eq!(
        (r.status, r.code()),
        (403, "RequestTimeTooSkewed".to_string()),
        "{}",
        r.text()
    );
    // Header auth dated 20 minutes ago.
    let h = signer(&server, ACCESS, SECRET, -1200).headers(
        "GET",
        "/backups/signed.txt",
        &[],
        &[],
        "UNSIGNED-PAYLOAD",
    );
    let r = raw(server.addr, "GET", "/backups/signed.txt", &h, b"").await;
    assert_eq!(
        (r.status, r.code()),
        (403, "RequestTimeTooSkewed".to_string()),
        "{}",
        r.text()
    );
    // Header auth with a body that does not match its signed hash.
    let h = ok.headers(
        "PUT",
        "/backups/hash.txt",
        &[],
        &[],
        &sha256_hex(b"what was signed"),
    );
    let r = raw(
        server.addr,
        "PUT",
        "/backups/hash.txt",
        &h,
        b"something else!",
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (400, "XAmzContentSHA256Mismatch".to_string()),
        "{}",
        r.text()
    );
    // No signature at all.
    let r = raw(server.addr, "GET", "/backups/signed.txt", &[], b"").await;
    assert_eq!((r.status, r.code()), (403, "AccessDenied".to_string()));
    let r = raw(server.addr, "GET", "/", &[], b"").await;
    assert_eq!(r.status, 403);
    // Nothing of the refused writes exists.
    let r = raw(
        server.addr,
        "GET",
        &ok.presign("GET", "/backups/hash.txt", &[], 60),
        &[],
        b"",
    )
    .await;
    assert_eq!((r.status, r.code()), (404, "NoSuchKey".to_string()));
}

#[tokio::test]
async fn aws_chunked_uploads_are_decoded_and_their_trailers_checked() {
    let server = start(|_| {}).await;
    let s = signer(&server, ACCESS, SECRET, 0);
    let data = b"hello aws-chunked world";
    let crc = base64::engine::general_purpose::STANDARD.encode(crc32(data).to_be_bytes());
    for (checksum, want) in [(crc.clone(), 200u16), ("AAAAAA==".to_string(), 400)] {
        let body = format!(
            "{:x}\r\n{}\r\n0\r\nx-amz-checksum-crc32:{checksum}\r\n\r\n",
            data.len(),
            std::str::from_utf8(data).unwrap()
        );
        let extra = [
            ("content-encoding", "aws-chunked"),
            ("x-amz-decoded-content-length", &data.len().to_string()[..]),
            ("x-amz-trailer", "x-amz-checksum-crc32"),
        ];
        let h = s.headers(
            "PUT",
            "/backups/chunked",
            &[],
            &extra,
            "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        );
        let r = raw(server.addr, "PUT", "/backups/chunked", &h, body.as_bytes()).await;
        assert_eq!(r.status, want, "{}", r.text());
        if want == 400 {
            assert_eq!(r.code(), "BadDigest");
        }
    }
    let r = raw(
        server.addr,
        "GET",
        &s.presign("GET", "/backups/chunked", &[], 60),
        &[],
        b"",
    )
    .await;
    assert_eq!(r.body, data);
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 == 1 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

#[tokio::test]
async fn traversal_and_odd_keys_stay_inside_their_bucket() {
    let server = start(|_| {}).await;
    let s = signer(&server, ACCESS, SECRET, 0);
    let keys = [
        "../other/evil",
        "../../tmp/x",
        "../../../../../../etc/passwd",
        "a/../../b",
        "./dot",
        "a//b",
        "/leading",
        "dir/",
        "sp ace+plus%percent",
        "ünïcödé/ключ/鍵 ✓",
        "nul\u{1}ctl",
    ];
    for k in keys {
        // Sent with the dots and slashes raw, as botocore does: no client-side normalizing.
        let path = format!("/backups/{k}");
        let target = s.presign("PUT", &path, &[], 60);
        let r = raw(server.addr, "PUT", &target, &[], k.as_bytes()).await;
        assert_eq!(r.status, 200, "PUT {k:?}: {}", r.text());
    }
    for k in keys {
        let target = s.presign("GET", &format!("/backups/{k}"), &[], 60);
        let r = raw(server.addr, "GET", &target, &[], b"").await;
        assert_eq!(
            (r.status, r.body.as_slice()),
            (200, k.as_bytes()),
            "GET {k:?}"
        );
    }
    // Listing gives the keys back exactly, raw and url-encoded.
    let r = raw(
        server.addr,
        "GET",
        &s.presign(
            "GET",
            "/backups",
            &[("list-type", "2"), ("encoding-type", "url")],
            60,
        ),
        &[],
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
    let text = r.text();
    let mut listed: Vec<String> = text
        .split("<Key>")
        .skip(1)
        .map(|x| {
            let enc = x.split("</Key>").next().unwrap();
            percent_decode(enc)
        })
        .collect();
    listed.sort();
    let mut want: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    want.sort();
    assert_eq!(listed, want);
    assert!(
        text.contains("<Key>sp%20ace%2Bplus%25percent</Key>"),
        "{text}"
    );

    // No bucket appeared, and every file is a hashed object name in its place.
    let r = raw(
        server.addr,
        "GET",
        &s.presign("GET", "/", &[], 60),
        &[],
        b"",
    )
    .await;
    assert_eq!(r.text().matches("<Name>").count(), 1, "{}", r.text());
    assert_layout(&server.data_dir());
    let top: Vec<_> = std::fs::read_dir(server.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(top, ["data"]);
    // Bucket names that are not S3 names are refused before any file is touched.
    for bad in ["/..", "/%2E%2E/x", "/UPPER", "/a", "/bad_name"] {
        let r = raw(
            server.addr,
            "PUT",
            &s.presign("PUT", &percent_decode(bad), &[], 60),
            &[],
            b"",
        )
        .await;
        assert!(
            r.status == 400 || r.status == 403,
            "{bad}: {} {}",
            r.status,
            r.text()
        );
    }
    assert_layout(&server.data_dir());
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .unwrap()
        .replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
}

#[tokio::test]
async fn digests_and_sizes_are_enforced() {
    let server = start(|c| {
        c.max_object_size = 1 << 20;
        c.max_part_size = 1 << 20;
    })
    .await;
    let s = signer(&server, ACCESS, SECRET, 0);
    let body = b"checked body";
    let good = base64::engine::general_purpose::STANDARD.encode(md5(body));
    let wrong = base64::engine::general_purpose::STANDARD.encode(md5(b"other"));
    let cases = [
        (&wrong[..], 400, "BadDigest"),
        ("not-base64!", 400, "InvalidDigest"),
        ("AAAA", 400, "InvalidDigest"),
    ];
    for (md5h, status, code) in cases {
        let t = s.presign("PUT", "/backups/md5", &[], 60);
        let r = raw(
            server.addr,
            "PUT",
            &t,
            &[("Content-MD5".into(), md5h.into())],
            body,
        )
        .await;
        assert_eq!(
            (r.status, r.code()),
            (status, code.to_string()),
            "{md5h}: {}",
            r.text()
        );
    }
    let r = raw(
        server.addr,
        "GET",
        &s.presign("GET", "/backups/md5", &[], 60),
        &[],
        b"",
    )
    .await;
    assert_eq!(r.code(), "NoSuchKey", "a refused body must not be stored");
    let t = s.presign("PUT", "/backups/md5", &[], 60);
    let r = raw(
        server.addr,
        "PUT",
        &t,
        &[("Content-MD5".into(), good)],
        body,
    )
    .await;
    assert_eq!(r.status, 200);

    // Over the configured size: refused from Content-Length, and when streamed without one.
    let big = vec![7u8; (1 << 20) + 1];
    let r = raw(
        server.addr,
        "PUT",
        &s.presign("PUT", "/backups/big", &[], 60),
        &[],
        &big,
    )
    .await;
    assert_eq!((r.status, r.code()), (400, "EntityTooLarge".to_string()));
    let chunked = format!("{:x}\r\n", big.len())
        .into_bytes()
        .into_iter()
        .chain(big.iter().copied())
        .chain(b"\r\n0\r\n\r\n".iter().copied())
        .collect::<Vec<u8>>();
    let r = raw(
        server.addr,
        "PUT",
        &s.presign("PUT", "/backups/big", &[], 60),
        &[("Transfer-Encoding".into(), "chunked".into())],
        &chunked,
    )
    .await;
    assert!(
        r.status == 400 || r.status == 411,
        "{} {}",
        r.status,
        r.text()
    );

    // An oversized part.
    let r = raw(
        server.addr,
        "POST",
        &s.presign("POST", "/backups/mp", &[("uploads", "")], 60),
        &[],
        b"",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    let id = text
        .split("<UploadId>")
        .nth(1)
        .unwrap()
        .split("</UploadId>")
        .next()
        .unwrap()
        .to_string();
    let q = [("partNumber", "1"), ("uploadId", id.as_str())];
    let r = raw(
        server.addr,
        "PUT",
        &s.presign("PUT", "/backups/mp", &q, 60),
        &[],
        &big,
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (400, "EntityTooLarge".to_string()),
        "{}",
        r.text()
    );
    let q = [("partNumber", "0"), ("uploadId", id.as_str())];
    let r = raw(
        server.addr,
        "PUT",
        &s.presign("PUT", "/backups/mp", &q, 60),
        &[],
        b"x",
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    // Malformed CompleteMultipartUpload XML.
    let q = [("uploadId", id.as_str())];
    let r = raw(
        server.addr,
        "POST",
        &s.presign("POST", "/backups/mp", &q, 60),
        &[],
        b"<Complete",
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (400, "MalformedXML".to_string()),
        "{}",
        r.text()
    );
    // Unknown upload ids, including ones shaped like paths.
    for bad in ["0123456789abcdef0123456789abcdef", "../../../../tmp", "x"] {
        let q = [("partNumber", "1"), ("uploadId", bad)];
        let r = raw(
            server.addr,
            "PUT",
            &s.presign("PUT", "/backups/mp", &q, 60),
            &[],
            b"x",
        )
        .await;
        assert_eq!(
            (r.status, r.code()),
            (404, "NoSuchUpload".to_string()),
            "{bad}"
        );
    }
    // Bad ranges and bad listing parameters.
    let get = s.presign("GET", "/backups/md5", &[], 60);
    let r = raw(
        server.addr,
        "GET",
        &get,
        &[("Range".into(), "bytes=100-200".into())],
        b"",
    )
    .await;
    assert_eq!((r.status, r.code()), (416, "InvalidRange".to_string()));
    let r = raw(
        server.addr,
        "GET",
        &s.presign(
            "GET",
            "/backups",
            &[("list-type", "2"), ("max-keys", "-1")],
            60,
        ),
        &[],
        b"",
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = raw(
        server.addr,
        "GET",
        &s.presign("GET", "/nosuchbucket", &[("list-type", "2")], 60),
        &[],
        b"",
    )
    .await;
    assert_eq!((r.status, r.code()), (404, "NoSuchBucket".to_string()));
    let _ = uri_encode("", true);
}

fn md5(data: &[u8]) -> [u8; 16] {
    use s3s::crypto::Checksum as _;
    s3s::crypto::Md5::checksum(data)
}

#[tokio::test]
async fn policies_limit_keys() {
    let server = start(|_| {}).await;
    let admin = signer(&server, ACCESS, SECRET, 0);
    let r = raw(
        server.addr,
        "PUT",
        &admin.presign("PUT", "/private", &[], 60),
        &[],
        b"",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let agent = signer(&server, "agent", "agent-secret", 0);
    let r = raw(
        server.addr,
        "PUT",
        &agent.presign("PUT", "/backups/a", &[], 60),
        &[],
        b"a",
    )
    .await;
    assert_eq!(r.status, 200);
    for (m, p) in [
        ("PUT", "/private/a"),
        ("GET", "/private"),
        ("DELETE", "/private"),
        ("PUT", "/newbucket"),
    ] {
        let r = raw(server.addr, m, &agent.presign(m, p, &[], 60), &[], b"").await;
        assert_eq!(
            (r.status, r.code()),
            (403, "AccessDenied".to_string()),
            "{m} {p}"
        );
    }
    // CopyObject out of a bucket the key may not read.
    let r = raw(
        server.addr,
        "PUT",
        &admin.presign("PUT", "/private/secret", &[], 60),
        &[],
        b"s",
    )
    .await;
    assert_eq!(r.status, 200);
    let r = raw(
        server.addr,
        "PUT",
        &agent.presign("PUT", "/backups/stolen", &[], 60),
        &[("x-amz-copy-source".into(), "/private/secret".into())],
        b"",
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (403, "AccessDenied".to_string()),
        "{}",
        r.text()
    );
    let r = raw(
        server.addr,
        "GET",
        &agent.presign("GET", "/", &[], 60),
        &[],
        b"",
    )
    .await;
    assert!(
        r.text().contains("<Name>backups</Name>") && !r.text().contains("private"),
        "{}",
        r.text()
    );

    let reader = signer(&server, "reader", "reader-secret", 0);
    let r = raw(
        server.addr,
        "GET",
        &reader.presign("GET", "/private/secret", &[], 60),
        &[],
        b"",
    )
    .await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"s"[..]));
    for (m, p) in [
        ("PUT", "/private/x"),
        ("DELETE", "/private/secret"),
        ("POST", "/private/x"),
    ] {
        let q: &[(&str, &str)] = if m == "POST" { &[("uploads", "")] } else { &[] };
        let r = raw(server.addr, m, &reader.presign(m, p, q, 60), &[], b"").await;
        assert_eq!(
            (r.status, r.code()),
            (403, "AccessDenied".to_string()),
            "{m} {p}"
        );
    }
    let r = raw(
        server.addr,
        "GET",
        &admin.presign("GET", "/private/secret", &[], 60),
        &[],
        b"",
    )
    .await;
    assert_eq!(r.body, b"s");
}
