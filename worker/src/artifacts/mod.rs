//! The artifact store client: content-addressed files in a directory (shared between hosts
//! when the fleet spans several). Workers download their inputs and upload their outputs
//! here themselves; messages carry only [`ArtifactRef`]s.
//!
//! A file lives at `<root>/sha256/<first two hex digits>/<sha256>`. Paths are built only
//! from a validated hash, never from anything a user wrote. Writes go to a temporary file
//! in the same directory tree and are renamed into place, so a reader never sees half a
//! file and two workers storing the same bytes at once both succeed.

use renderfleet_shared::artifact::ArtifactRef;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("artifact reference {0:?} is not a SHA-256 (64 lower-case hex digits); the task is malformed")]
    BadRef(String),
    #[error("artifact {sha256} ({kind}) is not in the store at {root}: was it written by a worker that does not share this store? Point every worker's `artifacts_dir` at the same shared directory")]
    Missing { sha256: String, kind: String, root: String },
    #[error("artifact store at {root}: {op} {path}: {source}; check that the directory exists and this worker may write to it (`artifacts_dir`, RENDERFLEET_ARTIFACTS_DIR)")]
    Io { root: String, op: &'static str, path: String, source: std::io::Error },
}

#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens (and creates) the store at `root`.
    pub async fn open(root: impl Into<PathBuf>) -> Result<Store, StoreError> {
        let store = Store { root: root.into() };
        let dir = store.root.join("sha256");
        tokio::fs::create_dir_all(&dir).await.map_err(|e| store.io("create", &dir, e))?;
        Ok(store)
    }

    fn io(&self, op: &'static str, path: &Path, source: std::io::Error) -> StoreError {
        StoreError::Io { root: self.root.display().to_string(), op, path: path.display().to_string(), source }
    }

    fn path_for(&self, sha256: &str) -> Result<PathBuf, StoreError> {
        renderfleet_shared::artifact::store_path(sha256).map(|p| self.root.join(p)).ok_or_else(|| StoreError::BadRef(sha256.into()))
    }

    /// The local path of a stored artifact, checked to exist.
    pub async fn path(&self, r: &ArtifactRef) -> Result<PathBuf, StoreError> {
        let path = self.path_for(&r.sha256)?;
        match tokio::fs::metadata(&path).await {
            Ok(_) => Ok(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(StoreError::Missing { sha256: r.sha256.clone(), kind: r.kind.clone(), root: self.root.display().to_string() })
            }
            Err(e) => Err(self.io("stat", &path, e)),
        }
    }

    /// Reads a stored artifact whole (manifests, maps: small files).
    pub async fn read(&self, r: &ArtifactRef) -> Result<Vec<u8>, StoreError> {
        let path = self.path(r).await?;
        tokio::fs::read(&path).await.map_err(|e| self.io("read", &path, e))
    }

    /// Stores bytes.
    pub async fn put_bytes(&self, bytes: &[u8], kind: &str, mime: &str, meta: Value) -> Result<ArtifactRef, StoreError> {
        let sha256 = hex::encode(Sha256::digest(bytes));
        let dest = self.path_for(&sha256)?;
        if tokio::fs::metadata(&dest).await.is_err() {
            let tmp = self.temp_beside(&dest).await?;
            let mut f = tokio::fs::File::create(&tmp).await.map_err(|e| self.io("create", &tmp, e))?;
            f.write_all(bytes).await.map_err(|e| self.io("write", &tmp, e))?;
            f.sync_all().await.map_err(|e| self.io("sync", &tmp, e))?;
            tokio::fs::rename(&tmp, &dest).await.map_err(|e| self.io("rename", &tmp, e))?;
        }
        Ok(ArtifactRef { sha256, kind: kind.into(), bytes: bytes.len() as u64, mime: mime.into(), meta })
    }

    /// Stores a file (hashed while copied, so large renders are never read twice into memory).
    pub async fn put_file(&self, src: &Path, kind: &str, mime: &str, meta: Value) -> Result<ArtifactRef, StoreError> {
        let mut input = tokio::fs::File::open(src).await.map_err(|e| self.io("open", src, e))?;
        let staging = self.root.join("sha256").join(format!(".incoming-{}", uuid::Uuid::now_v7().simple()));
        let mut out = tokio::fs::File::create(&staging).await.map_err(|e| self.io("create", &staging, e))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut bytes = 0u64;
        let copied = async {
            loop {
                let n = input.read(&mut buf).await.map_err(|e| self.io("read", src, e))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                out.write_all(&buf[..n]).await.map_err(|e| self.io("write", &staging, e))?;
                bytes += n as u64;
            }
            out.sync_all().await.map_err(|e| self.io("sync", &staging, e))
        };
        if let Err(e) = copied.await {
            let _ = tokio::fs::remove_file(&staging).await;
            return Err(e);
        }
        let sha256 = hex::encode(hasher.finalize());
        let dest = self.path_for(&sha256)?;
        let parent = dest.parent().expect("a file inside the store");
        tokio::fs::create_dir_all(parent).await.map_err(|e| self.io("create", parent, e))?;
        tokio::fs::rename(&staging, &dest).await.map_err(|e| self.io("rename", &staging, e))?;
        Ok(ArtifactRef { sha256, kind: kind.into(), bytes, mime: mime.into(), meta })
    }

    async fn temp_beside(&self, dest: &Path) -> Result<PathBuf, StoreError> {
        let parent = dest.parent().expect("a file inside the store");
        tokio::fs::create_dir_all(parent).await.map_err(|e| self.io("create", parent, e))?;
        Ok(parent.join(format!(".incoming-{}", uuid::Uuid::now_v7().simple())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn stores_by_content_and_refuses_paths() {
        let dir = std::env::temp_dir().join(format!("rf-store-{}", uuid::Uuid::now_v7().simple()));
        let store = Store::open(&dir).await.unwrap();
        let a = store.put_bytes(b"hello", "metadata_json", "application/json", json!({})).await.unwrap();
        assert_eq!(a.sha256, "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
        let src = dir.join("src.txt");
        std::fs::write(&src, b"hello").unwrap();
        let b = store.put_file(&src, "metadata_json", "application/json", json!({})).await.unwrap();
        assert_eq!(a.sha256, b.sha256);
        assert_eq!(store.read(&a).await.unwrap(), b"hello");
        let evil = ArtifactRef { sha256: "../../etc/passwd".into(), ..a.clone() };
        assert!(matches!(store.path(&evil).await, Err(StoreError::BadRef(_))));
        let absent = ArtifactRef { sha256: "0".repeat(64), ..a };
        let err = store.path(&absent).await.unwrap_err().to_string();
        assert!(err.contains("not in the store") && err.contains("artifacts_dir"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
