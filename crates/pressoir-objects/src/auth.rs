//! Access keys and what each may do. s3s verifies the signatures (SigV4 headers, presigned
//! and aws-chunked, SigV2 headers and presigned) against the secrets looked up here; this
//! module then applies each key's policy and the limits s3s 0.14.1 leaves out (presigned
//! expiry over 7 days, SigV2 header clock skew).

use crate::{AccessKey, Policy};
use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::dto::{CopyObjectInput, CopySource, UploadPartCopyInput};
use s3s::{S3Request, S3Result, s3_error};
use std::collections::HashMap;
use std::sync::Arc;

/// Presigned URLs may be valid for at most 7 days, as on AWS.
pub const MAX_PRESIGNED_EXPIRY_SECS: i64 = 604_800;
/// Requests may be dated at most 15 minutes from the server clock.
pub const MAX_SKEW_SECS: i64 = 900;

/// Operations a read-only key may call.
pub fn is_read_operation(op: &str) -> bool {
    matches!(
        op,
        "GetObject"
            | "HeadObject"
            | "ListObjects"
            | "ListObjectsV2"
            | "ListObjectVersions"
            | "HeadBucket"
            | "ListBuckets"
            | "GetBucketLocation"
            | "ListParts"
            | "ListMultipartUploads"
            | "GetObjectAttributes"
    )
}

impl Policy {
    pub fn allows_bucket(&self, bucket: &str) -> bool {
        match &self.buckets {
            None => true,
            Some(list) => list.iter().any(|b| b == bucket),
        }
    }

    /// Whether this key may run `op` on `bucket` (None: the service root, i.e. ListBuckets).
    pub fn allows(&self, op: &str, bucket: Option<&str>) -> bool {
        if self.read_only && !is_read_operation(op) {
            return false;
        }
        match bucket {
            Some(b) => self.allows_bucket(b),
            None => true,
        }
    }
}

pub struct Keys {
    map: HashMap<String, (SecretKey, Policy)>,
}

impl Keys {
    pub fn new(keys: &[AccessKey]) -> Keys {
        let map = keys
            .iter()
            .map(|k| {
                (
                    k.access_key.clone(),
                    (SecretKey::from(k.secret_key.expose()), k.policy.clone()),
                )
            })
            .collect();
        Keys { map }
    }

    pub fn policy(&self, access_key: &str) -> Option<&Policy> {
        self.map.get(access_key).map(|(_, p)| p)
    }
}

pub struct Auth(pub Arc<Keys>);

#[async_trait::async_trait]
impl S3Auth for Auth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        match self.0.map.get(access_key) {
            Some((secret, _)) => Ok(secret.clone()),
            None => Err(s3_error!(
                InvalidAccessKeyId,
                "The AWS Access Key Id you provided does not exist in our records."
            )),
        }
    }
}

pub struct Access(pub Arc<Keys>);

fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then_some(v)
    })
}

/// Limits on how a request was signed that s3s does not apply itself.
pub fn check_signing_limits(
    query: Option<&str>,
    headers: &http::HeaderMap,
    now_unix: i64,
) -> S3Result<()> {
    if let Some(q) = query {
        if let Some(v) = query_param(q, "X-Amz-Expires") {
            match v.parse::<i64>() {
                Ok(secs) if (1..=MAX_PRESIGNED_EXPIRY_SECS).contains(&secs) => {}
                _ => {
                    return Err(s3_error!(
                        AuthorizationQueryParametersError,
                        "X-Amz-Expires must be between 1 and 604800 seconds"
                    ));
                }
            }
        }
        if query_param(q, "Signature").is_some()
            && let Some(v) = query_param(q, "Expires")
        {
            match v.parse::<i64>() {
                Ok(at) if at - now_unix <= MAX_PRESIGNED_EXPIRY_SECS => {}
                _ => {
                    return Err(s3_error!(
                        AuthorizationQueryParametersError,
                        "Expires must be less than a week (604800 seconds) in the future"
                    ));
                }
            }
        }
    }
    // SigV2 in headers: s3s does not check the request date.
    let is_v2 = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("AWS "));
    if is_v2 {
        let date = headers
            .get("x-amz-date")
            .or_else(|| headers.get(http::header::DATE))
            .and_then(|v| v.to_str().ok())
            .and_then(parse_http_date);
        match date {
            Some(d) if (d.unix_timestamp() - now_unix).abs() <= MAX_SKEW_SECS => {}
            Some(_) => {
                return Err(s3_error!(
                    RequestTimeTooSkewed,
                    "request time is too far from server time"
                ));
            }
            None => {
                return Err(s3_error!(
                    AccessDenied,
                    "AWS authentication requires a valid Date or x-amz-date header"
                ));
            }
        }
    }
    Ok(())
}

