//! Errors of image planning and building.

use std::path::PathBuf;

/// Why an image could not be planned or built.
#[derive(Debug, thiserror::Error)]
pub enum ImagesError {
    /// An input file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// `--only NAME` named no known image.
    #[error("unknown image {0:?} (known: base, python, node, go, rust)")]
    UnknownImage(String),
    /// A host program a build needs is not installed.
    #[error("`{program}` is not installed: install it with `sudo apt-get install {package}` (or run scripts/setup in a Kiln checkout)")]
    MissingTool {
        /// The program (or `pip`).
        program: &'static str,
        /// The Debian package providing it.
        package: &'static str,
    },
    /// An external step (debootstrap, pip, docker) failed.
    #[error("{step} failed: {detail}")]
    Step {
        /// What was being done.
        step: String,
        /// Exit status and the tail of its output.
        detail: String,
    },
}

impl ImagesError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ImagesError::Io {
            path: path.into(),
            source,
        }
    }
}
