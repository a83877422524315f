//! The S3 operations: s3s decodes each request into a typed input; this module checks it,
//! calls the store and shapes the typed output. It knows no file layout.

use crate::listing::{self, Entry, Query};
use crate::store::{
    Algorithms, Attrs, BodyError, Checksums, Condition, ObjectMeta, PartMeta, Staged, Store,
    StoreError, UploadMeta, now_ms,
};
use base64::Engine as _;
use s3s::dto::*;
use s3s::{S3, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Size limits, from the service config.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_object_size: u64,
    pub max_part_size: u64,
    pub min_part_size: u64,
}

pub struct Objects {
    pub store: Arc<Store>,
    pub keys: Arc<crate::auth::Keys>,
    pub limits: Limits,
}

const MAX_KEYS: i32 = 1000;
const MAX_PARTS: i32 = 10_000;
const MAX_DELETE: usize = 1000;
/// Completions joining at least this many bytes answer with keep-alive whitespace.
const KEEP_ALIVE_COMPLETION: u64 = 64 << 20;

/// Maps store failures to S3 errors; an internal cause is logged here and never sent.
pub fn store_error(e: StoreError) -> S3Error {
    match e {
        StoreError::NoSuchBucket => s3_error!(NoSuchBucket, "The specified bucket does not exist"),
        StoreError::BucketExists => s3_error!(
            BucketAlreadyOwnedByYou,
            "Your previous request to create the named bucket succeeded and you already own it."
        ),
        StoreError::BucketNotEmpty => s3_error!(
            BucketNotEmpty,
            "The bucket you tried to delete is not empty"
        ),
        StoreError::NoSuchKey => s3_error!(NoSuchKey, "The specified key does not exist."),
        StoreError::NoSuchUpload => s3_error!(
            NoSuchUpload,
            "The specified multipart upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed."
        ),
        StoreError::InvalidPart(m) => S3Error::with_message(S3ErrorCode::InvalidPart, m),
        StoreError::InvalidPartOrder => s3_error!(
            InvalidPartOrder,
            "The list of parts was not in ascending order."
        ),
        StoreError::EntityTooSmall(n) => s3_error!(
            EntityTooSmall,
            "Your proposed upload is smaller than the minimum allowed object size (part {n})."
        ),
        StoreError::TooLarge(max) => s3_error!(
            EntityTooLarge,
            "Your proposed upload exceeds the maximum allowed size of {max} bytes"
        ),
        StoreError::Body(e) => body_error(&e),
        StoreError::PreconditionFailed => s3_error!(
            PreconditionFailed,
            "At least one of the pre-conditions you specified did not hold"
        ),
        StoreError::Busy => s3_error!(
            OperationAborted,
            "A conflicting conditional operation is currently in progress against this resource. Please try again."
        ),
        e @ (StoreError::Corrupt(_) | StoreError::Io(_)) => {
            tracing::error!(error = %e, "object store failure");
            internal_error()
        }
    }
}

pub fn internal_error() -> S3Error {
    s3_error!(
        InternalError,
        "We encountered an internal error. Please try again."
    )
}

fn custom(code: &'static str, status: http::StatusCode, msg: &'static str) -> S3Error {
    let mut e = S3Error::with_message(S3ErrorCode::Custom(code.into()), msg);
    e.set_status_code(status);
    e
}

/// What went wrong while the request body streamed in. s3s reports its body checks
/// (payload hash, chunk signatures) as stream errors whose types it does not export, so
/// they are told apart by their names.
fn body_error(e: &BodyError) -> S3Error {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e.as_ref());
    let mut text = String::new();
    while let Some(err) = cur {
        if let Some(s3) = err.downcast_ref::<S3Error>() {
            let mut out = S3Error::new(s3.code().clone());
            if let Some(m) = s3.message() {
                out.set_message(m.to_string());
            }
            return out;
        }
        text.push_str(&err.to_string());
        text.push('|');
        cur = err.source();
    }
    if text.contains("Sha256Mismatch") {
        custom(
            "XAmzContentSHA256Mismatch",
            http::StatusCode::BAD_REQUEST,
            "The provided 'x-amz-content-sha256' header does not match what was computed.",
        )
    } else if text.contains("SignatureMismatch") {
        s3_error!(
            SignatureDoesNotMatch,
            "The request signature we calculated does not match the signature you provided."
        )
    } else if text.contains("FormatError") || text.contains("TooLarge") || text.contains("TooMany")
    {
        s3_error!(InvalidRequest, "The aws-chunked body is malformed")
    } else {
        s3_error!(
            IncompleteBody,
            "You did not provide the number of bytes specified by the Content-Length HTTP header."
        )
    }
}

fn ts(ms: i64) -> Timestamp {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    Timestamp::from(t)
}

