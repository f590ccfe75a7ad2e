//! The job images' build inputs carried inside the binary (see `build.rs`), written out once
//! per content to a cache directory so the build steps can read them as files.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::ImagesError;

include!(concat!(env!("OUT_DIR"), "/embedded_images.rs"));

/// The embedded files: (path relative to `images/`, content), sorted by path.
pub fn embedded_files() -> &'static [(&'static str, &'static [u8])] {
    FILES
}

/// A directory holding the embedded `images/` tree, written on first use:
/// `$XDG_CACHE_HOME/kiln/images-<hash>` (else `~/.cache/…`, else the temp directory).
pub fn embedded_images_dir() -> Result<PathBuf, ImagesError> {
    let mut h = Sha256::new();
    for (path, content) in FILES {
        h.update(path.as_bytes());
        h.update([0]);
        h.update((content.len() as u64).to_le_bytes());
        h.update(content);
    }
    let hash = hex::encode(h.finalize());
    let dir = cache_root().join(format!("images-{}", &hash[..16]));
    if dir.join(".complete").exists() {
        return Ok(dir);
    }
    // Written beside and renamed into place, so a concurrent reader sees all or nothing.
    let partial = dir.with_extension(format!("partial-{}", std::process::id()));
    write_tree(&partial).inspect_err(|_| {
        let _ = std::fs::remove_dir_all(&partial);
    })?;
    if let Err(e) = std::fs::rename(&partial, &dir) {
        let _ = std::fs::remove_dir_all(&partial);
        if !dir.join(".complete").exists() {
            return Err(ImagesError::io(&dir, e));
        }
    }
    Ok(dir)
}

fn write_tree(root: &Path) -> Result<(), ImagesError> {
    for (rel, content) in FILES {
        let path = root.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| ImagesError::io(parent, e))?;
        }
        std::fs::write(&path, content).map_err(|e| ImagesError::io(&path, e))?;
    }
    let done = root.join(".complete");
    std::fs::write(&done, b"").map_err(|e| ImagesError::io(&done, e))
}

fn cache_root() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("kiln");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h).join(".cache/kiln");
    }
    std::env::temp_dir().join("kiln-cache")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_tree_plans_the_same_tags_as_the_source_tree() {
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../images");
        let cache = tempfile::tempdir().unwrap();
        std::env::set_var("XDG_CACHE_HOME", cache.path());
        let dir = embedded_images_dir().unwrap();
        assert!(dir.starts_with(cache.path()));
        let embedded: Vec<String> = crate::plan(&dir).unwrap().iter().map(|s| s.tag()).collect();
        let checkout: Vec<String> = crate::plan(&source).unwrap().iter().map(|s| s.tag()).collect();
        assert_eq!(embedded, checkout);
        assert!(embedded_files().iter().any(|(p, _)| *p == "base/setup.sh"));
        // A second call finds the written tree.
        assert_eq!(embedded_images_dir().unwrap(), dir);
    }
}
