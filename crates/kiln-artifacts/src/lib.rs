//! Workspace artifacts: a tree of files stored once in Postgres as a canonical, gzip-compressed
//! tar, addressed by the SHA-256 of that tar and capped in size (default 50 MiB).
//!
//! [`pack::pack_dir`] packs a directory (only the files git would track when it is a git work
//! tree), [`git::checkout_with`] packs a git repository at a ref (for the CLI: a URL or local path;
//! for the API: `https://` only, destinations checked and pinned), [`store`] puts
//! a packed artifact in the database (once per digest), [`load`] reads it back as a [`Tree`].

pub mod error;
pub mod git;
pub mod pack;
pub mod store;
pub mod tree;

pub use error::ArtifactError;
pub use git::{CheckoutOptions, GitAccess};
pub use kiln_net::DestinationPolicy;
pub use pack::{pack_dir, Packed};
pub use store::{info, load, prune_unreferenced, raw, store, ArtifactInfo};
pub use tree::{Tree, TreeEntry};

/// The default cap on a workspace: 50 MiB of (uncompressed) tar.
pub const DEFAULT_MAX_BYTES: u64 = 50 << 20;