fn ts_ms(t: Timestamp) -> i64 {
    let t: time::OffsetDateTime = t.into();
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

fn etag(s: &str) -> ETag {
    ETag::Strong(s.to_string())
}

fn parse_md5(v: Option<&str>) -> S3Result<Option<[u8; 16]>> {
    let Some(v) = v else { return Ok(None) };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(v.trim())
        .map_err(|_| s3_error!(InvalidDigest, "The Content-MD5 you specified was invalid."))?;
    let arr: [u8; 16] = bytes
        .try_into()
        .map_err(|_| s3_error!(InvalidDigest, "The Content-MD5 you specified was invalid."))?;
    Ok(Some(arr))
}

/// The checksums a request states in its headers.
fn stated(
    crc32: &Option<String>,
    crc32c: &Option<String>,
    crc64nvme: &Option<String>,
    sha1: &Option<String>,
    sha256: &Option<String>,
) -> Checksums {
    Checksums {
        crc32: crc32.clone(),
        crc32c: crc32c.clone(),
        crc64nvme: crc64nvme.clone(),
        sha1: sha1.clone(),
        sha256: sha256.clone(),
    }
}

/// Which checksums to compute: the ones stated, the one named by the algorithm header and
/// the ones announced as trailers.
fn algorithms(stated: &Checksums, algo: Option<&str>, headers: &http::HeaderMap) -> Algorithms {
    let mut a = Algorithms {
        crc32: stated.crc32.is_some(),
        crc32c: stated.crc32c.is_some(),
        crc64nvme: stated.crc64nvme.is_some(),
        sha1: stated.sha1.is_some(),
        sha256: stated.sha256.is_some(),
    };
    let mut named: Vec<String> = Vec::new();
    if let Some(al) = algo {
        named.push(al.to_ascii_lowercase());
    }
    if let Some(t) = headers
        .get("x-amz-sdk-checksum-algorithm")
        .and_then(|v| v.to_str().ok())
    {
        named.push(t.to_ascii_lowercase());
    }
    if let Some(t) = headers.get("x-amz-trailer").and_then(|v| v.to_str().ok()) {
        for name in t.split(',') {
            if let Some(al) = name
                .trim()
                .to_ascii_lowercase()
                .strip_prefix("x-amz-checksum-")
            {
                named.push(al.to_string());
            }
        }
    }
    for n in named {
        match n.as_str() {
            "crc32" => a.crc32 = true,
            "crc32c" => a.crc32c = true,
            "crc64nvme" => a.crc64nvme = true,
            "sha1" => a.sha1 = true,
            "sha256" => a.sha256 = true,
            _ => {}
        }
    }
    a
}

/// Adds the checksums sent as aws-chunked trailers to the stated ones.
fn with_trailers(mut s: Checksums, trailers: Option<&s3s::TrailingHeaders>) -> Checksums {
    if let Some(t) = trailers {
        t.read(|h| {
            let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
            s.crc32 = s.crc32.take().or_else(|| get("x-amz-checksum-crc32"));
            s.crc32c = s.crc32c.take().or_else(|| get("x-amz-checksum-crc32c"));
            s.crc64nvme = s
                .crc64nvme
                .take()
                .or_else(|| get("x-amz-checksum-crc64nvme"));
            s.sha1 = s.sha1.take().or_else(|| get("x-amz-checksum-sha1"));
            s.sha256 = s.sha256.take().or_else(|| get("x-amz-checksum-sha256"));
        });
    }
    s
}

/// Checks a staged body against the Content-MD5 and checksums the client sent.
fn verify(staged: &Staged, md5: Option<[u8; 16]>, expected: &Checksums) -> S3Result<()> {
    if let Some(m) = md5
        && m != staged.md5
    {
        return Err(s3_error!(
            BadDigest,
            "The Content-MD5 you specified did not match what we received."
        ));
    }
    let pairs = [
        ("CRC32", &expected.crc32, &staged.checksums.crc32),
        ("CRC32C", &expected.crc32c, &staged.checksums.crc32c),
        (
            "CRC64NVME",
            &expected.crc64nvme,
            &staged.checksums.crc64nvme,
        ),
        ("SHA1", &expected.sha1, &staged.checksums.sha1),
        ("SHA256", &expected.sha256, &staged.checksums.sha256),
    ];
    for (name, want, got) in pairs {
        if let (Some(w), Some(g)) = (want, got)
            && w.trim() != g
        {
            return Err(s3_error!(
                BadDigest,
                "The {name} you specified did not match the calculated checksum."
            ));
        }
    }
    Ok(())
}

fn attrs(
    content_type: Option<String>,
    cache_control: Option<String>,
    content_disposition: Option<String>,
    content_encoding: Option<String>,
    content_language: Option<String>,
    expires: Option<Timestamp>,
    metadata: Option<Metadata>,
) -> Attrs {
    // `aws-chunked` describes how the body was sent, not the object: S3 does not keep it.
    let content_encoding = content_encoding.and_then(|e| {
        let kept: Vec<&str> = e
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty() && !t.eq_ignore_ascii_case("aws-chunked"))
            .collect();
        (!kept.is_empty()).then(|| kept.join(", "))
    });
    Attrs {
        content_type,
        cache_control,
        content_disposition,
        content_encoding,
        content_language,
        expires_ms: expires.map(ts_ms),
        metadata: metadata
            .map(|m| m.into_iter().collect())
            .unwrap_or_default(),
    }
}

