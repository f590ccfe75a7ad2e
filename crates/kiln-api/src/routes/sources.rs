//! What the pipeline routes share when they read a request: the workspace as a base64 tar.gz
//! or an https git source, and the tags; every refusal names its field.

use axum::http::StatusCode;
use base64::Engine;
use kiln_pipeline::Source;
use kiln_wire::pipelines::GitSource;

use crate::error::{ApiError, ApiResult};

/// A 422 naming `field`.
pub(super) fn unprocessable(field: impl Into<String>, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message).field(field)
}

/// `workspace_tar_gz_base64` decoded, within `max_workspace_bytes` (413 over it).
pub(super) fn tarball(b64: &str, max_workspace_bytes: u64) -> ApiResult<Source> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| unprocessable("workspace_tar_gz_base64", format!("not base64: {e}")))?;
    if bytes.len() as u64 > max_workspace_bytes {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the workspace is {} bytes, over the cap of {max_workspace_bytes}",
                bytes.len()
            ),
        )
        .field("workspace_tar_gz_base64"));
    }
    Ok(Source::TarGz(bytes))
}

/// `git` checked: a non-empty https source (paths and other transports would read the API
/// machine's disk or use its keys; the CLI checks those out on its own machine) and a
/// non-empty ref when given.
pub(super) fn git(g: GitSource) -> ApiResult<Source> {
    if g.source.trim().is_empty() {
        return Err(unprocessable("git.source", "must not be empty"));
    }
    kiln_net::HttpsTarget::parse(&g.source)
        .map_err(|e| unprocessable("git.source", format!("{e} (local paths only from the CLI)")))?;
    if g.git_ref.as_deref().is_some_and(|r| r.trim().is_empty()) {
        return Err(unprocessable("git.ref", "must not be empty when given"));
    }
    Ok(Source::Git {
        source: g.source,
        git_ref: g.git_ref,
    })
}

/// At most 32 tags of 1 to 64 bytes each.
pub(super) fn check_tags(tags: &[String]) -> ApiResult<()> {
    if tags.len() > 32 {
        return Err(unprocessable("tags", "at most 32 tags"));
    }
    for (i, t) in tags.iter().enumerate() {
        if t.is_empty() || t.len() > 64 {
            return Err(unprocessable(format!("tags[{i}]"), "a tag is 1 to 64 bytes"));
        }
    }
    Ok(())
}
