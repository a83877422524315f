//! Secrets: redacted in `Debug`, compared in constant time, resolved from a flag, the
//! environment, a `*_FILE`, or `<data-dir>/credentials.json`, and generated once when unset.

use rand::Rng;
use rand::distributions::Alphanumeric;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use subtle::ConstantTimeEq;

/// A secret value. `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// A fresh random secret of `len` alphanumeric characters.
    pub fn generate(len: usize) -> Self {
        let s: String = rand::thread_rng()
            .sample_iter(&Alphanumeric)
            .take(len)
            .map(char::from)
            .collect();
        Secret(s)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison with a presented value.
    pub fn matches(&self, presented: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(presented).into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The SHA-256 of a high-entropy token. Storing only this keeps the token out of the store,
/// and checking it costs one hash: right for machine tokens that every request presents
/// (agent passwords, API secrets). Human passwords use argon2 instead.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    pub fn of(token: &[u8]) -> Self {
        TokenHash(Sha256::digest(token).into())
    }

    pub fn from_hex(text: &str) -> Option<Self> {
        let bytes = hex::decode(text).ok()?;
        Some(TokenHash(bytes.try_into().ok()?))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Constant-time check of a presented token against this hash.
    pub fn verify(&self, presented: &[u8]) -> bool {
        let other: [u8; 32] = Sha256::digest(presented).into();
        self.0.ct_eq(&other).into()
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenHash(***)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read {var} file '{path}': {source}")]
    File {
        var: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("credentials file '{path}': {source}")]
    Store {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("credentials file '{path}' is not a JSON object of strings")]
    Corrupt { path: PathBuf },
    #[error("{var} is empty")]
    Empty { var: String },
}

/// Where a resolved secret came from. `Generated` is the one time it should be printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Flag,
    Env,
    File,
    Stored,
    Generated,
}

/// `<data-dir>/credentials.json`: a JSON object of generated secrets, mode 0600.
#[derive(Debug, Clone)]
pub struct CredentialStore {
    path: PathBuf,
}

impl CredentialStore {
    pub fn new(data_dir: &Path) -> Self {
        CredentialStore {
            path: data_dir.join("credentials.json"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn load(&self) -> Result<BTreeMap<String, String>, SecretError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|_| SecretError::Corrupt {
                path: self.path.clone(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(source) => Err(SecretError::Store {
                path: self.path.clone(),
                source,
            }),
        }
    }

    fn store(&self, map: &BTreeMap<String, String>) -> Result<(), SecretError> {
        let err = |source| SecretError::Store {
            path: self.path.clone(),
            source,
        };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(err)?;
        let tmp = self.path.with_extension("json.tmp");
        {
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            let mut f = opts.open(&tmp).map_err(err)?;
            let body = serde_json::to_vec_pretty(map).expect("a map of strings serializes");
            f.write_all(&body).map_err(err)?;
            f.sync_all().map_err(err)?;
        }
        std::fs::rename(&tmp, &self.path).map_err(err)
    }

    /// Resolves the secret `key` from, in order: `explicit` (a flag), env `var`, the file named
    /// by env `var_FILE`, the credentials file; else generates one and stores it there.
    pub fn resolve(
        &self,
        key: &str,
        var: &str,
        explicit: Option<&str>,
    ) -> Result<(Secret, Origin), SecretError> {
        if let Some(v) = explicit {
            return non_empty(var, v).map(|s| (s, Origin::Flag));
        }
        if let Some((secret, origin)) = from_env(var)? {
            return Ok((secret, origin));
        }
        let mut map = self.load()?;
        if let Some(v) = map.get(key) {
            return Ok((Secret::new(v.clone()), Origin::Stored));
        }
        let secret = Secret::generate(32);
        map.insert(key.to_string(), secret.expose().to_string());
        self.store(&map)?;
        Ok((secret, Origin::Generated))
    }
}

/// A secret from env `var`, else from the file named by env `var_FILE` (its trailing newline
/// dropped); `None` when neither is set. An empty value is an error, never a secret.
pub fn from_env(var: &str) -> Result<Option<(Secret, Origin)>, SecretError> {
    if let Ok(v) = std::env::var(var) {
        return non_empty(var, &v).map(|s| Some((s, Origin::Env)));
    }
    let file_var = format!("{var}_FILE");
    if let Ok(path) = std::env::var(&file_var) {
        let text = std::fs::read_to_string(&path).map_err(|source| SecretError::File {
            var: file_var.clone(),
            path: path.clone().into(),
            source,
        })?;
        return non_empty(&file_var, text.trim_end_matches(['\n', '\r']))
            .map(|s| Some((s, Origin::File)));
    }
    Ok(None)
}

fn non_empty(var: &str, v: &str) -> Result<Secret, SecretError> {
    if v.is_empty() {
        return Err(SecretError::Empty {
            var: var.to_string(),
        });
    }
    Ok(Secret::new(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "Secret(***)");
    }

    #[test]
    fn token_hash_verifies_only_its_token() {
        let h = TokenHash::of(b"abc");
        assert!(h.verify(b"abc"));
        assert!(!h.verify(b"abd"));
        assert_eq!(TokenHash::from_hex(&h.to_hex()), Some(h));
    }

    #[test]
    fn generated_once_then_stored_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let store = CredentialStore::new(dir.path());
        let var = "PRESSOIR_TEST_SECRET_THAT_IS_NEVER_SET";
        let (a, o) = store.resolve("k", var, None).unwrap();
        assert_eq!(o, Origin::Generated);
        let (b, o) = store.resolve("k", var, None).unwrap();
        assert_eq!(o, Origin::Stored);
        assert_eq!(a, b);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(store.path())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
