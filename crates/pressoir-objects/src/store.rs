//! The local-disk backend: buckets, objects and multipart uploads.
//!
//! Layout under the root (`<data-dir>/objects`):
//!
//! ```text
//! tmp/<uuid>                              files being written (removed at start)
//! buckets/<bucket>/bucket.json            creation time
//! buckets/<bucket>/objects/<h2>/<h64>     one object: data, then a JSON trailer
//! buckets/<bucket>/uploads/<id>/upload.json  a multipart upload's key and attributes
//! buckets/<bucket>/uploads/<id>/<nnnnn>   one part: data, then a JSON trailer
//! buckets/<bucket>/segments/<id>/<nnnnn>  the parts of a completed multipart object
//! ```
//!
//! Completing a multipart upload copies nothing: the upload's directory becomes the
//! object's segments and the object file holds only the trailer naming them. Segments are
//! removed when their object is replaced or deleted, but not while a reader streams them.
//!
//! `<h64>` is the hex SHA-256 of the key: a key never becomes a path, so no key, whatever its
//! bytes, can name a file outside its bucket. Each object file carries its own metadata in a
//! trailer (`data || json || u32-le json length || "PSO1"`), so one `rename` makes data and
//! metadata visible together. Files are written under `tmp/`, fsynced, then renamed into
//! place: a crash mid-write leaves only a temp file, which the next start removes. A write
//! is acknowledged only once the directory holding its new name is fsynced too; concurrent
//! writers into one directory share its fsyncs ([`DirSync`], a group commit), so parallel
//! parts of an upload cost one file fsync each plus about two of their directory.
//! The key index used for listing lives in memory and is rebuilt from the trailers at start.

use bytes::Bytes;
use futures::{Stream, StreamExt};
use s3s::checksum::ChecksumHasher;
use s3s::crypto::{Checksum as _, Crc32, Crc32c, Crc64Nvme, Md5, Sha1, Sha256};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use tokio::io::AsyncWriteExt;

const MAGIC: &[u8; 4] = b"PSO1";
const TRAILER_TAIL: u64 = 8;
/// Objects up to this size are read in one go; larger ones are streamed.
const SMALL_READ: u64 = 1 << 20;
const IO_BUF: usize = 1 << 20;
/// With fsync on, a large body's writeback is started after each this many bytes.
const WRITEBACK: u64 = 8 << 20;

pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no such bucket")]
    NoSuchBucket,
    #[error("bucket already exists")]
    BucketExists,
    #[error("bucket is not empty")]
    BucketNotEmpty,
    #[error("no such key")]
    NoSuchKey,
    #[error("no such upload")]
    NoSuchUpload,
    #[error("invalid part: {0}")]
    InvalidPart(String),
    #[error("parts are not in ascending order")]
    InvalidPartOrder,
    #[error("part {0} is smaller than the minimum part size")]
    EntityTooSmall(i32),
    #[error("body is larger than {0} bytes")]
    TooLarge(u64),
    #[error("request body: {0}")]
    Body(BodyError),
    #[error("corrupt object file '{0}'")]
    Corrupt(PathBuf),
    #[error("the write's precondition does not hold")]
    PreconditionFailed,
    #[error("another completion of this upload is under way")]
    Busy,
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Checksums as S3 carries them: base64 of the big-endian digest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checksums {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crc32: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crc32c: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crc64nvme: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha1: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// Which checksums to compute while a body streams in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Algorithms {
    pub crc32: bool,
    pub crc32c: bool,
    pub crc64nvme: bool,
    pub sha1: bool,
    pub sha256: bool,
}

impl Algorithms {
    fn hasher(self) -> ChecksumHasher {
        ChecksumHasher {
            crc32: self.crc32.then(Crc32::new),
            crc32c: self.crc32c.then(Crc32c::new),
            crc64nvme: self.crc64nvme.then(Crc64Nvme::new),
            sha1: self.sha1.then(Sha1::new),
            sha256: self.sha256.then(Sha256::new),
        }
    }
}

/// What a client sets on an object besides its bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attrs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_disposition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_encoding: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_language: Option<String>,
    /// The `Expires` header, as unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// An object's metadata, stored in its file's trailer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
    /// Without quotes: hex MD5, or `<hex>-<parts>` for a multipart object.
    pub etag: String,
    pub last_modified_ms: i64,
    #[serde(default)]
    pub attrs: Attrs,
    #[serde(default)]
    pub checksums: Checksums,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parts: Option<u32>,
    /// Set for a multipart object: its data lives in these segment files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segments: Option<Segments>,
}

impl ObjectMeta {
    /// Whether a file whose data part is `data_len` bytes holds this object.
    fn fits(&self, data_len: u64) -> bool {
        match &self.segments {
            Some(s) => data_len == 0 && s.parts.iter().map(|p| p.1).sum::<u64>() == self.size,
            None => data_len == self.size,
        }
    }
}

/// The parts a multipart object is made of, kept in `segments/<id>/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segments {
    pub id: String,
    /// `(part number, size)` in object order.
    pub parts: Vec<(i32, u64)>,
}

/// What listing needs of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub size: u64,
    pub etag: String,
    pub last_modified_ms: i64,
    /// The segments id of a multipart object.
    pub seg: Option<String>,
}