fn metadata_out(m: &BTreeMap<String, String>) -> Option<Metadata> {
    if m.is_empty() {
        None
    } else {
        Some(m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }
}

fn content_type(a: &Attrs) -> String {
    a.content_type
        .clone()
        .unwrap_or_else(|| "binary/octet-stream".to_string())
}

fn check_key(key: &str) -> S3Result<()> {
    if key.is_empty() {
        return Err(s3_error!(InvalidArgument, "object keys must not be empty"));
    }
    if key.len() > 1024 {
        return Err(s3_error!(KeyTooLongError, "Your key is too long"));
    }
    Ok(())
}

fn encode_if(url: bool, s: String) -> String {
    if url { listing::url_encode(&s) } else { s }
}

fn is_url(e: &Option<EncodingType>) -> bool {
    e.as_ref()
        .is_some_and(|e| e.as_str().eq_ignore_ascii_case("url"))
}

fn max_keys(m: Option<i32>) -> S3Result<usize> {
    match m {
        None => Ok(MAX_KEYS as usize),
        Some(n) if n < 0 => Err(s3_error!(InvalidArgument, "max-keys must not be negative")),
        Some(n) => Ok(n.min(MAX_KEYS) as usize),
    }
}

fn parse_copy_range(v: &str, size: u64) -> S3Result<(u64, u64)> {
    let bad = || {
        s3_error!(
            InvalidArgument,
            "The x-amz-copy-source-range value must be of the form bytes=first-last"
        )
    };
    let r = v.strip_prefix("bytes=").ok_or_else(bad)?;
    let (a, b) = r.split_once('-').ok_or_else(bad)?;
    let first: u64 = a.parse().map_err(|_| bad())?;
    let last: u64 = b.parse().map_err(|_| bad())?;
    if first > last || last >= size {
        return Err(s3_error!(
            InvalidRange,
            "The requested range is not satisfiable"
        ));
    }
    Ok((first, last - first + 1))
}

/// An object's headers as GetObject and HeadObject both answer them (two s3s types with the
/// same fields): the stored attributes, overridden by the request's `response-*` parameters.
macro_rules! object_headers {
    ($ty:ident, $input:ident, $meta:ident, $sums:ident, { $($field:ident: $value:expr),* $(,)? }) => {{
        let a = &$meta.attrs;
        $ty {
            $($field: $value,)*
            accept_ranges: Some("bytes".into()),
            content_type: Some($input.response_content_type.unwrap_or_else(|| content_type(a))),
            cache_control: $input.response_cache_control.or_else(|| a.cache_control.clone()),
            content_disposition: $input
                .response_content_disposition
                .or_else(|| a.content_disposition.clone()),
            content_encoding: $input.response_content_encoding.or_else(|| a.content_encoding.clone()),
            content_language: $input.response_content_language.or_else(|| a.content_language.clone()),
            expires: $input.response_expires.or_else(|| a.expires_ms.map(ts)),
            e_tag: Some(etag(&$meta.etag)),
            last_modified: Some(ts($meta.last_modified_ms)),
            metadata: metadata_out(&a.metadata),
            parts_count: $meta.parts.map(|p| p as i32),
            checksum_crc32: $sums.crc32,
            checksum_crc32c: $sums.crc32c,
            checksum_crc64nvme: $sums.crc64nvme,
            checksum_sha1: $sums.sha1,
            checksum_sha256: $sums.sha256,
            ..Default::default()
        }
    }};
}

impl Objects {
    fn check_part_number(n: i32) -> S3Result<()> {
        if !(1..=MAX_PARTS).contains(&n) {
            return Err(s3_error!(
                InvalidArgument,
                "Part number must be an integer between 1 and 10000, inclusive"
            ));
        }
        Ok(())
    }

    fn check_length(len: Option<i64>, max: u64) -> S3Result<()> {
        if let Some(l) = len
            && l > 0
            && l as u64 > max
        {
            return Err(store_error(StoreError::TooLarge(max)));
        }
        Ok(())
    }

    /// Stages a PUT's or a part's body of at most `max` bytes, then checks it against its
    /// Content-MD5, the checksums its headers state and those its aws-chunked trailers carry.
    #[allow(clippy::too_many_arguments)]
    async fn stage_checked(
        &self,
        body: Option<StreamingBlob>,
        max: u64,
        content_md5: Option<&str>,
        stated: Checksums,
        algorithm: Option<&str>,
        headers: &http::HeaderMap,
        trailers: Option<&s3s::TrailingHeaders>,
    ) -> S3Result<Staged> {
        let md5 = parse_md5(content_md5)?;
        let algos = algorithms(&stated, algorithm, headers);
        let body = body.unwrap_or_else(|| StreamingBlob::from(s3s::Body::empty()));
        let staged = self
            .store
            .stage(body, max, algos)
            .await
            .map_err(store_error)?;
        verify(&staged, md5, &with_trailers(stated, trailers))?;
        Ok(staged)
    }
}

#[async_trait::async_trait]
impl S3 for Objects {
    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let policy = req
            .credentials
            .as_ref()
            .and_then(|c| self.keys.policy(&c.access_key))
            .cloned()
            .unwrap_or_default();
        let prefix = req.input.prefix.clone().unwrap_or_default();
        let buckets = self
            .store
            .list_buckets()
            .into_iter()
            .filter(|(name, _)| policy.allows_bucket(name) && name.starts_with(&prefix))
            .map(|(name, created)| Bucket {
                name: Some(name),
                creation_date: Some(ts(created)),
                bucket_region: None,
            })
            .collect();
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            owner: Some(Owner {
                display_name: Some("pressoir".into()),
                id: Some("pressoir".into()),
            }),
            ..Default::default()
        }))
    }

    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let bucket = req.input.bucket;
        self.store
            .create_bucket(&bucket)
            .await
            .map_err(store_error)?;
        Ok(S3Response::new(CreateBucketOutput {
            location: Some(format!("/{bucket}")),
        }))
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        self.store
            .delete_bucket(&req.input.bucket)
            .await
            .map_err(store_error)?;
        Ok(S3Response::new(DeleteBucketOutput {}))
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        if !self.store.bucket_exists(&req.input.bucket) {
            return Err(store_error(StoreError::NoSuchBucket));
        }
        Ok(S3Response::new(HeadBucketOutput {
            bucket_region: Some("us-east-1".into()),
            ..Default::default()
        }))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        if !self.store.bucket_exists(&req.input.bucket) {
            return Err(store_error(StoreError::NoSuchBucket));
        }
        Ok(S3Response::new(GetBucketLocationOutput::default()))
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let headers = req.headers;
        let trailers = req.trailing_headers;
        let input = req.input;
        check_key(&input.key)?;
        if !self.store.bucket_exists(&input.bucket) {
            return Err(store_error(StoreError::NoSuchBucket));
        }
        Self::check_length(input.content_length, self.limits.max_object_size)?;
        let cond = write_condition(input.if_match.as_ref(), input.if_none_match.as_ref())?;
        let stated = stated(
            &input.checksum_crc32,
            &input.checksum_crc32c,
            &input.checksum_crc64nvme,
            &input.checksum_sha1,
            &input.checksum_sha256,
        );
        let staged = self
            .stage_checked(
                input.body,
                self.limits.max_object_size,
                input.content_md5.as_deref(),
                stated,
                input.checksum_algorithm.as_ref().map(|a| a.as_str()),
                &headers,
                trailers.as_ref(),
            )
            .await?;
        let meta = ObjectMeta {
            key: input.key,
            size: staged.size,
            etag: hex::encode(staged.md5),
            last_modified_ms: now_ms(),
            attrs: attrs(
                input.content_type,
                input.cache_control,
                input.content_disposition,
                input.content_encoding,
                input.content_language,
                input.expires,
                input.metadata,
            ),
            checksums: staged.checksums.clone(),
            parts: None,
            segments: None,
        };
        let meta = self
            .store
            .commit_object(&input.bucket, staged, meta, cond)
            .await
            .map_err(store_error)?;
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(etag(&meta.etag)),
            checksum_crc32: meta.checksums.crc32,
            checksum_crc32c: meta.checksums.crc32c,
            checksum_crc64nvme: meta.checksums.crc64nvme,
            checksum_sha1: meta.checksums.sha1,
            checksum_sha256: meta.checksums.sha256,
            size: Some(meta.size as i64),
            ..Default::default()
        }))
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let input = req.input;
        let obj = self
            .store
            .open_object(&input.bucket, &input.key)
            .await
            .map_err(store_error)?;
        let meta = obj.meta.clone();
        check_preconditions(&meta, input.if_match.as_ref(), input.if_none_match.as_ref())?;
        let size = meta.size;
        let part = match input.part_number {
            Some(n) => Some(part_range(&meta, n)?),
            None => None,
        };
        let (start, len, content_range) = match (&input.range, part) {
            (_, Some((start, len))) => (
                start,
                len,
                Some(format!(
                    "bytes {}-{}/{}",
                    start,
                    (start + len).max(1) - 1,
                    size
                )),
            ),
            (None, None) => (0, size, None),
            (Some(r), None) => {
                let rr = r.check(size).map_err(|_| {
                    s3_error!(InvalidRange, "The requested range is not satisfiable")
                })?;
                (
                    rr.start,
                    rr.end - rr.start,
                    Some(format!("bytes {}-{}/{}", rr.start, rr.end - 1, size)),
                )
            }
        };
        let whole = len == size;
        let want_checksums = whole
            && input
                .checksum_mode
                .as_ref()
                .is_some_and(|m| m.as_str() == ChecksumMode::ENABLED);
        let sums = if want_checksums {
            meta.checksums.clone()
        } else {
            Checksums::default()
        };
        let body = StreamingBlob::wrap(obj.stream(start, len));
        let output = object_headers!(GetObjectOutput, input, meta, sums, {
            body: Some(body),
            content_length: Some(len as i64),
            content_range: content_range,
        });
        let mut resp = S3Response::new(output);
        if input.range.is_some() || (input.part_number.is_some() && meta.parts.is_some()) {
            resp.status = Some(http::StatusCode::PARTIAL_CONTENT);
        }
        Ok(resp)
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let input = req.input;
        let meta = self
            .store
            .head(&input.bucket, &input.key)
            .await
            .map_err(store_error)?;
        check_preconditions(&meta, input.if_match.as_ref(), input.if_none_match.as_ref())?;
        let want = input
            .checksum_mode
            .as_ref()
            .is_some_and(|m| m.as_str() == ChecksumMode::ENABLED);
        let sums = if want {
            meta.checksums.clone()
        } else {
            Checksums::default()
        };
        let content_length = match input.part_number {
            Some(n) => part_range(&meta, n)?.1,
            None => meta.size,
        };
        Ok(S3Response::new(
            object_headers!(HeadObjectOutput, input, meta, sums, {
                content_length: Some(content_length as i64),
            }),
        ))
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        self.store
            .delete_object(&req.input.bucket, &req.input.key)
            .await
            .map_err(store_error)?;
        Ok(S3Response::with_status(
            DeleteObjectOutput::default(),
            http::StatusCode::NO_CONTENT,
        ))
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let input = req.input;
        if input.delete.objects.len() > MAX_DELETE {
            return Err(s3_error!(
                MalformedXML,
                "a DeleteObjects request may name at most 1000 keys"
            ));
        }
        if !self.store.bucket_exists(&input.bucket) {
            return Err(store_error(StoreError::NoSuchBucket));
        }
        let quiet = input.delete.quiet.unwrap_or(false);
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        for obj in input.delete.objects {
            match self.store.delete_object(&input.bucket, &obj.key).await {
                Ok(_) => {
                    if !quiet {
                        deleted.push(DeletedObject {
                            key: Some(obj.key),
                            ..Default::default()
                        });
                    }
                }
                Err(e) => {
                    let e = store_error(e);
                    errors.push(Error {
                        code: Some(e.code().as_str().to_string()),
                        key: Some(obj.key),
                        message: e.message().map(str::to_owned),
                        version_id: None,
                    });
                }
            }
        }
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: if errors.is_empty() {
                None
            } else {
                Some(errors)
            },
            ..Default::default()
        }))
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let input = req.input;
        check_key(&input.key)?;
        let (src_bucket, src_key) = match &input.copy_source {
            CopySource::Bucket { bucket, key, .. } => (bucket.to_string(), key.to_string()),
            _ => {
                return Err(s3_error!(
                    NotImplemented,
                    "access points and outposts are not supported"
                ));
            }
        };
        if !self.store.bucket_exists(&input.bucket) {
            return Err(store_error(StoreError::NoSuchBucket));
        }
        let replace = input
            .metadata_directive
            .as_ref()
            .is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
        if src_bucket == input.bucket && src_key == input.key && !replace {
            return Err(s3_error!(
                InvalidRequest,
                "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes."
            ));
        }
        let src_meta = self
            .store
            .head(&src_bucket, &src_key)
            .await
            .map_err(store_error)?;
        check_copy_preconditions(
            &src_meta,
            input.copy_source_if_match.as_ref(),
            input.copy_source_if_none_match.as_ref(),
        )?;
        let algos = Algorithms {
            crc32: src_meta.checksums.crc32.is_some(),
            crc32c: src_meta.checksums.crc32c.is_some(),
            crc64nvme: src_meta.checksums.crc64nvme.is_some(),
            sha1: src_meta.checksums.sha1.is_some(),
            sha256: src_meta.checksums.sha256.is_some(),
        };
        let (staged, src_meta) = self
            .store
            .stage_copy(&src_bucket, &src_key, None, algos)
            .await
            .map_err(store_error)?;
        let new_attrs = if replace {
            attrs(
                input.content_type,
                input.cache_control,
                input.content_disposition,
                input.content_encoding,
                input.content_language,
                input.expires,
                input.metadata,
            )
        } else {
            src_meta.attrs.clone()
        };
        let meta = ObjectMeta {
            key: input.key,
            size: staged.size,
            etag: hex::encode(staged.md5),
            last_modified_ms: now_ms(),
            attrs: new_attrs,
            checksums: staged.checksums.clone(),
            parts: None,
            segments: None,
        };
        let meta = self
            .store
            .commit_object(&input.bucket, staged, meta, Condition::None)
            .await
            .map_err(store_error)?;
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(etag(&meta.etag)),
                last_modified: Some(ts(meta.last_modified_ms)),
                checksum_crc32: meta.checksums.crc32,
                checksum_crc32c: meta.checksums.crc32c,
                checksum_crc64nvme: meta.checksums.crc64nvme,
                checksum_sha1: meta.checksums.sha1,
                checksum_sha256: meta.checksums.sha256,
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let input = req.input;
        let url = is_url(&input.encoding_type);
        let max = max_keys(input.max_keys)?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let q = Query {
            prefix: &prefix,
            delimiter: input.delimiter.as_deref().filter(|d| !d.is_empty()),
            after: input.marker.as_deref().filter(|m| !m.is_empty()),
            max,
        };
        let (contents, prefixes, truncated, next) = self
            .store
            .with_index(&input.bucket, |idx| collect(listing::list(idx, &q), url))
            .map_err(store_error)?;
        let next_marker = if input.delimiter.as_deref().is_some_and(|d| !d.is_empty()) {
            next.map(|n| encode_if(url, n))
        } else {
            None
        };
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(input.bucket),
            prefix: Some(encode_if(url, prefix)),
            marker: Some(encode_if(url, input.marker.unwrap_or_default())),
            max_keys: Some(max as i32),
            is_truncated: Some(truncated),
            contents: Some(contents),
            common_prefixes: Some(prefixes),
            delimiter: input
                .delimiter
                .filter(|d| !d.is_empty())
                .map(|d| encode_if(url, d)),
            next_marker,
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = req.input;
        let url = is_url(&input.encoding_type);
        let max = max_keys(input.max_keys)?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let token_marker = match &input.continuation_token {
            Some(t) => Some(listing::decode_token(t).ok_or_else(|| {
                s3_error!(
                    InvalidArgument,
                    "The continuation token provided is incorrect"
                )
            })?),
            None => None,
        };
        let after = token_marker
            .as_deref()
            .or(input.start_after.as_deref().filter(|s| !s.is_empty()));
        let q = Query {
            prefix: &prefix,
            delimiter: input.delimiter.as_deref().filter(|d| !d.is_empty()),
            after,
            max,
        };
        let (contents, prefixes, truncated, next) = self
            .store
            .with_index(&input.bucket, |idx| collect(listing::list(idx, &q), url))
            .map_err(store_error)?;
        let key_count = (contents.len() + prefixes.len()) as i32;
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: Some(encode_if(url, prefix)),
            max_keys: Some(max as i32),
            key_count: Some(key_count),
            continuation_token: input.continuation_token,
            is_truncated: Some(truncated),
            next_continuation_token: next.map(|n| listing::encode_token(&n)),
            contents: Some(contents),
            common_prefixes: Some(prefixes),
            delimiter: input
                .delimiter
                .filter(|d| !d.is_empty())
                .map(|d| encode_if(url, d)),
            encoding_type: input.encoding_type,
            start_after: input.start_after.map(|s| encode_if(url, s)),
            ..Default::default()
        }))
    }

    async fn list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        // Buckets are unversioned: each object is its one "null" version.
        let input = req.input;
        let url = is_url(&input.encoding_type);
        let max = max_keys(input.max_keys)?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let q = Query {
            prefix: &prefix,
            delimiter: input.delimiter.as_deref().filter(|d| !d.is_empty()),
            after: input.key_marker.as_deref().filter(|m| !m.is_empty()),
            max,
        };
        let (contents, prefixes, truncated, next) = self
            .store
            .with_index(&input.bucket, |idx| collect(listing::list(idx, &q), url))
            .map_err(store_error)?;
        let versions = contents
            .into_iter()
            .map(|o| ObjectVersion {
                e_tag: o.e_tag,
                is_latest: Some(true),
                key: o.key,
                last_modified: o.last_modified,
                owner: o.owner,
                size: o.size,
                storage_class: Some(ObjectVersionStorageClass::from_static(
                    ObjectVersionStorageClass::STANDARD,
                )),
                version_id: Some("null".into()),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListObjectVersionsOutput {
            name: Some(input.bucket),
            prefix: Some(encode_if(url, prefix)),
            key_marker: Some(encode_if(url, input.key_marker.unwrap_or_default())),
            max_keys: Some(max as i32),
            is_truncated: Some(truncated),
            next_key_marker: next.map(|n| encode_if(url, n)),
            next_version_id_marker: if truncated { Some("null".into()) } else { None },
            versions: Some(versions),
            common_prefixes: Some(prefixes),
            delimiter: input
                .delimiter
                .filter(|d| !d.is_empty())
                .map(|d| encode_if(url, d)),
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let input = req.input;
        check_key(&input.key)?;
        let meta = UploadMeta {
            key: input.key.clone(),
            initiated_ms: now_ms(),
            attrs: attrs(
                input.content_type,
                input.cache_control,
                input.content_disposition,
                input.content_encoding,
                input.content_language,
                input.expires,
                input.metadata,
            ),
            checksum_algorithm: input
                .checksum_algorithm
                .as_ref()
                .map(|a| a.as_str().to_string()),
        };
        let id = self
            .store
            .create_upload(&input.bucket, meta)
            .await
            .map_err(store_error)?;
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(id),
            ..Default::default()
        }))
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let headers = req.headers;
        let trailers = req.trailing_headers;
        let input = req.input;
        Self::check_part_number(input.part_number)?;
        Self::check_length(input.content_length, self.limits.max_part_size)?;
        self.store
            .upload_meta(&input.bucket, &input.upload_id, &input.key)
            .await
            .map_err(store_error)?;
        let stated = stated(
            &input.checksum_crc32,
            &input.checksum_crc32c,
            &input.checksum_crc64nvme,
            &input.checksum_sha1,
            &input.checksum_sha256,
        );
        let staged = self
            .stage_checked(
                input.body,
                self.limits.max_part_size,
                input.content_md5.as_deref(),
                stated,
                input.checksum_algorithm.as_ref().map(|a| a.as_str()),
                &headers,
                trailers.as_ref(),
            )
            .await?;
        let part = PartMeta {
            part_number: input.part_number,
            size: staged.size,
            etag: hex::encode(staged.md5),
            last_modified_ms: now_ms(),
            checksums: staged.checksums.clone(),
        };
        let part = self
            .store
            .commit_part(&input.bucket, &input.upload_id, staged, part)
            .await
            .map_err(store_error)?;
        Ok(S3Response::new(UploadPartOutput {
            e_tag: Some(etag(&part.etag)),
            checksum_crc32: part.checksums.crc32,
            checksum_crc32c: part.checksums.crc32c,
            checksum_crc64nvme: part.checksums.crc64nvme,
            checksum_sha1: part.checksums.sha1,
            checksum_sha256: part.checksums.sha256,
            ..Default::default()
        }))
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        let input = req.input;
        Self::check_part_number(input.part_number)?;
        let (src_bucket, src_key) = match &input.copy_source {
            CopySource::Bucket { bucket, key, .. } => (bucket.to_string(), key.to_string()),
            _ => {
                return Err(s3_error!(
                    NotImplemented,
                    "access points and outposts are not supported"
                ));
            }
        };
        self.store
            .upload_meta(&input.bucket, &input.upload_id, &input.key)
            .await
            .map_err(store_error)?;
        let src = self
            .store
            .head(&src_bucket, &src_key)
            .await
            .map_err(store_error)?;
        check_copy_preconditions(
            &src,
            input.copy_source_if_match.as_ref(),
            input.copy_source_if_none_match.as_ref(),
        )?;
        let range = match &input.copy_source_range {
            Some(r) => Some(parse_copy_range(r, src.size)?),
            None => None,
        };
        let len = range.map_or(src.size, |r| r.1);
        if len > self.limits.max_part_size {
            return Err(store_error(StoreError::TooLarge(self.limits.max_part_size)));
        }
        let (staged, _) = self
            .store
            .stage_copy(&src_bucket, &src_key, range, Algorithms::default())
            .await
            .map_err(store_error)?;
        let part = PartMeta {
            part_number: input.part_number,
            size: staged.size,
            etag: hex::encode(staged.md5),
            last_modified_ms: now_ms(),
            checksums: Checksums::default(),
        };
        let part = self
            .store
            .commit_part(&input.bucket, &input.upload_id, staged, part)
            .await
            .map_err(store_error)?;
        Ok(S3Response::new(UploadPartCopyOutput {
            copy_part_result: Some(CopyPartResult {
                e_tag: Some(etag(&part.etag)),
                last_modified: Some(ts(part.last_modified_ms)),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let input = req.input;
        if let Some((key, tag)) = self.store.completed(&input.bucket, &input.upload_id)
            && key == input.key
        {
            return Ok(S3Response::new(CompleteMultipartUploadOutput {
                bucket: Some(input.bucket),
                key: Some(key),
                e_tag: Some(etag(&tag)),
                ..Default::default()
            }));
        }
        let parts = input
            .multipart_upload
            .and_then(|m| m.parts)
            .unwrap_or_default();
        let mut chosen = Vec::with_capacity(parts.len());
        for p in parts {
            let n = p
                .part_number
                .ok_or_else(|| s3_error!(MalformedXML, "every part needs a PartNumber"))?;
            let tag = p.e_tag.map(|t| t.value().to_string()).unwrap_or_default();
            chosen.push((n, tag));
        }
        let plan = self
            .store
            .plan_completion(
                &input.bucket,
                &input.upload_id,
                &input.key,
                chosen,
                self.limits.min_part_size,
            )
            .await
            .map_err(store_error)?;
        let bucket = input.bucket;
        let output = move |meta: ObjectMeta| CompleteMultipartUploadOutput {
            location: Some(format!("/{}/{}", bucket, listing::url_encode(&meta.key))),
            bucket: Some(bucket.clone()),
            key: Some(meta.key.clone()),
            e_tag: Some(etag(&meta.etag)),
            ..Default::default()
        };
        if plan.size() < KEEP_ALIVE_COMPLETION {
            let meta = self
                .store
                .finish_completion(plan)
                .await
                .map_err(store_error)?;
            return Ok(S3Response::new(output(meta)));
        }
        // Joining a large upload takes a while: answer 200 at once and keep the connection
        // alive with whitespace until the result (or an error) follows, as AWS does.
        let store = self.store.clone();
        let future = async move {
            let meta = store.finish_completion(plan).await.map_err(store_error)?;
            Ok(output(meta))
        };
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            future: Some(Box::pin(future)),
            ..Default::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let input = req.input;
        self.store
            .upload_meta(&input.bucket, &input.upload_id, &input.key)
            .await
            .map_err(store_error)?;
        self.store
            .abort_upload(&input.bucket, &input.upload_id)
            .await
            .map_err(store_error)?;
        Ok(S3Response::with_status(
            AbortMultipartUploadOutput::default(),
            http::StatusCode::NO_CONTENT,
        ))
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        let input = req.input;
        self.store
            .upload_meta(&input.bucket, &input.upload_id, &input.key)
            .await
            .map_err(store_error)?;
        let all = self
            .store
            .list_parts(&input.bucket, &input.upload_id)
            .await
            .map_err(store_error)?;
        let marker = input.part_number_marker.unwrap_or(0);
        let max = input.max_parts.unwrap_or(1000).clamp(0, 1000) as usize;
        let after: Vec<&PartMeta> = all.iter().filter(|p| p.part_number > marker).collect();
        let truncated = after.len() > max;
        let page: Vec<Part> = after
            .iter()
            .take(max)
            .map(|p| Part {
                e_tag: Some(etag(&p.etag)),
                last_modified: Some(ts(p.last_modified_ms)),
                part_number: Some(p.part_number),
                size: Some(p.size as i64),
                checksum_crc32: p.checksums.crc32.clone(),
                checksum_crc32c: p.checksums.crc32c.clone(),
                checksum_crc64nvme: p.checksums.crc64nvme.clone(),
                checksum_sha1: p.checksums.sha1.clone(),
                checksum_sha256: p.checksums.sha256.clone(),
            })
            .collect();
        let next = if truncated {
            page.last().and_then(|p| p.part_number)
        } else {
            None
        };
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(input.upload_id),
            part_number_marker: input.part_number_marker,
            next_part_number_marker: next,
            max_parts: Some(max as i32),
            is_truncated: Some(truncated),
            parts: Some(page),
            ..Default::default()
        }))
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let input = req.input;
        let url = is_url(&input.encoding_type);
        let all = self
            .store
            .list_uploads(&input.bucket)
            .await
            .map_err(store_error)?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let max = input.max_uploads.unwrap_or(1000).clamp(0, 1000) as usize;
        let key_marker = input.key_marker.clone().unwrap_or_default();
        let id_marker = input.upload_id_marker.clone().unwrap_or_default();
        let mut uploads = Vec::new();
        let mut truncated = false;
        for (id, m) in &all {
            if !m.key.starts_with(&prefix) {
                continue;
            }
            if !key_marker.is_empty() {
                let past = m.key.as_str() > key_marker.as_str()
                    || (m.key == key_marker
                        && !id_marker.is_empty()
                        && id.as_str() > id_marker.as_str());
                if !past {
                    continue;
                }
            }
            if uploads.len() >= max {
                truncated = true;
                break;
            }
            uploads.push(MultipartUpload {
                initiated: Some(ts(m.initiated_ms)),
                key: Some(encode_if(url, m.key.clone())),
                upload_id: Some(id.clone()),
                storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
                ..Default::default()
            });
        }
        let (next_key, next_id) = if truncated {
            let last = uploads.last();
            (
                last.and_then(|u| u.key.clone()),
                last.and_then(|u| u.upload_id.clone()),
            )
        } else {
            (None, None)
        };
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: Some(encode_if(url, prefix)),
            key_marker: Some(encode_if(url, key_marker)),
            upload_id_marker: Some(id_marker),
            max_uploads: Some(max as i32),
            is_truncated: Some(truncated),
            next_key_marker: next_key,
            next_upload_id_marker: next_id,
            uploads: Some(uploads),
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }
}

