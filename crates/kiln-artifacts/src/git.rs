//! Checking out a git repository (a URL or a local path) at a ref, and packing it.

use std::path::Path;
use std::process::Command;

use crate::error::ArtifactError;
use crate::pack::{pack_dir, Packed};

/// Runs git with prompts off and the `ext::` transport refused.
fn git(dir: &Path, args: &[&str]) -> Result<String, ArtifactError> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "protocol.ext.allow=never",
            "-c",
            "advice.detachedHead=false",
        ])
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .map_err(|e| ArtifactError::Git(format!("cannot run git: {e}")))?;
    if !out.status.success() {
        return Err(ArtifactError::Git(format!(
            "`git {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Checks out `source` (a URL or a local repository path) at `git_ref` (a branch, tag or
/// commit; `HEAD` when None) into a temporary directory and packs the tracked files.
/// A shallow fetch of just that ref is tried first; a full clone is the fallback (a server
/// may refuse fetching a commit by id).
pub fn checkout(source: &str, git_ref: Option<&str>, cap: u64) -> Result<Packed, ArtifactError> {
    let git_ref = git_ref.unwrap_or("HEAD");
    if source.starts_with('-') || git_ref.starts_with('-') || source.starts_with("ext::") {
        return Err(ArtifactError::Git(format!(
            "refusing source {source:?} / ref {git_ref:?}"
        )));
    }
    // Local paths are fetched over the file protocol (shallow fetches need it).
    let url = if Path::new(source).is_dir() {
        let abs = std::fs::canonicalize(source).map_err(|e| ArtifactError::Io {
            path: source.to_string(),
            source: e,
        })?;
        format!("file://{}", abs.display())
    } else {
        source.to_string()
    };
    let tmp = tempfile::Builder::new()
        .prefix("kiln-checkout-")
        .tempdir()
        .map_err(|e| ArtifactError::Io {
            path: "temporary directory".into(),
            source: e,
        })?;
    let dir = tmp.path();
    tracing::info!(source, git_ref, "checking out");
    git(dir, &["init", "-q", "."])?;
    let shallow = git(dir, &["fetch", "-q", "--depth", "1", "--", &url, git_ref])
        .and_then(|_| git(dir, &["checkout", "-q", "--detach", "FETCH_HEAD"]));
    if let Err(e) = shallow {
        tracing::info!(error = %e, "shallow fetch refused; cloning in full");
        let full = tempfile::Builder::new()
            .prefix("kiln-checkout-")
            .tempdir()
            .map_err(|e| ArtifactError::Io {
                path: "temporary directory".into(),
                source: e,
            })?;
        git(full.path(), &["clone", "-q", "--no-checkout", "--", &url, "."])?;
        git(full.path(), &["checkout", "-q", "--detach", git_ref, "--"])?;
        return finish(full.path(), source, git_ref, cap);
    }
    finish(dir, source, git_ref, cap)
}

fn finish(dir: &Path, source: &str, git_ref: &str, cap: u64) -> Result<Packed, ArtifactError> {
    let commit = git(dir, &["rev-parse", "HEAD"])?;
    let mut packed = pack_dir(dir, cap)?;
    packed.source = serde_json::json!({"git": source, "ref": git_ref, "commit": commit});
    tracing::info!(source, git_ref, %commit, digest = %packed.digest, "checked out and packed");
    Ok(packed)
}