impl From<&ObjectMeta> for Summary {
    fn from(m: &ObjectMeta) -> Self {
        Summary {
            size: m.size,
            etag: m.etag.clone(),
            last_modified_ms: m.last_modified_ms,
            seg: m.segments.as_ref().map(|s| s.id.clone()),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadMeta {
    pub key: String,
    pub initiated_ms: i64,
    #[serde(default)]
    pub attrs: Attrs,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum_algorithm: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartMeta {
    pub part_number: i32,
    pub size: u64,
    /// Hex MD5 of the part, without quotes.
    pub etag: String,
    pub last_modified_ms: i64,
    #[serde(default)]
    pub checksums: Checksums,
}

/// A write's precondition, checked atomically with the write (`If-None-Match` / `If-Match`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    None,
    /// `If-None-Match: *`: only if the key does not exist.
    Absent,
    /// `If-Match: *`: only if the key exists.
    Exists,
    /// `If-Match: "<etag>"`: only if the current object has this ETag.
    ETag(String),
    /// `If-None-Match: "<etag>"`: unless the current object has this ETag.
    NotETag(String),
}

/// A body written to a temp file, not yet visible. Dropping it removes the file.
pub struct Staged {
    path: PathBuf,
    file: Option<File>,
    /// A small body is kept here and written in one go at commit.
    mem: Vec<u8>,
    pub size: u64,
    pub md5: [u8; 16],
    pub checksums: Checksums,
}

impl Staged {
    /// The temp file, written from memory first if the body was small.
    fn file(&mut self) -> io::Result<&mut File> {
        if self.file.is_none() {
            let mut f = File::create_new(&self.path)?;
            f.write_all(&self.mem)?;
            self.mem = Vec::new();
            self.file = Some(f);
        }
        Ok(self.file.as_mut().expect("just ensured"))
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        self.file.take();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// An object opened for reading; the file stays valid even if the key is overwritten.
pub struct OpenObject {
    pub meta: ObjectMeta,
    file: File,
    /// The whole data when the object is small.
    small: Option<Bytes>,
    /// A multipart object's segments, held open against removal.
    seg: Option<SegRef>,
}

impl OpenObject {
    /// The bytes `[start, start+len)` as a stream.
    pub fn stream(self, start: u64, len: u64) -> BoxByteStream {
        if let (Some(guard), Some(segs)) = (self.seg, &self.meta.segments) {
            let dir = guard.dir();
            return Box::pin(SegStream {
                dir,
                pieces: pieces(&segs.parts, start, len),
                cur: None,
                _guard: guard,
            });
        }
        if let Some(b) = self.small {
            let s = start as usize;
            let chunk = b.slice(s..s + len as usize);
            return Box::pin(futures::stream::once(async move { Ok(chunk) }));
        }
        let mut file = self.file;
        if let Err(e) = file.seek(SeekFrom::Start(start)) {
            return Box::pin(futures::stream::once(async move { Err(e) }));
        }
        let limited = tokio::io::AsyncReadExt::take(tokio::fs::File::from_std(file), len);
        Box::pin(tokio_util::io::ReaderStream::with_capacity(limited, IO_BUF))
    }
}

/// Which `(part, offset, len)` pieces of the segments cover `[start, start+len)`.
fn pieces(
    parts: &[(i32, u64)],
    start: u64,
    len: u64,
) -> std::collections::VecDeque<(i32, u64, u64)> {
    let mut out = std::collections::VecDeque::new();
    let (mut at, end) = (0u64, start + len);
    for &(n, size) in parts {
        let (lo, hi) = (at.max(start), (at + size).min(end));
        if lo < hi {
            out.push_back((n, lo - at, hi - lo));
        }
        at += size;
        if at >= end {
            break;
        }
    }
    out
}

/// Streams a multipart object's segments one after the other.
struct SegStream {
    dir: PathBuf,
    pieces: std::collections::VecDeque<(i32, u64, u64)>,
    cur: Option<tokio_util::io::ReaderStream<tokio::io::Take<tokio::fs::File>>>,
    _guard: SegRef,
}

impl Stream for SegStream {
    type Item = io::Result<Bytes>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        let this = self.get_mut();
        loop {
            if let Some(cur) = this.cur.as_mut() {
                match std::pin::Pin::new(cur).poll_next(cx) {
                    Poll::Ready(None) => this.cur = None,
                    other => return other,
                }
            }
            let Some((n, off, len)) = this.pieces.pop_front() else {
                return Poll::Ready(None);
            };
            let opened = File::open(this.dir.join(format!("{n:05}"))).and_then(|mut f| {
                f.seek(SeekFrom::Start(off))?;
                Ok(f)
            });
            match opened {
                Ok(f) => {
                    let limited = tokio::io::AsyncReadExt::take(tokio::fs::File::from_std(f), len);
                    this.cur = Some(tokio_util::io::ReaderStream::with_capacity(limited, IO_BUF));
                }
                Err(e) => return Poll::Ready(Some(Err(e))),
            }
        }
    }
}

/// Readers of segments, and segments to remove once their last reader is done.
#[derive(Default)]
struct SegState {
    readers: HashMap<String, usize>,
    doomed: std::collections::HashSet<String>,
}

/// One reader's hold on a bucket's segments `id`.
struct SegRef {
    bucket: Arc<Bucket>,
    id: String,
}

impl SegRef {
    fn dir(&self) -> PathBuf {
        self.bucket.dir.join("segments").join(&self.id)
    }
}

impl Drop for SegRef {
    fn drop(&mut self) {
        let mut st = self.bucket.segs.lock().expect("segments lock");
        let left = st.readers.get_mut(&self.id).map(|n| {
            *n -= 1;
            *n
        });
        if left == Some(0) {
            st.readers.remove(&self.id);
            if st.doomed.remove(&self.id) {
                remove_segments_locked(&self.bucket, &self.id);
            }
        }
    }
}

/// Removes segments `id` (the caller holds the segments lock): moved aside at once, the
/// files deleted off the async threads when possible.
fn remove_segments_locked(b: &Bucket, id: &str) {
    let dir = b.dir.join("segments").join(id);
    // Into the store's tmp/ (same filesystem, emptied at start), so the name is free at once.
    let tmp = b
        .dir
        .parent()
        .and_then(Path::parent)
        .map_or_else(|| b.dir.join("segments"), |root| root.join("tmp"));
    let trash = tmp.join(format!("gone-{}", uuid::Uuid::new_v4().simple()));
    if std::fs::rename(&dir, &trash).is_err() {
        return;
    }
    let rm = move || {
        let _ = std::fs::remove_dir_all(&trash);
    };
    match tokio::runtime::Handle::try_current() {
        Ok(h) => drop(h.spawn_blocking(rm)),
        Err(_) => rm(),
    }
}

/// Segments `id` are no longer any object's: remove them, or once their readers are done.
fn release_segments(b: &Bucket, id: &str) {
    let mut st = b.segs.lock().expect("segments lock");
    if st.readers.get(id).is_some_and(|n| *n > 0) {
        st.doomed.insert(id.to_string());
    } else {
        remove_segments_locked(b, id);
    }
}

/// Opens an object's file and, for a multipart object, takes a hold on its segments, so a
/// concurrent overwrite cannot remove them under the reader.
fn open_held(
    b: &Arc<Bucket>,
    path: &Path,
    key: &str,
) -> Result<(File, ObjectMeta, u64, Option<SegRef>)> {
    for _ in 0..3 {
        let mut file = File::open(path).map_err(|e| {
            if not_found(&e) {
                StoreError::NoSuchKey
            } else {
                e.into()
            }
        })?;
        let (meta, data_len) = read_trailer::<ObjectMeta>(&mut file, path)?;
        if meta.key != key || !meta.fits(data_len) {
            return Err(StoreError::NoSuchKey);
        }
        let Some(segs) = &meta.segments else {
            return Ok((file, meta, data_len, None));
        };
        let mut st = b.segs.lock().expect("segments lock");
        // Still there means not yet removed; from now on removal waits for this reader.
        if b.dir.join("segments").join(&segs.id).is_dir() && !st.doomed.contains(&segs.id) {
            *st.readers.entry(segs.id.clone()).or_insert(0) += 1;
            let guard = SegRef {
                bucket: b.clone(),
                id: segs.id.clone(),
            };
            drop(st);
            return Ok((file, meta, data_len, Some(guard)));
        }
        // Replaced meanwhile: read the key again.
    }
    Err(StoreError::NoSuchKey)
}

/// Reads `[start, start+len)` of an object into `out`, hashing it.
fn copy_data(
    file: &mut File,
    meta: &ObjectMeta,
    seg_dir: Option<&Path>,
    (start, len): (u64, u64),
    out: &mut File,
    md5: &mut Md5,
    hasher: &mut ChecksumHasher,
) -> Result<()> {
    let mut buf = vec![0u8; IO_BUF];
    let mut pump = |src: &mut File, mut left: u64, path: &Path| -> Result<()> {
        while left > 0 {
            let n = src.read(&mut buf[..left.min(IO_BUF as u64) as usize])?;
            if n == 0 {
                return Err(StoreError::Corrupt(path.to_path_buf()));
            }
            md5.update(&buf[..n]);
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])?;
            left -= n as u64;
        }
        Ok(())
    };
    match (&meta.segments, seg_dir) {
        (Some(segs), Some(dir)) => {
            for (n, off, l) in pieces(&segs.parts, start, len) {
                let path = dir.join(format!("{n:05}"));
                let mut f = File::open(&path)?;
                f.seek(SeekFrom::Start(off))?;
                pump(&mut f, l, &path)?;
            }
            Ok(())
        }
        _ => {
            file.seek(SeekFrom::Start(start))?;
            pump(file, len, Path::new("object"))
        }
    }
}

pub type BoxByteStream =
    std::pin::Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send + Sync + 'static>>;

struct Bucket {
    dir: PathBuf,
    /// Set (under the index lock) when the bucket is deleted, so late writers don't recreate it.
    deleted: std::sync::atomic::AtomicBool,
    created_ms: i64,
    index: Mutex<BTreeMap<String, Summary>>,
    /// Completed multipart uploads, so a repeated Complete answers as the first did.
    completed: Mutex<HashMap<String, (String, String)>>,
    /// Uploads whose completion is under way.
    completing: Mutex<std::collections::HashSet<String>>,
    segs: Mutex<SegState>,
}

pub struct Store {
    root: PathBuf,
    tmp: PathBuf,
    fsync: bool,
    dirs: Arc<DirSync>,
    buckets: RwLock<BTreeMap<String, Arc<Bucket>>>,
}

#[derive(Serialize, Deserialize)]
struct BucketFile {
    created_ms: i64,
}

pub fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// The file name an object key is stored under.
pub fn key_file_name(key: &str) -> String {
    hex::encode(sha2::Sha256::digest(key.as_bytes()))
}

/// Bucket names that are safe as one directory name (the S3 rules are stricter still).
pub fn is_safe_bucket_name(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && !name.contains("..")
}

/// Upload ids are 32 lowercase hex digits; anything else names no upload.
pub fn is_valid_upload_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(StoreError::Io(io::Error::other(e))),
    }
}

