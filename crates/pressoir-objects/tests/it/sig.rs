//! A small, independent SigV4 signer and a raw HTTP/1.1 client, so the tests can send what
//! real clients never would: expired or tampered signatures, unknown keys, dot segments.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = HmacSha256::new_from_slice(key).unwrap();
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// SigV4 URI encoding: everything but unreserved characters; `/` kept in paths.
pub fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

pub struct Signer<'a> {
    pub host: String,
    pub access: &'a str,
    pub secret: &'a str,
    /// `YYYYMMDDTHHMMSSZ`
    pub amz_date: String,
}

pub fn amz_date(offset_secs: i64) -> String {
    let t = time::OffsetDateTime::now_utc() + time::Duration::seconds(offset_secs);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

impl Signer<'_> {
    fn scope(&self) -> String {
        format!("{}/us-east-1/s3/aws4_request", &self.amz_date[..8])
    }

    fn signature(&self, canonical: &str) -> String {
        let sts = format!(
            "AWS4-HMAC-SHA256\n{}\n{}\n{}",
            self.amz_date,
            self.scope(),
            sha256_hex(canonical.as_bytes())
        );
        let k = hmac(
            format!("AWS4{}", self.secret).as_bytes(),
            &self.amz_date.as_bytes()[..8],
        );
        let k = hmac(&k, b"us-east-1");
        let k = hmac(&k, b"s3");
        let k = hmac(&k, b"aws4_request");
        hex::encode(hmac(&k, sts.as_bytes()))
    }

    fn canonical_query(pairs: &[(String, String)]) -> String {
        let mut enc: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (uri_encode(k, false), uri_encode(v, false)))
            .collect();
        enc.sort();
        enc.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&")
    }

    /// A presigned request target (path + query) for `key_path` (decoded, e.g. `/bucket/key`).
    pub fn presign(
        &self,
        method: &str,
        path: &str,
        extra: &[(&str, &str)],
        expires: i64,
    ) -> String {
        let mut q: Vec<(String, String)> = extra
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        q.push(("X-Amz-Algorithm".into(), "AWS4-HMAC-SHA256".into()));
        q.push((
            "X-Amz-Credential".into(),
            format!("{}/{}", self.access, self.scope()),
        ));
        q.push(("X-Amz-Date".into(), self.amz_date.clone()));
        q.push(("X-Amz-Expires".into(), expires.to_string()));
        q.push(("X-Amz-SignedHeaders".into(), "host".into()));
        let cq = Self::canonical_query(&q);
        let canonical = format!(
            "{method}\n{}\n{cq}\nhost:{}\n\nhost\nUNSIGNED-PAYLOAD",
            uri_encode(path, true),
            self.host
        );
        let sig = self.signature(&canonical);
        format!("{}?{cq}&X-Amz-Signature={sig}", uri_encode(path, true))
    }

    /// Header auth: returns the headers to send (Authorization, x-amz-date, x-amz-content-sha256 + `extra`).
    pub fn headers(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, &str)],
        extra: &[(&str, &str)],
        payload_hash: &str,
    ) -> Vec<(String, String)> {
        let mut h: Vec<(String, String)> = extra
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        h.push(("host".into(), self.host.clone()));
        h.push(("x-amz-date".into(), self.amz_date.clone()));
        h.push(("x-amz-content-sha256".into(), payload_hash.to_string()));
        h.sort();
        let q: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let signed: Vec<&str> = h.iter().map(|(k, _)| k.as_str()).collect();
        let canonical = format!(
            "{method}\n{}\n{}\n{}\n\n{}\n{payload_hash}",
            uri_encode(path, true),
            Self::canonical_query(&q),
            h.iter()
                .map(|(k, v)| format!("{k}:{v}"))
                .collect::<Vec<_>>()
                .join("\n"),
            signed.join(";")
        );
        let sig = self.signature(&canonical);
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential={}/{}, SignedHeaders={}, Signature={sig}",
            self.access,
            self.scope(),
            signed.join(";")
        );
        let mut out: Vec<(String, String)> = h.into_iter().filter(|(k, _)| k != "host").collect();
        out.push(("authorization".into(), auth));
        out
    }
}

pub struct Reply {
    pub status: u16,
    #[allow(dead_code)]
    pub headers: String,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }

    /// The `<Code>` of an S3 XML error body.
    pub fn code(&self) -> String {
        let t = self.text();
        t.split("<Code>")
            .nth(1)
            .and_then(|r| r.split("</Code>").next())
            .unwrap_or("")
            .to_string()
    }
}

/// Sends one raw HTTP/1.1 request (target sent byte for byte) and reads the whole reply.
pub async fn raw(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Reply {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !headers.iter().any(|(k, _)| {
        k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("transfer-encoding")
    }) {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a reply head");
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let mut body = buf[split + 4..].to_vec();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Reply {
        status,
        headers: head,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(nl) = b.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(
            std::str::from_utf8(&b[..nl])
                .unwrap()
                .split(';')
                .next()
                .unwrap()
                .trim(),
            16,
        )
        .unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&b[nl + 2..nl + 2 + size]);
        b = &b[nl + 2 + size + 2..];
    }
    out
}
