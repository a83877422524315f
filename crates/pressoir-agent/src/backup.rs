//! Offsite backups: the S3 client (through `object_store`, so Pressoir's own S3, MinIO or AWS
//! work by configuration alone), streaming uploads and verified downloads, and the manifest
//! that describes a backup. No site logic here: the drivers decide what goes into a backup.
//!
//! A backup is `<prefix>/<site>/<id>/` holding `database.sqlite.gz`, perhaps `files.tar.gz`,
//! and `manifest.json`, which is written last: a backup without its manifest does not exist.

use crate::config::StorageConfig;
use crate::error::Error;
use crate::job::BackupRef;
use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, PutPayload, WriteMultipart};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const DATABASE_FILE: &str = "database.sqlite.gz";
pub const FILES_FILE: &str = "files.tar.gz";
pub const MANIFEST_FILE: &str = "manifest.json";
/// The manifest format this agent writes and reads.
pub const FORMAT: u32 = 1;

/// Parts of multipart uploads (S3 wants at least 5 MiB for all but the last).
const PART_SIZE: usize = 8 * 1024 * 1024;
/// The most parts in flight at once, so an upload holds at most this many parts in memory.
const PARTS_IN_FLIGHT: usize = 2;
/// A manifest larger than this is not one of ours.
const MAX_MANIFEST: usize = 1024 * 1024;

/// One file of a backup, as the manifest lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileEntry {
    pub name: String,
    /// `database` or `files`.
    pub kind: String,
    pub size: u64,
    pub sha256: String,
}

/// What a backup holds; written last, so a backup is complete when its manifest exists.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub backup: String,
    pub site: String,
    pub bench: String,
    pub created_at: String,
    pub with_files: bool,
    pub apps: Vec<String>,
    /// The site's `site_config.json` without its database password (a restore makes its own).
    pub site_config: Map<String, Value>,
    pub files: Vec<FileEntry>,
}

impl Manifest {
    /// Checks a downloaded manifest names this backup and only files this agent knows.
    pub fn check(&self, backup: &BackupRef) -> Result<(), String> {
        if self.format != FORMAT {
            return Err(format!(
                "backup '{backup}' has manifest format {}, this agent reads {FORMAT}",
                self.format
            ));
        }
        if self.site != backup.site.as_str() || self.backup != backup.id {
            return Err(format!(
                "the manifest of backup '{backup}' describes another backup ({}/{})",
                self.site, self.backup
            ));
        }
        if !self.files.iter().any(|f| f.name == DATABASE_FILE) {
            return Err(format!("backup '{backup}' has no database"));
        }
        for f in &self.files {
            if f.name != DATABASE_FILE && f.name != FILES_FILE {
                return Err(format!(
                    "backup '{backup}' lists an unknown file '{}'",
                    f.name
                ));
            }
        }
        Ok(())
    }

    pub fn file(&self, name: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.name == name)
    }
}

/// A writer that hashes (SHA-256) and counts what goes through it.
pub struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
    len: u64,
}

impl<W: Write> HashWriter<W> {
    pub fn new(inner: W) -> Self {
        HashWriter {
            inner,
            hasher: Sha256::new(),
            len: 0,
        }
    }

    /// The inner writer, the byte count and the hex SHA-256.
    pub fn finish(self) -> (W, u64, String) {
        (self.inner, self.len, hex::encode(self.hasher.finalize()))
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Size and hex SHA-256 of a file, read in chunks.
pub fn hash_file(path: &Path) -> std::io::Result<(u64, String)> {
    let mut f = std::fs::File::open(path)?;
    let mut w = HashWriter::new(std::io::sink());
    std::io::copy(&mut f, &mut w)?;
    let (_, len, sha) = w.finish();
    Ok((len, sha))
}

/// The offsite store backups go to.
pub struct Offsite {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    bucket: String,
}

impl std::fmt::Debug for Offsite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Offsite")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl Offsite {
    /// A path-style S3 client for `config` (plain HTTP is allowed for `http://` endpoints).
    pub fn new(config: &StorageConfig) -> Result<Offsite, Error> {
        if config.bucket.is_empty() {
            return Err(Error::Config("the backups bucket must be named".into()));
        }
        let store = AmazonS3Builder::new()
            .with_endpoint(&config.endpoint)
            .with_allow_http(config.endpoint.starts_with("http://"))
            .with_virtual_hosted_style_request(false)
            .with_region(&config.region)
            .with_bucket_name(&config.bucket)
            .with_access_key_id(&config.access_key)
            .with_secret_access_key(config.secret_key.expose())
            .build()
            .map_err(|e| Error::Config(format!("offsite storage: {e}")))?;
        Ok(Offsite {
            store: Arc::new(store),
            prefix: config.prefix.trim_matches('/').to_string(),
            bucket: config.bucket.clone(),
        })
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// `<prefix>/<site>/<id>/<file>`.
    pub fn key(&self, backup: &BackupRef, file: &str) -> ObjPath {
        let rel = format!("{}/{}/{file}", backup.site, backup.id);
        if self.prefix.is_empty() {
            ObjPath::from(rel)
        } else {
            ObjPath::from(format!("{}/{rel}", self.prefix))
        }
    }

    /// Streams a file up as a multipart upload; at most a few parts are ever in memory.
    pub async fn upload_file(&self, key: &ObjPath, path: &Path) -> Result<u64, String> {
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let upload = self
            .store
            .put_multipart(key)
            .await
            .map_err(|e| format!("cannot start the upload of {key}: {e}"))?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut buf = vec![0u8; 1024 * 1024];
        let mut total = 0u64;
        loop {
            let n = match file.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    let _ = w.abort().await;
                    return Err(format!("cannot read {}: {e}", path.display()));
                }
            };
            if n == 0 {
                break;
            }
            if let Err(e) = w.wait_for_capacity(PARTS_IN_FLIGHT).await {
                // The upload is already failed; aborting frees its parts.
                return Err(format!("cannot upload {key}: {e}"));
            }
            w.write(&buf[..n]);
            total += n as u64;
        }
        w.finish()
            .await
            .map_err(|e| format!("cannot complete the upload of {key}: {e}"))?;
        Ok(total)
    }