fn not_found(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
}

fn write_trailer<T: Serialize>(file: &mut File, meta: &T) -> io::Result<()> {
    let json = serde_json::to_vec(meta).map_err(io::Error::other)?;
    let len = u32::try_from(json.len()).map_err(io::Error::other)?;
    file.write_all(&json)?;
    file.write_all(&len.to_le_bytes())?;
    file.write_all(MAGIC)?;
    Ok(())
}

/// Reads a file's trailer; returns it and the data length.
fn read_trailer<T: for<'de> Deserialize<'de>>(file: &mut File, path: &Path) -> Result<(T, u64)> {
    let corrupt = || StoreError::Corrupt(path.to_path_buf());
    let total = file.metadata()?.len();
    if total < TRAILER_TAIL {
        return Err(corrupt());
    }
    let mut tail = [0u8; 8];
    file.seek(SeekFrom::Start(total - TRAILER_TAIL))?;
    file.read_exact(&mut tail)?;
    if &tail[4..] != MAGIC {
        return Err(corrupt());
    }
    let json_len = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
    let data_len = total
        .checked_sub(TRAILER_TAIL + json_len)
        .ok_or_else(corrupt)?;
    let mut json = vec![0u8; json_len as usize];
    file.seek(SeekFrom::Start(data_len))?;
    file.read_exact(&mut json)?;
    let meta = serde_json::from_slice(&json).map_err(|_| corrupt())?;
    Ok((meta, data_len))
}

