//! Embeds the job images' build inputs (the workspace's `images/`, without its `.build`
//! scratch) in the crate, so an installed `kiln` builds its images without a checkout.
//! `include_bytes!` makes every embedded file a dependency of the crate, and
//! `rerun-if-changed` on each image's directory notices added and removed files.

use std::path::{Path, PathBuf};

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let images = manifest.join("../../images");
    let images = images.canonicalize().unwrap_or(images);
    // Each image's directory, not `images/` itself: the `.build` scratch beside them changes
    // on every image build and must not rebuild the crate.
    for entry in std::fs::read_dir(&images).into_iter().flatten().flatten() {
        if !entry.file_name().to_string_lossy().starts_with('.') {
            println!("cargo:rerun-if-changed={}", entry.path().display());
        }
    }
    let mut files = Vec::new();
    collect(&images, &images, &mut files);
    files.sort();
    let mut out =
        String::from("/// The embedded `images/` tree: (relative path, content), sorted by path.\n");
    out.push_str("pub(crate) static FILES: &[(&str, &[u8])] = &[\n");
    for rel in files {
        let abs = images.join(&rel);
        out.push_str(&format!(
            "    ({rel:?}, include_bytes!({:?})),\n",
            abs.display().to_string()
        ));
    }
    out.push_str("];\n");
    let dest = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("embedded_images.rs");
    std::fs::write(dest, out).expect("write embedded_images.rs");
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            collect(root, &path, out);
        } else if let Ok(rel) = path.strip_prefix(root) {
            out.push(rel.to_string_lossy().into_owned());
        }
    }
}
