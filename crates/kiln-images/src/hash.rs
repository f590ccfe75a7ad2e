//! Input hashing: which tag each image must have.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::{ImagesError, JOB_IMAGES};

/// Name of the Debian base image.
pub const BASE: &str = "base";

/// Version of the hashing scheme; bump to force every image to rebuild.
const SCHEME: &str = "kiln-images-v1";

/// One image to build: its name, input directory and input hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSpec {
    /// `base`, `python`, `node`, `go` or `rust`.
    pub name: String,
    /// The directory holding its inputs (`images/NAME`).
    pub dir: PathBuf,
    /// Hex SHA-256 of its inputs (and, for job images, of the base's hash).
    pub hash: String,
}

impl ImageSpec {
    /// The repository part of the tag, e.g. `kiln-python`.
    pub fn repository(&self) -> String {
        format!("kiln-{}", self.name)
    }

    /// The full tag, e.g. `kiln-python:0123456789ab`.
    pub fn tag(&self) -> String {
        format!("{}:{}", self.repository(), &self.hash[..12])
    }
}

/// The base first, then every job image, each with the hash of its current inputs.
pub fn plan(images_dir: &Path) -> Result<Vec<ImageSpec>, ImagesError> {
    let base_dir = images_dir.join(BASE);
    let base_hash = hash_dir(BASE, &base_dir, "")?;
    let mut specs = vec![ImageSpec {
        name: BASE.to_string(),
        dir: base_dir,
        hash: base_hash.clone(),
    }];
    for name in JOB_IMAGES {
        let dir = images_dir.join(name);
        let hash = hash_dir(name, &dir, &base_hash)?;
        specs.push(ImageSpec {
            name: name.to_string(),
            dir,
            hash,
        });
    }
    Ok(specs)
}

/// Hashes every file under `dir` (relative path, size and content, in sorted order).
fn hash_dir(name: &str, dir: &Path, parent_hash: &str) -> Result<String, ImagesError> {
    let mut files = Vec::new();
    collect_files(dir, dir, &mut files)?;
    files.sort();
    let mut h = Sha256::new();
    h.update(format!("{SCHEME}\n{name}\n{parent_hash}\n"));
    for rel in files {
        let path = dir.join(&rel);
        let content = std::fs::read(&path).map_err(|e| ImagesError::io(&path, e))?;
        h.update(rel.to_string_lossy().as_bytes());
        h.update([0]);
        h.update((content.len() as u64).to_le_bytes());
        h.update(&content);
    }
    Ok(hex::encode(h.finalize()))
}

fn collect_files(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), ImagesError> {
    let entries = std::fs::read_dir(dir).map_err(|e| ImagesError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| ImagesError::io(dir, e))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(|e| ImagesError::io(&path, e))?;
        if kind.is_dir() {
            collect_files(root, &path, out)?;
        } else {
            let rel = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
            out.push(rel);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        for name in ["base", "python", "node", "go", "rust"] {
            std::fs::create_dir_all(t.path().join(name)).unwrap();
            std::fs::write(t.path().join(name).join("Dockerfile"), name).unwrap();
        }
        t
    }

    #[test]
    fn child_hash_follows_base_and_own_inputs() {
        let t = tree();
        let before = plan(t.path()).unwrap();
        assert_eq!(before[0].name, "base");
        assert!(before[1].tag().starts_with("kiln-python:"));
        assert_eq!(before[1].tag().len(), "kiln-python:".len() + 12);

        std::fs::write(t.path().join("node/Dockerfile"), "changed").unwrap();
        let after = plan(t.path()).unwrap();
        assert_eq!(before[0].hash, after[0].hash);
        assert_eq!(before[1].hash, after[1].hash);
        assert_ne!(before[2].hash, after[2].hash);

        std::fs::write(t.path().join("base/Dockerfile"), "changed").unwrap();
        let rebased = plan(t.path()).unwrap();
        for (a, b) in after.iter().zip(&rebased) {
            assert_ne!(a.hash, b.hash, "{} must follow the base", a.name);
        }
    }
}