/// Asks the kernel to start writing a file's dirty pages out now, without waiting, so a
/// large body's final fsync finds most of it on disk already: the disk writes while the
/// rest of the body arrives, instead of after it.
fn start_writeback(file: &tokio::fs::File) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: the descriptor is open for as long as `file` is borrowed; the call only
        // schedules writeback and touches no memory of ours.
        unsafe {
            libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = file;
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Directory fsyncs shared by concurrent writers (group commit). A writer that renamed a
/// file into a directory needs one fsync of it that started after the rename: if one is
/// already running it waits for the next, which covers every writer that queued meanwhile.
/// So N writers into one directory cost about two fsyncs, not N; writers into different
/// directories fsync them concurrently (the filesystem's journal joins those commits).
#[derive(Default)]
pub struct DirSync {
    dirs: Mutex<HashMap<PathBuf, DirState>>,
    done: std::sync::Condvar,
}

#[derive(Default)]
struct DirState {
    /// fsyncs of this directory started so far; the running one is number `started`.
    started: u64,
    running: bool,
    /// The latest fsync that succeeded, and the latest that finished either way.
    ok: u64,
    finished: u64,
    waiters: usize,
}

impl DirSync {
    /// Returns once each directory in `dirs` has been fsynced after this call began.
    pub fn sync(&self, dirs: Vec<PathBuf>) -> io::Result<()> {
        dirs.into_iter().try_for_each(|d| self.sync_one(d))
    }

    fn sync_one(&self, dir: PathBuf) -> io::Result<()> {
        let mut map = self.dirs.lock().expect("dir sync lock");
        let st = map.entry(dir.clone()).or_default();
        st.waiters += 1;
        // The first fsync to start from now on covers this writer's rename.
        let need = st.started + 1;
        let result = loop {
            let st = map.get_mut(&dir).expect("held by its waiters");
            if st.ok >= need {
                break Ok(());
            }
            if st.finished >= need {
                break Err(io::Error::other("fsync of a directory failed"));
            }
            if st.running {
                map = self.done.wait(map).expect("dir sync lock");
                continue;
            }
            st.running = true;
            st.started += 1;
            let this = st.started;
            drop(map);
            let r = sync_dir(&dir);
            map = self.dirs.lock().expect("dir sync lock");
            let st = map.get_mut(&dir).expect("held by its waiters");
            st.running = false;
            st.finished = this;
            if r.is_ok() {
                st.ok = this;
            }
            self.done.notify_all();
        };
        let st = map.get_mut(&dir).expect("held by its waiters");
        st.waiters -= 1;
        if st.waiters == 0 && !st.running {
            map.remove(&dir);
        }
        result
    }
}

impl Store {
    /// Opens (creating if needed) the store at `root`, removes leftover temp files and
    /// rebuilds the key index.
    pub async fn open(root: PathBuf, fsync: bool) -> Result<Store> {
        blocking(move || Store::open_blocking(root, fsync)).await
    }

    fn open_blocking(root: PathBuf, fsync: bool) -> Result<Store> {
        let tmp = root.join("tmp");
        let buckets_dir = root.join("buckets");
        std::fs::create_dir_all(&tmp)?;
        std::fs::create_dir_all(&buckets_dir)?;
        for entry in std::fs::read_dir(&tmp)? {
            let entry = entry?;
            let p = entry.path();
            if entry.file_type()?.is_dir() {
                std::fs::remove_dir_all(&p)?;
            } else {
                std::fs::remove_file(&p)?;
            }
        }
        let mut buckets = BTreeMap::new();
        for entry in std::fs::read_dir(&buckets_dir)? {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if !is_safe_bucket_name(&name) || !entry.file_type()?.is_dir() {
                continue;
            }
            let dir = entry.path();
            let created_ms = std::fs::read(dir.join("bucket.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<BucketFile>(&b).ok())
                .map_or(0, |b| b.created_ms);
            let index = load_index(&dir.join("objects"))?;
            remove_unreferenced_segments(&dir.join("segments"), &index)?;
            buckets.insert(
                name,
                Arc::new(Bucket {
                    dir,
                    deleted: Default::default(),
                    created_ms,
                    index: Mutex::new(index),
                    completed: Mutex::new(HashMap::new()),
                    completing: Mutex::new(Default::default()),
                    segs: Mutex::new(SegState::default()),
                }),
            );
        }
        Ok(Store {
            root,
            tmp,
            fsync,
            dirs: Arc::default(),
            buckets: RwLock::new(buckets),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The shared directory fsyncs, when the store fsyncs at all.
    fn dir_sync(&self) -> Option<Arc<DirSync>> {
        self.fsync.then(|| self.dirs.clone())
    }

    fn bucket(&self, name: &str) -> Result<Arc<Bucket>> {
        self.buckets
            .read()
            .expect("bucket table lock")
            .get(name)
            .cloned()
            .ok_or(StoreError::NoSuchBucket)
    }

    pub fn bucket_exists(&self, name: &str) -> bool {
        self.bucket(name).is_ok()
    }

    /// Bucket names with their creation time, sorted by name.
    pub fn list_buckets(&self) -> Vec<(String, i64)> {
        self.buckets
            .read()
            .expect("bucket table lock")
            .iter()
            .map(|(n, b)| (n.clone(), b.created_ms))
            .collect()
    }

    pub async fn create_bucket(&self, name: &str) -> Result<()> {
        if !is_safe_bucket_name(name) {
            return Err(StoreError::NoSuchBucket);
        }
        if self.bucket_exists(name) {
            return Err(StoreError::BucketExists);
        }
        let created_ms = now_ms();
        let staging = self.tmp.join(uuid::Uuid::new_v4().simple().to_string());
        let dir = self.root.join("buckets").join(name);
        let (staging2, dir2, fsync) = (staging.clone(), dir.clone(), self.fsync);
        blocking(move || {
            std::fs::create_dir_all(staging2.join("objects"))?;
            std::fs::create_dir_all(staging2.join("uploads"))?;
            let mut f = File::create(staging2.join("bucket.json"))?;
            f.write_all(
                &serde_json::to_vec(&BucketFile { created_ms }).map_err(io::Error::other)?,
            )?;
            if fsync {
                f.sync_all()?;
            }
            Ok(())
        })
        .await?;
        let mut table = self.buckets.write().expect("bucket table lock");
        if table.contains_key(name) {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(StoreError::BucketExists);
        }
        if let Err(e) = std::fs::rename(&staging, &dir) {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e.into());
        }
        if self.fsync {
            let _ = sync_dir(&self.root.join("buckets"));
        }
        table.insert(
            name.to_string(),
            Arc::new(Bucket {
                dir: dir2,
                deleted: Default::default(),
                created_ms,
                index: Mutex::new(BTreeMap::new()),
                completed: Mutex::new(HashMap::new()),
                completing: Mutex::new(Default::default()),
                segs: Mutex::new(SegState::default()),
            }),
        );
        Ok(())
    }

    pub async fn delete_bucket(&self, name: &str) -> Result<()> {
        let trash = self.tmp.join(uuid::Uuid::new_v4().simple().to_string());
        {
            let mut table = self.buckets.write().expect("bucket table lock");
            let bucket = table.get(name).cloned().ok_or(StoreError::NoSuchBucket)?;
            let index = bucket.index.lock().expect("index lock");
            if !index.is_empty() {
                return Err(StoreError::BucketNotEmpty);
            }
            // Moving the directory away makes the bucket vanish in one step.
            std::fs::rename(&bucket.dir, &trash)?;
            bucket
                .deleted
                .store(true, std::sync::atomic::Ordering::SeqCst);
            drop(index);
            table.remove(name);
        }
        blocking(move || Ok(std::fs::remove_dir_all(&trash)?)).await
    }

    /// Streams `body` into a temp file, counting, hashing and refusing more than `max` bytes.
    pub async fn stage<S>(&self, mut body: S, max: u64, algos: Algorithms) -> Result<Staged>
    where
        S: Stream<Item = std::result::Result<Bytes, BodyError>> + Unpin,
    {
        let path = self.tmp.join(uuid::Uuid::new_v4().simple().to_string());
        let mut staged = Staged {
            path,
            file: None,
            mem: Vec::new(),
            size: 0,
            md5: [0; 16],
            checksums: Checksums::default(),
        };
        let mut file: Option<tokio::io::BufWriter<tokio::fs::File>> = None;
        let mut md5 = Md5::new();
        let mut hasher = algos.hasher();
        let mut unflushed = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(StoreError::Body)?;
            staged.size += chunk.len() as u64;
            if staged.size > max {
                return Err(StoreError::TooLarge(max));
            }
            md5.update(&chunk);
            hasher.update(&chunk);
            if file.is_none() && staged.size > SMALL_READ {
                // Past the small-body size: spill to the temp file and stream the rest.
                let std_file = File::create_new(&staged.path)?;
                let mut w = tokio::io::BufWriter::with_capacity(
                    IO_BUF,
                    tokio::fs::File::from_std(std_file),
                );
                w.write_all(&staged.mem).await?;
                staged.mem = Vec::new();
                file = Some(w);
            }
            match file.as_mut() {
                Some(w) => {
                    w.write_all(&chunk).await?;
                    unflushed += chunk.len() as u64;
                    if self.fsync && unflushed >= WRITEBACK {
                        start_writeback(w.get_ref());
                        unflushed = 0;
                    }
                }
                None => staged.mem.extend_from_slice(&chunk),
            }
        }
        if let Some(mut w) = file {
            w.flush().await?;
            staged.file = Some(w.into_inner().into_std().await);
        }
        staged.md5 = md5.finalize();
        let c = hasher.finalize();
        staged.checksums = Checksums {
            crc32: c.checksum_crc32,
            crc32c: c.checksum_crc32c,
            crc64nvme: c.checksum_crc64nvme,
            sha1: c.checksum_sha1,
            sha256: c.checksum_sha256,
        };
        Ok(staged)
    }

    /// Finishes a staged body as object `key` and makes it visible, replacing any earlier one.
    pub async fn commit_object(
        &self,
        bucket: &str,
        staged: Staged,
        meta: ObjectMeta,
        cond: Condition,
    ) -> Result<ObjectMeta> {
        let b = self.bucket(bucket)?;
        let sync = self.dir_sync();
        let name = key_file_name(&meta.key);
        let target = b.dir.join("objects").join(&name[..2]).join(&name);
        let meta2 = meta.clone();
        blocking(move || {
            let mut staged = staged;
            let file = staged.file()?;
            write_trailer(file, &meta2)?;
            if sync.is_some() {
                file.sync_all()?;
            }
            let dirs = publish(&b, staged, &target, &meta2, &cond)?;
            match sync {
                Some(s) => Ok(s.sync(dirs)?),
                None => Ok(()),
            }
        })
        .await?;
        Ok(meta)
    }

    fn object_path(b: &Bucket, key: &str) -> PathBuf {
        let name = key_file_name(key);
        b.dir.join("objects").join(&name[..2]).join(name)
    }

    pub async fn head(&self, bucket: &str, key: &str) -> Result<ObjectMeta> {
        let b = self.bucket(bucket)?;
        let path = Self::object_path(&b, key);
        let key = key.to_string();
        blocking(move || {
            let mut f = File::open(&path).map_err(|e| {
                if not_found(&e) {
                    StoreError::NoSuchKey
                } else {
                    e.into()
                }
            })?;
            let (meta, _) = read_trailer::<ObjectMeta>(&mut f, &path)?;
            if meta.key != key {
                return Err(StoreError::NoSuchKey);
            }
            Ok(meta)
        })
        .await
    }

    pub async fn open_object(&self, bucket: &str, key: &str) -> Result<OpenObject> {
        let b = self.bucket(bucket)?;
        let path = Self::object_path(&b, key);
        let key = key.to_string();
        blocking(move || {
            let (mut file, meta, data_len, seg) = open_held(&b, &path, &key)?;
            let small = if seg.is_none() && data_len <= SMALL_READ {
                let mut buf = vec![0u8; data_len as usize];
                file.seek(SeekFrom::Start(0))?;
                file.read_exact(&mut buf)?;
                Some(Bytes::from(buf))
            } else {
                None
            };
            Ok(OpenObject {
                meta,
                file,
                small,
                seg,
            })
        })
        .await
    }

    /// Removes an object; removing one that does not exist is not an error (as in S3).
    pub async fn delete_object(&self, bucket: &str, key: &str) -> Result<bool> {
        let b = self.bucket(bucket)?;
        let path = Self::object_path(&b, key);
        let mut index = b.index.lock().expect("index lock");
        let Some(old) = index.remove(key) else {
            return Ok(false);
        };
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
        drop(index);
        if let Some(id) = old.seg {
            release_segments(&b, &id);
        }
        Ok(true)
    }

    /// Runs `f` over the bucket's sorted key index.
    pub fn with_index<T>(
        &self,
        bucket: &str,
        f: impl FnOnce(&BTreeMap<String, Summary>) -> T,
    ) -> Result<T> {
        let b = self.bucket(bucket)?;
        let index = b.index.lock().expect("index lock");
        Ok(f(&index))
    }

    /// Copies the data of `[start, start+len)` of an object into a new staged file, hashing it.
    pub async fn stage_copy(
        &self,
        bucket: &str,
        key: &str,
        range: Option<(u64, u64)>,
        algos: Algorithms,
    ) -> Result<(Staged, ObjectMeta)> {
        let b = self.bucket(bucket)?;
        let src = Self::object_path(&b, key);
        let dst = self.tmp.join(uuid::Uuid::new_v4().simple().to_string());
        let key = key.to_string();
        blocking(move || {
            let (mut file, meta, _, seg) = open_held(&b, &src, &key)?;
            let (start, len) = range.unwrap_or((0, meta.size));
            let out = File::create_new(&dst)?;
            let mut staged = Staged {
                path: dst,
                file: Some(out),
                mem: Vec::new(),
                size: 0,
                md5: [0; 16],
                checksums: Checksums::default(),
            };
            let mut md5 = Md5::new();
            let mut hasher = algos.hasher();
            let seg_dir = seg.as_ref().map(SegRef::dir);
            let out = staged.file.as_mut().expect("just opened");
            copy_data(
                &mut file,
                &meta,
                seg_dir.as_deref(),
                (start, len),
                out,
                &mut md5,
                &mut hasher,
            )?;
            drop(seg);
            staged.size = len;
            staged.md5 = md5.finalize();
            let c = hasher.finalize();
            staged.checksums = Checksums {
                crc32: c.checksum_crc32,
                crc32c: c.checksum_crc32c,
                crc64nvme: c.checksum_crc64nvme,
                sha1: c.checksum_sha1,
                sha256: c.checksum_sha256,
            };
            Ok((staged, meta))
        })
        .await
    }

    // ---- multipart ----

    fn upload_dir(b: &Bucket, id: &str) -> Result<PathBuf> {
        if !is_valid_upload_id(id) {
            return Err(StoreError::NoSuchUpload);
        }
        Ok(b.dir.join("uploads").join(id))
    }

    pub async fn create_upload(&self, bucket: &str, meta: UploadMeta) -> Result<String> {
        let b = self.bucket(bucket)?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        let dir = Self::upload_dir(&b, &id)?;
        let staging = self.tmp.join(uuid::Uuid::new_v4().simple().to_string());
        let fsync = self.fsync;
        blocking(move || {
            std::fs::create_dir_all(&staging)?;
            let mut f = File::create(staging.join("upload.json"))?;
            f.write_all(&serde_json::to_vec(&meta).map_err(io::Error::other)?)?;
            if fsync {
                f.sync_all()?;
            }
            std::fs::rename(&staging, &dir).map_err(|e| {
                if not_found(&e) {
                    StoreError::NoSuchBucket
                } else {
                    e.into()
                }
            })
        })
        .await?;
        Ok(id)
    }

    pub async fn upload_meta(&self, bucket: &str, id: &str, key: &str) -> Result<UploadMeta> {
        let b = self.bucket(bucket)?;
        let dir = Self::upload_dir(&b, id)?;
        let key = key.to_string();
        blocking(move || {
            let bytes = std::fs::read(dir.join("upload.json")).map_err(|e| {
                if not_found(&e) {
                    StoreError::NoSuchUpload
                } else {
                    e.into()
                }
            })?;
            let meta: UploadMeta =
                serde_json::from_slice(&bytes).map_err(|_| StoreError::Corrupt(dir.clone()))?;
            if meta.key != key {
                return Err(StoreError::NoSuchUpload);
            }
            Ok(meta)
        })
        .await
    }

    pub async fn commit_part(
        &self,
        bucket: &str,
        id: &str,
        staged: Staged,
        meta: PartMeta,
    ) -> Result<PartMeta> {
        let b = self.bucket(bucket)?;
        let dir = Self::upload_dir(&b, id)?;
        let sync = self.dir_sync();
        let meta2 = meta.clone();
        blocking(move || {
            let mut staged = staged;
            let file = staged.file()?;
            write_trailer(file, &meta2)?;
            if sync.is_some() {
                file.sync_all()?;
            }
            let target = dir.join(format!("{:05}", meta2.part_number));
            match std::fs::rename(&staged.path, &target) {
                Ok(()) => {}
                Err(e) if not_found(&e) => return Err(StoreError::NoSuchUpload),
                Err(e) => return Err(e.into()),
            }
            match sync {
                Some(s) => Ok(s.sync(vec![dir])?),
                None => Ok(()),
            }
        })
        .await?;
        Ok(meta)
    }

    pub async fn list_parts(&self, bucket: &str, id: &str) -> Result<Vec<PartMeta>> {
        let b = self.bucket(bucket)?;
        let dir = Self::upload_dir(&b, id)?;
        blocking(move || read_parts(&dir)).await
    }

    /// All uploads in progress in a bucket: (id, meta), sorted by key then initiation.
    pub async fn list_uploads(&self, bucket: &str) -> Result<Vec<(String, UploadMeta)>> {
        let b = self.bucket(bucket)?;
        let dir = b.dir.join("uploads");
        blocking(move || {
            let mut out = Vec::new();
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if not_found(&e) => return Ok(out),
                Err(e) => return Err(e.into()),
            };
            for entry in entries {
                let entry = entry?;
                let Some(id) = entry.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                if !is_valid_upload_id(&id) {
                    continue;
                }
                let Ok(bytes) = std::fs::read(entry.path().join("upload.json")) else {
                    continue;
                };
                let Ok(meta) = serde_json::from_slice::<UploadMeta>(&bytes) else {
                    continue;
                };
                out.push((id, meta));
            }
            out.sort_by(|a, b| {
                (a.1.key.as_str(), a.1.initiated_ms, a.0.as_str()).cmp(&(
                    b.1.key.as_str(),
                    b.1.initiated_ms,
                    b.0.as_str(),
                ))
            });
            Ok(out)
        })
        .await
    }

    pub async fn abort_upload(&self, bucket: &str, id: &str) -> Result<()> {
        let b = self.bucket(bucket)?;
        let dir = Self::upload_dir(&b, id)?;
        let trash = self.tmp.join(uuid::Uuid::new_v4().simple().to_string());
        blocking(move || {
            std::fs::rename(&dir, &trash).map_err(|e| {
                if not_found(&e) {
                    StoreError::NoSuchUpload
                } else {
                    StoreError::from(e)
                }
            })?;
            Ok(std::fs::remove_dir_all(&trash)?)
        })
        .await
    }

    /// Aborts every multipart upload initiated before `cutoff_ms`; returns how many.
    pub async fn expire_uploads(&self, cutoff_ms: i64) -> Result<usize> {
        let mut n = 0;
        for (bucket, _) in self.list_buckets() {
            let uploads = match self.list_uploads(&bucket).await {
                Ok(u) => u,
                Err(StoreError::NoSuchBucket) => continue,
                Err(e) => return Err(e),
            };
            for (id, meta) in uploads {
                let busy = self
                    .bucket(&bucket)
                    .map(|b| b.completing.lock().expect("completing lock").contains(&id))
                    .unwrap_or(false);
                if meta.initiated_ms < cutoff_ms && !busy {
                    match self.abort_upload(&bucket, &id).await {
                        Ok(()) => n += 1,
                        Err(StoreError::NoSuchUpload | StoreError::NoSuchBucket) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Ok(n)
    }

    /// An earlier completion of upload `id`, as (key, etag).
    pub fn completed(&self, bucket: &str, id: &str) -> Option<(String, String)> {
        let b = self.bucket(bucket).ok()?;
        b.completed.lock().expect("completed lock").get(id).cloned()
    }

    /// Checks a CompleteMultipartUpload against the uploaded parts (`chosen` is
    /// `(part_number, etag)` as the client listed them) without joining them yet. While the
    /// plan lives, another completion of the same upload is refused as busy.
    pub async fn plan_completion(
        &self,
        bucket: &str,
        id: &str,
        key: &str,
        chosen: Vec<(i32, String)>,
        min_part_size: u64,
    ) -> Result<Completion> {
        let b = self.bucket(bucket)?;
        let dir = Self::upload_dir(&b, id)?;
        let upload = self.upload_meta(bucket, id, key).await?;
        if !b
            .completing
            .lock()
            .expect("completing lock")
            .insert(id.to_string())
        {
            return Err(StoreError::Busy);
        }
        let guard = CompletingGuard {
            bucket: b.clone(),
            id: id.to_string(),
        };
        let dir2 = dir.clone();
        let picked = blocking(move || validate_parts(&dir2, &chosen, min_part_size)).await?;
        Ok(Completion {
            guard,
            dir,
            key: key.to_string(),
            upload,
            picked,
        })
    }

    /// Joins a planned completion's parts into the object and makes it visible.
    pub async fn finish_completion(&self, plan: Completion) -> Result<ObjectMeta> {
        let b = plan.guard.bucket.clone();
        let tmp = self.tmp.join(uuid::Uuid::new_v4().simple().to_string());
        let sync = self.dir_sync();
        let name = key_file_name(&plan.key);
        let target = b.dir.join("objects").join(&name[..2]).join(&name);
        let b2 = b.clone();
        let (dir, key, upload, picked) = (
            plan.dir.clone(),
            plan.key.clone(),
            plan.upload.clone(),
            plan.picked.clone(),
        );
        let id = plan.guard.id.clone();
        let meta = blocking(move || {
            // Parts the client did not name are dropped; the rest become the segments.
            let chosen: std::collections::HashSet<String> = picked
                .iter()
                .map(|p| format!("{:05}", p.part_number))
                .collect();
            for entry in std::fs::read_dir(&dir).map_err(|e| {
                if not_found(&e) {
                    StoreError::NoSuchUpload
                } else {
                    StoreError::from(e)
                }
            })? {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().to_string();
                if name.len() == 5
                    && name.bytes().all(|c| c.is_ascii_digit())
                    && !chosen.contains(&name)
                {
                    std::fs::remove_file(entry.path())?;
                }
            }
            let mut md5s = Md5::new();
            for p in &picked {
                let raw = hex::decode(&p.etag).map_err(|_| StoreError::Corrupt(dir.clone()))?;
                md5s.update(&raw);
            }
            let size = picked.iter().map(|p| p.size).sum();
            let meta = ObjectMeta {
                key,
                size,
                etag: format!("{}-{}", hex::encode(md5s.finalize()), picked.len()),
                last_modified_ms: now_ms(),
                attrs: upload.attrs,
                checksums: Checksums::default(),
                parts: Some(picked.len() as u32),
                segments: Some(Segments {
                    id: id.clone(),
                    parts: picked.iter().map(|p| (p.part_number, p.size)).collect(),
                }),
            };
            let mut staged = Staged {
                path: tmp,
                file: None,
                mem: Vec::new(),
                size,
                md5: [0; 16],
                checksums: Checksums::default(),
            };
            let file = staged.file()?;
            write_trailer(file, &meta)?;
            if sync.is_some() {
                file.sync_all()?;
            }
            let segs_root = b2.dir.join("segments");
            std::fs::create_dir_all(&segs_root)?;
            let seg_dir = segs_root.join(&id);
            std::fs::rename(&dir, &seg_dir).map_err(|e| {
                if not_found(&e) {
                    StoreError::NoSuchUpload
                } else {
                    StoreError::from(e)
                }
            })?;
            // A part re-uploaded between the check and the move would not be the part the
            // client named: check again, now that no upload can touch the directory.
            let now: HashMap<i32, PartMeta> = read_parts(&seg_dir)?
                .into_iter()
                .map(|p| (p.part_number, p))
                .collect();
            if picked.iter().any(|p| now.get(&p.part_number) != Some(p)) {
                let _ = std::fs::rename(&seg_dir, &dir);
                return Err(StoreError::InvalidPart(
                    "a part changed while the upload was being completed".into(),
                ));
            }
            // The segments are in place on disk before the object that names them.
            if let Some(s) = &sync {
                s.sync(vec![segs_root, b2.dir.join("uploads")])?;
            }
            let dirs = match publish(&b2, staged, &target, &meta, &Condition::None) {
                Ok(dirs) => dirs,
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&seg_dir);
                    return Err(e);
                }
            };
            if let Some(s) = &sync {
                s.sync(dirs)?;
            }
            Ok(meta)
        })
        .await?;
        b.completed
            .lock()
            .expect("completed lock")
            .insert(plan.guard.id.clone(), (meta.key.clone(), meta.etag.clone()));
        drop(plan);
        Ok(meta)
    }
}

/// A checked CompleteMultipartUpload, ready to be joined.
pub struct Completion {
    guard: CompletingGuard,
    dir: PathBuf,
    key: String,
    upload: UploadMeta,
    picked: Vec<PartMeta>,
}

impl Completion {
    pub fn size(&self) -> u64 {
        self.picked.iter().map(|p| p.size).sum()
    }
}

struct CompletingGuard {
    bucket: Arc<Bucket>,
    id: String,
}

impl Drop for CompletingGuard {
    fn drop(&mut self) {
        if let Ok(mut set) = self.bucket.completing.lock() {
            set.remove(&self.id);
        }
    }
}

/// As S3 checks them: order first, then each part's existence and ETag, then sizes.
fn validate_parts(
    dir: &Path,
    chosen: &[(i32, String)],
    min_part_size: u64,
) -> Result<Vec<PartMeta>> {
    let parts = read_parts(dir)?;
    let by_number: HashMap<i32, &PartMeta> = parts.iter().map(|p| (p.part_number, p)).collect();
    if chosen.is_empty() {
        return Err(StoreError::InvalidPart(
            "the upload must name at least one part".into(),
        ));
    }
    let mut last = 0;
    for (n, _) in chosen {
        if *n <= last {
            return Err(StoreError::InvalidPartOrder);
        }
        last = *n;
    }
    let mut picked = Vec::with_capacity(chosen.len());
    for (n, etag) in chosen {
        let p = by_number
            .get(n)
            .ok_or_else(|| StoreError::InvalidPart(format!("part {n} was not uploaded")))?;
        let given = etag.trim_matches('"');
        if !given.is_empty() && given != p.etag {
            return Err(StoreError::InvalidPart(format!(
                "part {n} has a different ETag"
            )));
        }
        picked.push((*p).clone());
    }
    for p in &picked[..picked.len() - 1] {
        if p.size < min_part_size {
            return Err(StoreError::EntityTooSmall(p.part_number));
        }
    }
    Ok(picked)
}

/// Renames a finished temp file over `target` and records it in the index, atomically
/// with respect to other writers of the same bucket. Returns the directories to fsync
/// before the write is durable.
fn publish(
    b: &Bucket,
    mut staged: Staged,
    target: &Path,
    meta: &ObjectMeta,
    cond: &Condition,
) -> Result<Vec<PathBuf>> {
    let mut index = b.index.lock().expect("index lock");
    if b.deleted.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(StoreError::NoSuchBucket);
    }
    let current = index.get(&meta.key).map(|s| s.etag.as_str());
    let holds = match cond {
        Condition::None => true,
        Condition::Absent => current.is_none(),
        Condition::ETag(e) => current == Some(e.as_str()),
        Condition::NotETag(e) => current != Some(e.as_str()),
        Condition::Exists => current.is_some(),
    };
    if !holds {
        // If-Match on a key that is not there is a missing key, as in S3.
        let missing = current.is_none() && matches!(cond, Condition::ETag(_) | Condition::Exists);
        return Err(if missing {
            StoreError::NoSuchKey
        } else {
            StoreError::PreconditionFailed
        });
    }
    // The directories whose entries this write changes: the target's, and its parent's
    // when the target's (a fan-out directory) is new.
    let mut dirs = Vec::with_capacity(2);
    if let Some(dir) = target.parent() {
        if !dir.is_dir() {
            std::fs::create_dir_all(dir)?;
            dirs.extend(dir.parent().map(Path::to_path_buf));
        }
        dirs.push(dir.to_path_buf());
    }
    match std::fs::rename(&staged.path, target) {
        Ok(()) => {}
        Err(e) if not_found(&e) => return Err(StoreError::NoSuchBucket),
        Err(e) => return Err(e.into()),
    }
    staged.file.take();
    // The temp path no longer exists; Drop's remove_file is a harmless no-op.
    let old = index.insert(meta.key.clone(), Summary::from(meta));
    drop(index);
    if let Some(id) = old.and_then(|o| o.seg)
        && meta.segments.as_ref().is_none_or(|s| s.id != id)
    {
        release_segments(b, &id);
    }
    Ok(dirs)
}

fn read_parts(dir: &Path) -> Result<Vec<PartMeta>> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        if not_found(&e) {
            StoreError::NoSuchUpload
        } else {
            e.into()
        }
    })?;
    let mut parts = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.len() != 5 || !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let path = entry.path();
        let mut f = File::open(&path)?;
        let (meta, data_len) = read_trailer::<PartMeta>(&mut f, &path)?;
        if meta.size != data_len {
            return Err(StoreError::Corrupt(path));
        }
        parts.push(meta);
    }
    parts.sort_by_key(|p| p.part_number);
    Ok(parts)
}