type Collected = (Vec<Object>, Vec<CommonPrefix>, bool, Option<String>);

fn collect(page: listing::Page<'_, crate::store::Summary>, url: bool) -> Collected {
    let next = page.next_marker();
    let mut contents = Vec::new();
    let mut prefixes = Vec::new();
    for e in page.entries {
        match e {
            Entry::Object(k, s) => contents.push(Object {
                key: Some(encode_if(url, k.to_string())),
                e_tag: Some(etag(&s.etag)),
                last_modified: Some(ts(s.last_modified_ms)),
                size: Some(s.size as i64),
                storage_class: Some(ObjectStorageClass::from_static(
                    ObjectStorageClass::STANDARD,
                )),
                ..Default::default()
            }),
            Entry::Prefix(p) => prefixes.push(CommonPrefix {
                prefix: Some(encode_if(url, p)),
            }),
        }
    }
    (contents, prefixes, page.truncated, next)
}

/// The byte range `(start, len)` of part `n` (1-based) of an object, for `?partNumber=`.
fn part_range(meta: &ObjectMeta, n: i32) -> S3Result<(u64, u64)> {
    let bad = || s3_error!(InvalidPart, "The requested partnumber is not satisfiable");
    match &meta.segments {
        Some(segs) => {
            let i = usize::try_from(n)
                .ok()
                .and_then(|n| n.checked_sub(1))
                .ok_or_else(bad)?;
            let (_, len) = *segs.parts.get(i).ok_or_else(bad)?;
            let start = segs.parts[..i].iter().map(|p| p.1).sum();
            Ok((start, len))
        }
        None if n == 1 => Ok((0, meta.size)),
        None => Err(bad()),
    }
}