fn parse_http_date(v: &str) -> Option<time::OffsetDateTime> {
    use time::format_description::well_known::Rfc2822;
    let v = v.trim();
    let v = v
        .strip_suffix(" GMT")
        .or_else(|| v.strip_suffix(" UTC"))
        .map_or_else(|| v.to_string(), |s| format!("{s} +0000"));
    time::OffsetDateTime::parse(&v, &Rfc2822).ok()
}

fn denied() -> s3s::S3Error {
    s3_error!(AccessDenied, "Access Denied")
}

impl Access {
    fn check_source(
        &self,
        req_cred: Option<&s3s::auth::Credentials>,
        source: &CopySource,
    ) -> S3Result<()> {
        let Some(cred) = req_cred else {
            return Err(denied());
        };
        let policy = self.0.policy(&cred.access_key).ok_or_else(denied)?;
        if let CopySource::Bucket { bucket, .. } = source
            && !policy.allows("GetObject", Some(bucket))
        {
            return Err(denied());
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl S3Access for Access {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let Some(cred) = cx.credentials() else {
            return Err(s3_error!(AccessDenied, "Signature is required"));
        };
        let policy = self.0.policy(&cred.access_key).ok_or_else(denied)?;
        if !policy.allows(cx.s3_op().name(), cx.s3_path().get_bucket_name()) {
            return Err(denied());
        }
        check_signing_limits(
            cx.uri().query(),
            cx.headers(),
            time::OffsetDateTime::now_utc().unix_timestamp(),
        )
    }

    async fn copy_object(&self, req: &mut S3Request<CopyObjectInput>) -> S3Result<()> {
        self.check_source(req.credentials.as_ref(), &req.input.copy_source)
    }

    async fn upload_part_copy(&self, req: &mut S3Request<UploadPartCopyInput>) -> S3Result<()> {
        self.check_source(req.credentials.as_ref(), &req.input.copy_source)
    }
}

/// The rate limiter's key: the access key a request claims (never the signature, which
/// changes with every request), else the client address.
pub fn rate_key(parts: &http::request::Parts, peer: Option<std::net::SocketAddr>) -> String {
    access_key_of(parts).map_or_else(
        || pressoir_core::ratelimit::ip_key(peer),
        |k| format!("k:{k}"),
    )
}

fn access_key_of(parts: &http::request::Parts) -> Option<String> {
    if let Some(v) = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        if let Some(rest) = v.split("Credential=").nth(1) {
            return rest.split('/').next().map(str::to_owned);
        }
        if let Some(rest) = v.strip_prefix("AWS ") {
            return rest.split(':').next().map(str::to_owned);
        }
    }
    let q = parts.uri.query()?;
    if let Some(c) = query_param(q, "X-Amz-Credential") {
        return c.split("%2F").next().map(str::to_owned);
    }
    query_param(q, "AWSAccessKeyId").map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_only_and_bucket_limits() {
        let ro = Policy {
            read_only: true,
            buckets: None,
        };
        assert!(ro.allows("GetObject", Some("x")));
        assert!(!ro.allows("PutObject", Some("x")));
        assert!(!ro.allows("DeleteBucket", Some("x")));
        let agent = Policy {
            read_only: false,
            buckets: Some(vec!["backups".into()]),
        };
        assert!(agent.allows("PutObject", Some("backups")));
        assert!(!agent.allows("GetObject", Some("other")));
        assert!(agent.allows("ListBuckets", None));
    }

    #[test]
    fn presigned_expiry_is_capped() {
        let h = http::HeaderMap::new();
        assert!(
            check_signing_limits(Some("X-Amz-Expires=604800&X-Amz-Signature=x"), &h, 0).is_ok()
        );
        let e = check_signing_limits(Some("X-Amz-Expires=604801"), &h, 0).unwrap_err();
        assert_eq!(e.code().as_str(), "AuthorizationQueryParametersError");
        assert!(
            check_signing_limits(Some("AWSAccessKeyId=a&Signature=s&Expires=1000"), &h, 0).is_ok()
        );
        assert!(
            check_signing_limits(Some("AWSAccessKeyId=a&Signature=s&Expires=700000"), &h, 0)
                .is_err()
        );
    }

    #[test]
    fn sigv2_header_dates_are_checked() {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, "AWS ak:sig".parse().unwrap());
        h.insert(
            http::header::DATE,
            "Thu, 01 Jan 1970 00:00:00 GMT".parse().unwrap(),
        );
        assert!(check_signing_limits(None, &h, 100).is_ok());
        let e = check_signing_limits(None, &h, 10_000).unwrap_err();
        assert_eq!(e.code().as_str(), "RequestTimeTooSkewed");
    }
}