    pub async fn put_small(&self, key: &ObjPath, bytes: Vec<u8>) -> Result<(), String> {
        self.store
            .put(key, PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(|e| format!("cannot upload {key}: {e}"))
    }

    /// A small object (the manifest), or `None` when it does not exist.
    pub async fn get_small(&self, key: &ObjPath) -> Result<Option<Vec<u8>>, String> {
        let got = match self.store.get(key).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(format!("cannot download {key}: {e}")),
        };
        if got.meta.size as usize > MAX_MANIFEST {
            return Err(format!("{key} is too large to be a manifest"));
        }
        got.bytes()
            .await
            .map(|b| Some(b.to_vec()))
            .map_err(|e| format!("cannot download {key}: {e}"))
    }

    /// Deletes a backup: its manifest first (from then on the backup does not exist), then
    /// every other object under it. Deleting a deleted backup deletes nothing and succeeds.
    /// Returns the keys deleted, manifest first.
    pub async fn delete_backup(&self, backup: &BackupRef) -> Result<Vec<String>, String> {
        let mut deleted = Vec::new();
        let manifest = self.key(backup, MANIFEST_FILE);
        // Asked first, so that a deleted backup is told apart from a present one.
        match self.store.head(&manifest).await {
            Ok(_) => {
                self.delete(&manifest).await?;
                deleted.push(manifest.to_string());
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(format!("cannot read {manifest}: {e}")),
        }
        let dir = self.key(backup, "");
        let mut listing = self.store.list(Some(&dir));
        let mut keys = Vec::new();
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(|e| format!("cannot list {dir}: {e}"))?;
            keys.push(meta.location);
        }
        // Listed, so there: deleted without asking first.
        for key in keys {
            self.delete(&key).await?;
            deleted.push(key.to_string());
        }
        Ok(deleted)
    }

    /// Deletes one object (S3 answers a missing one as deleted too).
    async fn delete(&self, key: &ObjPath) -> Result<(), String> {
        match self.store.delete(key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(format!("cannot delete {key}: {e}")),
        }
    }

    /// Streams an object into `dest`, returning its size and hex SHA-256.
    pub async fn download(&self, key: &ObjPath, dest: &Path) -> Result<(u64, String), String> {
        let got = match self.store.get(key).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(format!("{key} is missing from the backup"));
            }
            Err(e) => return Err(format!("cannot download {key}: {e}")),
        };
        let mut out = tokio::fs::File::create(dest)
            .await
            .map_err(|e| format!("cannot create {}: {e}", dest.display()))?;
        let mut hasher = Sha256::new();
        let mut len = 0u64;
        let mut stream = got.into_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| format!("cannot download {key}: {e}"))?;
            hasher.update(&chunk);
            len += chunk.len() as u64;
            out.write_all(&chunk)
                .await
                .map_err(|e| format!("cannot write {}: {e}", dest.display()))?;
        }
        out.sync_all()
            .await
            .map_err(|e| format!("cannot sync {}: {e}", dest.display()))?;
        Ok((len, hex::encode(hasher.finalize())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::SiteName;

    #[test]
    fn keys_and_manifest_checks() {
        let c = StorageConfig::new(
            "http://127.0.0.1:1",
            "backups",
            "k",
            pressoir_core::Secret::new("top-secret-value"),
        );
        let o = Offsite::new(&c).unwrap();
        let b =
            BackupRef::parse("a.example.com/20260101-7", &SiteName::parse("x").unwrap()).unwrap();
        assert_eq!(
            o.key(&b, MANIFEST_FILE).as_ref(),
            "sites/a.example.com/20260101-7/manifest.json"
        );
        assert!(!format!("{o:?}").contains("top-secret-value"));
        let mut m = Manifest {
            format: FORMAT,
            backup: b.id.clone(),
            site: "a.example.com".into(),
            bench: "bench-0001".into(),
            created_at: String::new(),
            with_files: false,
            apps: vec![],
            site_config: Map::new(),
            files: vec![FileEntry {
                name: DATABASE_FILE.into(),
                kind: "database".into(),
                size: 1,
                sha256: String::new(),
            }],
        };
        assert!(m.check(&b).is_ok());
        m.files[0].name = "../x".into();
        assert!(m.check(&b).is_err());
        assert!(BackupRef::parse("../x", &SiteName::parse("x").unwrap()).is_err());
        assert!(BackupRef::parse(".x", &SiteName::parse("x").unwrap()).is_err());
        assert!(BackupRef::parse("a/b/c", &SiteName::parse("x").unwrap()).is_err());
    }

    #[test]
    fn hash_writer_counts_and_hashes() {
        let mut w = HashWriter::new(Vec::new());
        w.write_all(b"abc").unwrap();
        let (inner, len, sha) = w.finish();
        assert_eq!((inner.as_slice(), len), (&b"abc"[..], 3));
        assert_eq!(
            sha,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