/// The precondition of a PutObject.
fn write_condition(
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
) -> S3Result<Condition> {
    match (if_match, if_none_match) {
        (None, None) => Ok(Condition::None),
        (None, Some(ETagCondition::Any)) => Ok(Condition::Absent),
        (Some(ETagCondition::Any), None) => Ok(Condition::Exists),
        (Some(ETagCondition::ETag(e)), None) => Ok(Condition::ETag(e.value().to_string())),
        (None, Some(ETagCondition::ETag(e))) => Ok(Condition::NotETag(e.value().to_string())),
        _ => Err(s3_error!(
            NotImplemented,
            "only If-None-Match: * or a single If-Match is supported on writes"
        )),
    }
}

fn condition_matches(cond: &ETagCondition, tag: &str) -> bool {
    match cond {
        ETagCondition::Any => true,
        ETagCondition::ETag(e) => e.value() == tag,
    }
}

/// `x-amz-copy-source-if-match` / `-if-none-match`: both fail with 412, as in S3.
fn check_copy_preconditions(
    meta: &ObjectMeta,
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
) -> S3Result<()> {
    let failed = if_match.is_some_and(|c| !condition_matches(c, &meta.etag))
        || if_none_match.is_some_and(|c| condition_matches(c, &meta.etag));
    if failed {
        return Err(s3_error!(
            PreconditionFailed,
            "At least one of the pre-conditions you specified did not hold"
        ));
    }
    Ok(())
}

