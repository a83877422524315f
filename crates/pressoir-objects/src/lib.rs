//! Pressoir's object storage: an S3 endpoint (path-style) on local disk, for site backups.
//!
//! It speaks S3 on the wire through the `s3s` crate (request parsing, SigV4/SigV2
//! signature checks, XML), with Pressoir's own disk backend in [`store`] and the S3
//! operations in [`s3`]. Any S3 client works against it: boto3, the aws CLI, object_store.
//!
//! What it must not do: map an object key to a file path (keys are hashed), make an object
//! visible before its bytes are complete (and, with `fsync`, on disk), answer an unsigned request, read
//! configuration or secrets from the environment (the binary resolves them into [`Config`]),
//! or put internals into a 500's body.

pub mod auth;
pub mod listing;
pub mod s3;
pub mod store;

use axum::Router;
use axum::response::{IntoResponse, Response};
use pressoir_core::{RateLimiter, RateSpec, Secret, Shutdown};
use serde::{Deserialize, Serialize};
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;

/// The bucket created at first start, for site backups.
pub const BACKUPS_BUCKET: &str = "backups";
/// The default access key, as MinIO's.
pub const DEFAULT_ACCESS_KEY: &str = "minioadmin";
/// The region clients sign for; any region is accepted, this one is reported.
pub const REGION: &str = "us-east-1";

/// What a key may do. The default may do everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Only reads: Get/Head/List operations.
    #[serde(default)]
    pub read_only: bool,
    /// Only these buckets (ListBuckets shows only them). `None`: every bucket.
    #[serde(default)]
    pub buckets: Option<Vec<String>>,
}

