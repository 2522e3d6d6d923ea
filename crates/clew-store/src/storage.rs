//! Object storage for blocks, through the `object_store` crate (local filesystem by default). On the
//! local backend every object is fsynced with its directory, because WAL segments are deleted once
//! their spans are in blocks.

use crate::StoreError;
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Clone)]
pub struct Storage {
    pub os: Arc<dyn ObjectStore>,
    local_root: Option<PathBuf>,
}

impl Storage {
    pub fn local(root: PathBuf) -> Result<Self, StoreError> {
        std::fs::create_dir_all(&root).map_err(|source| StoreError::Io {
            path: root.display().to_string(),
            source,
        })?;
        let os = LocalFileSystem::new_with_prefix(&root)?;
        Ok(Self {
            os: Arc::new(os),
            local_root: Some(root),
        })
    }

    /// Any other backend (S3-compatible and friends), configured by the caller.
    pub fn remote(os: Arc<dyn ObjectStore>) -> Self {
        Self {
            os,
            local_root: None,
        }
    }

    pub async fn put(&self, path: &Path, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.os.put(path, PutPayload::from(bytes)).await?;
        if let Some(root) = &self.local_root {
            let file = root.join(path.as_ref());
            let sync = |p: &std::path::Path| std::fs::File::open(p).and_then(|f| f.sync_all());
            let dir = file
                .parent()
                .map(|d| d.to_path_buf())
                .unwrap_or_else(|| root.clone());
            sync(&file)
                .and_then(|_| sync(&dir))
                .map_err(|source| StoreError::Io {
                    path: file.display().to_string(),
                    source,
                })?;
        }
        Ok(())
    }

    pub async fn get(&self, path: &Path) -> Result<Bytes, StoreError> {
        Ok(self.os.get(path).await?.bytes().await?)
    }

    pub async fn delete(&self, path: &Path) -> Result<(), StoreError> {
        match self.os.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Every object path (recursively) with its size.
    pub async fn list_all(&self) -> Result<Vec<(Path, u64)>, StoreError> {
        let items: Vec<_> = self.os.list(None).try_collect().await?;
        Ok(items.into_iter().map(|m| (m.location, m.size)).collect())
    }
}