/// `If-Match` / `If-None-Match` on reads.
fn check_preconditions(
    meta: &ObjectMeta,
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
) -> S3Result<()> {
    if let Some(c) = if_match
        && !condition_matches(c, &meta.etag)
    {
        return Err(s3_error!(
            PreconditionFailed,
            "At least one of the pre-conditions you specified did not hold"
        ));
    }
    if let Some(c) = if_none_match
        && condition_matches(c, &meta.etag)
    {
        let mut e = S3Error::with_message(S3ErrorCode::NotModified, "Not Modified");
        e.set_status_code(http::StatusCode::NOT_MODIFIED);
        let mut h = http::HeaderMap::new();
        if let Ok(v) = http::HeaderValue::from_str(&format!("\"{}\"", meta.etag)) {
            h.insert(http::header::ETAG, v);
        }
        e.set_headers(h);
        return Err(e);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_md5_parsing() {
        assert!(parse_md5(Some("not base64!")).is_err());
        assert_eq!(
            parse_md5(Some("AAAA")).unwrap_err().code().as_str(),
            "InvalidDigest"
        );
        let ok = base64::engine::general_purpose::STANDARD.encode([7u8; 16]);
        assert_eq!(parse_md5(Some(&ok)).unwrap(), Some([7u8; 16]));
    }

    #[test]
    fn trailer_names_select_algorithms() {
        let mut h = http::HeaderMap::new();
        h.insert("x-amz-trailer", "x-amz-checksum-crc32".parse().unwrap());
        let a = algorithms(&Checksums::default(), None, &h);
        assert!(a.crc32 && !a.sha256);
        let a = algorithms(
            &Checksums::default(),
            Some("SHA256"),
            &http::HeaderMap::new(),
        );
        assert!(a.sha256);
    }

    #[test]
    fn copy_ranges() {
        assert_eq!(parse_copy_range("bytes=0-9", 100).unwrap(), (0, 10));
        assert!(parse_copy_range("bytes=5-200", 100).is_err());
        assert!(parse_copy_range("0-9", 100).is_err());
    }
}
