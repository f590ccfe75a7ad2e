//! Kiln's job images: a Debian base made with `debootstrap` and imported into Docker, and the
//! job images (`python`, `node`, `go`, `rust`) built `FROM` it with the classic builder.
//!
//! Every image is tagged by the hash of its build inputs (the child's hash includes the base's),
//! so "is it up to date?" is a `docker image inspect` of the expected tags: quick when nothing
//! changed, and a rebuild of exactly what changed otherwise.

mod build;
mod docker;
mod embedded;
mod error;
mod hash;
mod tools;

pub use build::{build, check, BuildOptions, BuildReport};
pub use embedded::{embedded_files, embedded_images_dir};
pub use error::ImagesError;
pub use hash::{plan, ImageSpec, BASE};
pub use tools::{require, tools_for, Tool, DOCKER};

use std::path::{Path, PathBuf};

/// Names of the job images, in build order (the base comes before all of them).
pub const JOB_IMAGES: [&str; 4] = ["python", "node", "go", "rust"];

/// The image inputs: `$KILN_IMAGES_DIR` when set, else `./images` when it holds a `base/`
/// (a checkout, maybe with local edits), else the inputs embedded in this binary, written out
/// to a cache directory (see [`embedded_images_dir`]): no checkout needed.
pub fn default_images_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("KILN_IMAGES_DIR") {
        return PathBuf::from(dir);
    }
    let here = PathBuf::from("images");
    if here.join(BASE).is_dir() {
        return here;
    }
    match embedded_images_dir() {
        Ok(dir) => dir,
        Err(e) => {
            // Reading the inputs will fail with this path named; say why here.
            tracing::warn!(error = %e, "could not write the embedded image inputs out");
            std::env::temp_dir().join("kiln-cache").join("images-unavailable")
        }
    }
}

/// The tag (`kiln-NAME:HASH`) the image `name` has when built from the inputs under `images_dir`.
pub fn image_tag(images_dir: &Path, name: &str) -> Result<String, ImagesError> {
    plan(images_dir)?
        .into_iter()
        .find(|s| s.name == name)
        .map(|s| s.tag())
        .ok_or_else(|| ImagesError::UnknownImage(name.to_string()))
}