/// Segments no object names (a crash between a completion's rename and its publish, or a
/// removal cut short) are deleted at start.
fn remove_unreferenced_segments(segments: &Path, index: &BTreeMap<String, Summary>) -> Result<()> {
    let entries = match std::fs::read_dir(segments) {
        Ok(e) => e,
        Err(e) if not_found(&e) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let used: std::collections::HashSet<&str> =
        index.values().filter_map(|s| s.seg.as_deref()).collect();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().to_string();
        if !used.contains(name.as_str()) {
            std::fs::remove_dir_all(entry.path())?;
        }
    }
    Ok(())
}

fn load_index(objects: &Path) -> Result<BTreeMap<String, Summary>> {
    let mut index = BTreeMap::new();
    let fans = match std::fs::read_dir(objects) {
        Ok(f) => f,
        Err(e) if not_found(&e) => return Ok(index),
        Err(e) => return Err(e.into()),
    };
    for fan in fans {
        let fan = fan?;
        if !fan.file_type()?.is_dir() {
            continue;
        }
        for entry in std::fs::read_dir(fan.path())? {
            let entry = entry?;
            let path = entry.path();
            let mut f = File::open(&path)?;
            match read_trailer::<ObjectMeta>(&mut f, &path) {
                Ok((meta, len))
                    if meta.fits(len)
                        && entry.file_name().to_str() == Some(&key_file_name(&meta.key)) =>
                {
                    index.insert(meta.key.clone(), Summary::from(&meta));
                }
                _ => tracing::warn!(path = %path.display(), "skipping an unreadable object file"),
            }
        }
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names_are_fixed_length_hex() {
        for key in [
            "../../etc/passwd",
            "a/b",
            "",
            "\u{0}",
            "é/ü",
            &"x".repeat(1024),
        ] {
            let n = key_file_name(key);
            assert_eq!(n.len(), 64);
            assert!(n.bytes().all(|b| b.is_ascii_hexdigit()));
        }
        assert_ne!(key_file_name("a"), key_file_name("a/"));
    }

    fn body(b: &'static [u8]) -> impl Stream<Item = std::result::Result<Bytes, BodyError>> + Unpin {
        futures::stream::iter(vec![Ok(Bytes::from_static(b))])
    }

    fn meta(key: &str, staged: &Staged) -> ObjectMeta {
        ObjectMeta {
            key: key.into(),
            size: staged.size,
            etag: hex::encode(staged.md5),
            last_modified_ms: now_ms(),
            attrs: Attrs::default(),
            checksums: staged.checksums.clone(),
            parts: None,
            segments: None,
        }
    }

    #[tokio::test]
    async fn objects_survive_a_reopen_and_uploads_expire() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_path_buf(), true).await.unwrap();
        store.create_bucket("bk1").await.unwrap();
        assert!(matches!(
            store.create_bucket("bk1").await,
            Err(StoreError::BucketExists)
        ));
        for (k, v) in [("a", &b"one"[..]), ("a/b", b"two"), ("a", b"three")] {
            let st = store
                .stage(body(v), 100, Algorithms::default())
                .await
                .unwrap();
            let m = meta(k, &st);
            store
                .commit_object("bk1", st, m, Condition::None)
                .await
                .unwrap();
        }
        let up = store
            .create_upload(
                "bk1",
                UploadMeta {
                    key: "mp".into(),
                    initiated_ms: now_ms(),
                    attrs: Attrs::default(),
                    checksum_algorithm: None,
                },
            )
            .await
            .unwrap();
        let st = store
            .stage(body(b"part"), 100, Algorithms::default())
            .await
            .unwrap();
        let part = PartMeta {
            part_number: 1,
            size: st.size,
            etag: hex::encode(st.md5),
            last_modified_ms: now_ms(),
            checksums: Checksums::default(),
        };
        store.commit_part("bk1", &up, st, part).await.unwrap();
        // A staged body never committed leaves nothing behind.
        drop(
            store
                .stage(body(b"abandoned"), 100, Algorithms::default())
                .await
                .unwrap(),
        );
        assert!(matches!(
            store
                .stage(body(b"too long"), 3, Algorithms::default())
                .await,
            Err(StoreError::TooLarge(3))
        ));
        drop(store);

        let store = Store::open(dir.path().to_path_buf(), true).await.unwrap();
        let keys = store
            .with_index("bk1", |i| i.keys().cloned().collect::<Vec<_>>())
            .unwrap();
        assert_eq!(keys, ["a", "a/b"]);
        let o = store.open_object("bk1", "a").await.unwrap();
        assert_eq!(o.meta.size, 5);
        assert!(matches!(
            store.delete_bucket("bk1").await,
            Err(StoreError::BucketNotEmpty)
        ));
        assert_eq!(store.list_uploads("bk1").await.unwrap().len(), 1);
        assert_eq!(store.expire_uploads(now_ms() - 60_000).await.unwrap(), 0);
        assert_eq!(store.expire_uploads(now_ms() + 1).await.unwrap(), 1);
        assert!(store.list_uploads("bk1").await.unwrap().is_empty());
        assert!(store.delete_object("bk1", "a").await.unwrap());
        assert!(!store.delete_object("bk1", "a").await.unwrap());
        assert!(store.delete_object("bk1", "a/b").await.unwrap());
        store.delete_bucket("bk1").await.unwrap();
        assert!(store.list_buckets().is_empty());
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
        assert_eq!(
            std::fs::read_dir(dir.path().join("buckets"))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn pieces_cover_ranges_across_segments() {
        let parts = [(1, 5), (2, 5), (4, 3)];
        assert_eq!(
            Vec::from(pieces(&parts, 0, 13)),
            [(1, 0, 5), (2, 0, 5), (4, 0, 3)]
        );
        assert_eq!(Vec::from(pieces(&parts, 4, 3)), [(1, 4, 1), (2, 0, 2)]);
        assert_eq!(Vec::from(pieces(&parts, 10, 3)), [(4, 0, 3)]);
        assert_eq!(Vec::from(pieces(&parts, 6, 0)), []);
    }

    async fn upload(store: &Store, key: &str, parts: &[&'static [u8]]) -> Completion {
        let id = store
            .create_upload(
                "bk1",
                UploadMeta {
                    key: key.into(),
                    initiated_ms: now_ms(),
                    attrs: Attrs::default(),
                    checksum_algorithm: None,
                },
            )
            .await
            .unwrap();
        let mut chosen = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            let st = store
                .stage(body(p), 100, Algorithms::default())
                .await
                .unwrap();
            let part = PartMeta {
                part_number: i as i32 + 1,
                size: st.size,
                etag: hex::encode(st.md5),
                last_modified_ms: now_ms(),
                checksums: Checksums::default(),
            };
            chosen.push((part.part_number, part.etag.clone()));
            store.commit_part("bk1", &id, st, part).await.unwrap();
        }
        store
            .plan_completion("bk1", &id, key, chosen, 0)
            .await
            .unwrap()
    }

    async fn read_all(o: OpenObject, start: u64, len: u64) -> Vec<u8> {
        let mut s = o.stream(start, len);
        let mut out = Vec::new();
        while let Some(c) = s.next().await {
            out.extend_from_slice(&c.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn multipart_objects_are_segments_that_outlive_their_readers() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_path_buf(), true).await.unwrap();
        store.create_bucket("bk1").await.unwrap();
        let plan = upload(&store, "mp", &[b"hello ", b"multipart ", b"world"]).await;
        let id = plan.guard.id.clone();
        let busy = store
            .plan_completion("bk1", &id, "mp", vec![(1, String::new())], 0)
            .await;
        assert!(matches!(busy, Err(StoreError::Busy)));
        let meta = store.finish_completion(plan).await.unwrap();
        assert_eq!((meta.size, meta.parts), (21, Some(3)));
        assert!(meta.etag.ends_with("-3"));
        assert!(store.list_uploads("bk1").await.unwrap().is_empty());
        let o = store.open_object("bk1", "mp").await.unwrap();
        assert_eq!(read_all(o, 0, 21).await, b"hello multipart world");
        let o = store.open_object("bk1", "mp").await.unwrap();
        assert_eq!(read_all(o, 3, 10).await, b"lo multipa");
        let (copy, _) = store
            .stage_copy("bk1", "mp", Some((6, 9)), Algorithms::default())
            .await
            .unwrap();
        assert_eq!(copy.size, 9);
        drop(copy);

        // A reader holds the segments; overwriting the key removes them only after it is done.
        let held = store.open_object("bk1", "mp").await.unwrap();
        let plan = upload(&store, "mp", &[b"second"]).await;
        store.finish_completion(plan).await.unwrap();
        let segs = dir.path().join("buckets/bk1/segments");
        assert!(segs.join(&id).is_dir(), "removed under a reader");
        assert_eq!(read_all(held, 0, 21).await, b"hello multipart world");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!segs.join(&id).exists(), "kept after its last reader");
        let o = store.open_object("bk1", "mp").await.unwrap();
        assert_eq!(read_all(o, 0, 6).await, b"second");

        // Survives a reopen; deleting removes its segments.
        drop(store);
        let store = Store::open(dir.path().to_path_buf(), true).await.unwrap();
        let o = store.open_object("bk1", "mp").await.unwrap();
        assert_eq!(read_all(o, 0, 6).await, b"second");
        assert!(store.delete_object("bk1", "mp").await.unwrap());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(std::fs::read_dir(&segs).unwrap().count(), 0);
        // Unreferenced segments (a crash before publish) are removed at start.
        std::fs::create_dir_all(segs.join("0123456789abcdef0123456789abcdef")).unwrap();
        drop(store);
        let _store = Store::open(dir.path().to_path_buf(), true).await.unwrap();
        assert_eq!(std::fs::read_dir(&segs).unwrap().count(), 0);
    }

    #[test]
    fn dir_syncs_are_shared_and_failures_reach_only_their_writer() {
        let dir = tempfile::tempdir().unwrap();
        let sync = Arc::new(DirSync::default());
        let threads: Vec<_> = (0..16)
            .map(|i| {
                let (sync, root) = (sync.clone(), dir.path().to_path_buf());
                std::thread::spawn(move || {
                    let d = root.join(format!("d{}", i % 4));
                    if i == 5 {
                        return sync.sync(vec![root.join("missing")]).is_err();
                    }
                    std::fs::create_dir_all(&d).unwrap();
                    (0..20).all(|_| sync.sync(vec![d.clone(), root.clone()]).is_ok())
                })
            })
            .collect();
        for t in threads {
            assert!(t.join().unwrap());
        }
        assert!(sync.dirs.lock().unwrap().is_empty());
    }

    #[test]
    fn bucket_and_upload_names_cannot_escape() {
        assert!(is_safe_bucket_name("backups"));
        for bad in ["..", "...", "a/b", ".ab", "AB", "ab", "a..b", "-ab"] {
            assert!(!is_safe_bucket_name(bad), "{bad}");
        }
        assert!(is_valid_upload_id(&"a".repeat(32)));
        assert!(!is_valid_upload_id("../../x"));
        assert!(!is_valid_upload_id(&"A".repeat(32)));
    }
}