impl Policy {
    /// A key that may read and write only the given buckets (an agent's backup key).
    pub fn buckets(names: &[&str]) -> Policy {
        Policy {
            read_only: false,
            buckets: Some(names.iter().map(|s| s.to_string()).collect()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct AccessKey {
    pub access_key: String,
    pub secret_key: Secret,
    pub policy: Policy,
}

#[derive(Deserialize)]
struct KeyEntry {
    access_key: String,
    secret_key: String,
    #[serde(default)]
    read_only: bool,
    #[serde(default)]
    buckets: Option<Vec<String>>,
}

impl AccessKey {
    /// Parses a keys file: a JSON array of
    /// `{"access_key", "secret_key", "read_only"?: bool, "buckets"?: [names]}`.
    pub fn list_from_json(json: &[u8]) -> Result<Vec<AccessKey>, Error> {
        let entries: Vec<KeyEntry> =
            serde_json::from_slice(json).map_err(|e| Error::KeysFile(e.to_string()))?;
        entries
            .into_iter()
            .map(|e| {
                if e.access_key.is_empty() || e.secret_key.is_empty() {
                    return Err(Error::KeysFile(
                        "access_key and secret_key must not be empty".into(),
                    ));
                }
                Ok(AccessKey::new(
                    e.access_key,
                    Secret::new(e.secret_key),
                    Policy {
                        read_only: e.read_only,
                        buckets: e.buckets,
                    },
                ))
            })
            .collect()
    }

    pub fn new(access_key: impl Into<String>, secret_key: Secret, policy: Policy) -> AccessKey {
        AccessKey {
            access_key: access_key.into(),
            secret_key,
            policy,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Pressoir's data directory; objects live under `<data_dir>/objects`.
    pub data_dir: PathBuf,
    /// Every key the service accepts. Must not be empty.
    pub keys: Vec<AccessKey>,
    /// Buckets created at start when missing.
    pub seed_buckets: Vec<String>,
    /// Largest single PutObject body.
    pub max_object_size: u64,
    /// Largest UploadPart body.
    pub max_part_size: u64,
    /// Smallest part but the last at CompleteMultipartUpload (S3: 5 MiB).
    pub min_part_size: u64,
    /// fsync each object before it becomes visible. Only tests should turn it off.
    pub fsync: bool,
    /// Requests per access key (or per client address when unsigned).
    pub rate_limit: RateSpec,
    /// Multipart uploads initiated this long ago and still unfinished are aborted, their
    /// parts deleted (MinIO's `MINIO_API_STALE_UPLOADS_EXPIRY`, 24 h): a client killed
    /// mid-upload never comes back to abort its own.
    pub upload_expiry: std::time::Duration,
    /// How often stale uploads are looked for (MinIO's
    /// `MINIO_API_STALE_UPLOADS_CLEANUP_INTERVAL`, 6 h); also once at start. Not zero.
    pub upload_sweep_interval: std::time::Duration,
}

impl Config {
    /// A config with S3's limits, the `backups` bucket and one all-powerful key.
    pub fn new(
        data_dir: impl Into<PathBuf>,
        access_key: impl Into<String>,
        secret_key: Secret,
    ) -> Config {
        Config {
            data_dir: data_dir.into(),
            keys: vec![AccessKey::new(access_key, secret_key, Policy::default())],
            seed_buckets: vec![BACKUPS_BUCKET.to_string()],
            max_object_size: 5 << 30,
            max_part_size: 5 << 30,
            min_part_size: 5 << 20,
            fsync: true,
            rate_limit: RateSpec::off(),
            upload_expiry: std::time::Duration::from_secs(24 * 3600),
            upload_sweep_interval: std::time::Duration::from_secs(6 * 3600),
        }
    }

    pub fn objects_dir(&self) -> PathBuf {
        self.data_dir.join("objects")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no access key is configured")]
    NoKeys,
    #[error("access key '{0}' is configured twice")]
    DuplicateKey(String),
    #[error("keys file: {0}")]
    KeysFile(String),
    #[error("bucket name '{0}' is not a valid S3 bucket name")]
    BadBucketName(String),
    #[error("object store at '{path}': {source}")]
    Store {
        path: PathBuf,
        source: store::StoreError,
    },
    #[error("the stale upload sweep interval must be greater than zero")]
    ZeroSweepInterval,
    #[error("serving: {0}")]
    Serve(#[from] std::io::Error),
}

/// Opens the store, seeds its buckets and returns the S3 router (rate limit applied).
/// The router answers every path, so a gateway can mount it for a whole Host.
pub async fn app(config: Config, shutdown: Shutdown) -> Result<Router, Error> {
    if config.keys.is_empty() {
        return Err(Error::NoKeys);
    }
    let mut seen = std::collections::HashSet::new();
    for k in &config.keys {
        if !seen.insert(k.access_key.as_str()) {
            return Err(Error::DuplicateKey(k.access_key.clone()));
        }
    }
    if config.upload_sweep_interval.is_zero() {
        return Err(Error::ZeroSweepInterval);
    }
    for b in &config.seed_buckets {
        if !s3s::path::check_bucket_name(b) || !store::is_safe_bucket_name(b) {
            return Err(Error::BadBucketName(b.clone()));
        }
    }
    let root = config.objects_dir();
    let store_err = |source| Error::Store {
        path: root.clone(),
        source,
    };
    let store = Arc::new(
        store::Store::open(root.clone(), config.fsync)
            .await
            .map_err(store_err)?,
    );
    for b in &config.seed_buckets {
        match store.create_bucket(b).await {
            Ok(()) => tracing::info!(bucket = %b, "created bucket"),
            Err(store::StoreError::BucketExists) => {}
            Err(e) => return Err(store_err(e)),
        }
    }
    tokio::spawn(expire_uploads(
        store.clone(),
        config.upload_expiry,
        config.upload_sweep_interval,
        shutdown,
    ));
    let keys = Arc::new(auth::Keys::new(&config.keys));
    let objects = s3::Objects {
        store,
        keys: keys.clone(),
        limits: s3::Limits {
            max_object_size: config.max_object_size,
            max_part_size: config.max_part_size,
            min_part_size: config.min_part_size,
        },
    };
    let mut builder = s3s::service::S3ServiceBuilder::new(objects);
    builder.set_auth(auth::Auth(keys.clone()));
    builder.set_access(auth::Access(keys));
    let service = builder.build();
    let router = router(service);
    let limiter = RateLimiter::new(config.rate_limit);
    Ok(pressoir_core::ratelimit::apply(
        router,
        limiter,
        auth::rate_key,
        Arc::new(|| {
            error_response(
                s3s::s3_error!(SlowDown, "Please reduce your request rate."),
                http::StatusCode::TOO_MANY_REQUESTS,
            )
        }),
    ))
}

/// `app` + `pressoir_core::serve` (TCP nodelay, request ids, graceful drain).
pub async fn run(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: Shutdown,
) -> Result<(), Error> {
    let router = app(config, shutdown.clone()).await?;
    pressoir_core::serve(listener, router, shutdown).await?;
    Ok(())
}

/// Aborts multipart uploads older than `expiry`, at start and then every `interval`, until
/// shutdown.
async fn expire_uploads(
    store: Arc<store::Store>,
    expiry: std::time::Duration,
    interval: std::time::Duration,
    shutdown: Shutdown,
) {
    let stop = shutdown.wait();
    tokio::pin!(stop);
    loop {
        let cutoff = store::now_ms() - i64::try_from(expiry.as_millis()).unwrap_or(i64::MAX);
        match store.expire_uploads(cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(uploads = n, "aborted expired multipart uploads"),
            Err(e) => tracing::warn!(error = %e, "cannot expire multipart uploads"),
        }
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

fn error_response(e: s3s::S3Error, status: http::StatusCode) -> Response {
    match e.to_http_response() {
        Ok(r) => {
            let mut r = r.map(axum::body::Body::new);
            *r.status_mut() = status;
            r
        }
        Err(_) => status.into_response(),
    }
}

/// Wraps the s3s service (a hyper/tower service over its own body type) as an axum router.
fn router(service: s3s::service::S3Service) -> Router {
    let svc = tower::service_fn(move |req: http::Request<axum::body::Body>| {
        let service = service.clone();
        async move {
            let req = req.map(s3s::Body::http_body_unsync);
            let resp = match service.call(req).await {
                Ok(resp) => resp.map(axum::body::Body::new),
                Err(e) => {
                    tracing::error!(error = ?e, "s3 service failed to answer");
                    error_response(
                        s3::internal_error(),
                        http::StatusCode::INTERNAL_SERVER_ERROR,
                    )
                }
            };
            Ok::<_, Infallible>(resp)
        }
    });
    Router::new().fallback_service(svc)
}
