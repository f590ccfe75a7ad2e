//! Building what is missing: the debootstrap base, then the job images FROM it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::docker::{existing_tags, import_root, prune_stale, run_logged};
use crate::{plan, ImageSpec, ImagesError, BASE};

/// Debian mirror used by debootstrap (plain http: apt verifies signatures itself).
const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The `images/` directory holding the inputs.
    pub images_dir: PathBuf,
    /// Build only this image (and the base if it is missing).
    pub only: Option<String>,
    /// Rebuild even when the tag already exists.
    pub force: bool,
}

/// What a build did.
#[derive(Debug, Clone, Default)]
pub struct BuildReport {
    /// Tags built by this run.
    pub built: Vec<String>,
    /// Tags that already existed.
    pub up_to_date: Vec<String>,
}

/// Checks, without building anything, that `opts` names a known image and that this host has
/// every program the images still to build need ([`ImagesError::MissingTool`] otherwise).
pub fn check(opts: &BuildOptions) -> Result<(), ImagesError> {
    let specs = plan(&opts.images_dir)?;
    to_build(opts, &specs).map(|_| ())
}

/// The images `opts` asks for (and a missing base), each with whether it must be built; fails
/// on an unknown name or a missing host program.
fn to_build<'a>(
    opts: &BuildOptions,
    specs: &'a [ImageSpec],
) -> Result<Vec<(&'a ImageSpec, bool)>, ImagesError> {
    if let Some(only) = &opts.only {
        if !specs.iter().any(|s| &s.name == only) {
            return Err(ImagesError::UnknownImage(only.clone()));
        }
    }
    crate::require(crate::DOCKER)?;
    let tags: Vec<String> = specs.iter().map(ImageSpec::tag).collect();
    let existing = existing_tags(&tags)?;
    let mut todo = Vec::new();
    for spec in specs {
        let wanted = match &opts.only {
            None => true,
            Some(only) => &spec.name == only,
        };
        let needed_as_base = spec.name == BASE && !existing.contains(&spec.tag()) && opts.only.is_some();
        if !wanted && !needed_as_base {
            continue;
        }
        let build = !existing.contains(&spec.tag()) || (opts.force && wanted);
        if build {
            for tool in crate::tools_for(spec) {
                crate::require(tool)?;
            }
        }
        todo.push((spec, build));
    }
    Ok(todo)
}

/// Builds every image (or `only` one) whose input-hash tag is not in the engine yet.
pub fn build(opts: &BuildOptions) -> Result<BuildReport, ImagesError> {
    let started = Instant::now();
    let specs = plan(&opts.images_dir)?;
    let todo = to_build(opts, &specs)?;
    let base = specs[0].clone();
    let mut report = BuildReport::default();
    for (spec, needs_build) in todo {
        if !needs_build {
            tracing::info!(image = %spec.name, tag = %spec.tag(), "up to date");
            report.up_to_date.push(spec.tag());
            continue;
        }
        let t = Instant::now();
        tracing::info!(image = %spec.name, tag = %spec.tag(), "building");
        if spec.name == BASE {
            build_base(&opts.images_dir, spec)?;
        } else {
            build_child(&opts.images_dir, spec, &base)?;
        }
        tracing::info!(image = %spec.name, tag = %spec.tag(), secs = t.elapsed().as_secs_f64(), "built");
        prune_stale(&spec.name, &spec.tag());
        report.built.push(spec.tag());
    }
    tracing::info!(
        built = report.built.len(),
        up_to_date = report.up_to_date.len(),
        secs = started.elapsed().as_secs_f64(),
        "images ready"
    );
    Ok(report)
}

/// The scratch directory for one image's build (`images/.build/NAME`, git-ignored), emptied.
fn scratch_dir(images_dir: &Path, name: &str) -> Result<PathBuf, ImagesError> {
    let dir = images_dir.join(".build").join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| ImagesError::io(&dir, e))?;
    }
    std::fs::create_dir_all(&dir).map_err(|e| ImagesError::io(&dir, e))?;
    Ok(dir)
}

/// Reads `KEY=VALUE` lines (comments and blanks skipped).
fn read_env(path: &Path) -> Result<Vec<(String, String)>, ImagesError> {
    let text = std::fs::read_to_string(path).map_err(|e| ImagesError::io(path, e))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect())
}

fn build_base(images_dir: &Path, spec: &ImageSpec) -> Result<(), ImagesError> {
    let env = read_env(&spec.dir.join("debootstrap.env"))?;
    let get = |key: &str, default: &str| {
        env.iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| default.to_string())
    };
    let mirror = std::env::var("KILN_DEBIAN_MIRROR").unwrap_or_else(|_| DEFAULT_MIRROR.into());
    let scratch = scratch_dir(images_dir, BASE)?;
    let root = scratch.join("root");

    tracing::info!(suite = %get("SUITE", "bookworm"), %mirror, "debootstrap (about 30 s)");
    let mut cmd = Command::new("debootstrap");
    cmd.arg(format!("--variant={}", get("VARIANT", "minbase")))
        .arg(get("SUITE", "bookworm"))
        .arg(&root)
        .arg(&mirror);
    run_logged("debootstrap", cmd)?;

    let setup = root.join("tmp/kiln-setup.sh");
    std::fs::copy(spec.dir.join("setup.sh"), &setup).map_err(|e| ImagesError::io(&setup, e))?;
    let mut cmd = Command::new("chroot");
    cmd.arg(&root).args(["/bin/sh", "/tmp/kiln-setup.sh"]);
    run_logged("base setup (chroot)", cmd)?;
    std::fs::remove_file(&setup).map_err(|e| ImagesError::io(&setup, e))?;

    tracing::info!(tag = %spec.tag(), "docker import");
    let changes = [
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        "ENV HOME=/tmp LANG=C.UTF-8".to_string(),
        format!("LABEL kiln.image={} kiln.hash={}", spec.name, spec.hash),
    ];
    import_root(&root, &spec.tag(), &changes)?;
    std::fs::remove_dir_all(&scratch).map_err(|e| ImagesError::io(&scratch, e))?;
    Ok(())
}

fn build_child(images_dir: &Path, spec: &ImageSpec, base: &ImageSpec) -> Result<(), ImagesError> {
    let context = scratch_dir(images_dir, &spec.name)?;
    copy_tree(&spec.dir, &context)?;
    let requirements = spec.dir.join("requirements.txt");
    if requirements.exists() {
        download_wheels(&requirements, &context.join("wheels"))?;
    }
    let mut cmd = Command::new("docker");
    cmd.env("DOCKER_BUILDKIT", "0")
        .args(["build", "--rm", "--force-rm"])
        .arg("--build-arg")
        .arg(format!("BASE={}", base.tag()))
        .arg("--label")
        .arg(format!("kiln.image={}", spec.name))
        .arg("--label")
        .arg(format!("kiln.hash={}", spec.hash))
        .arg("-t")
        .arg(spec.tag())
        .arg(&context);
    run_logged(&format!("docker build {}", spec.name), cmd)?;
    std::fs::remove_dir_all(&context).map_err(|e| ImagesError::io(&context, e))?;
    Ok(())
}

/// `pip download` of the pinned wheels on the host (the host trusts its TLS proxy; a fresh
/// Debian root inside a build would not), for CPython 3.11 on manylinux x86_64 (bookworm).
fn download_wheels(requirements: &Path, dest: &Path) -> Result<(), ImagesError> {
    std::fs::create_dir_all(dest).map_err(|e| ImagesError::io(dest, e))?;
    let copy = dest.join("requirements.txt");
    std::fs::copy(requirements, &copy).map_err(|e| ImagesError::io(&copy, e))?;
    tracing::info!(dest = %dest.display(), "pip download (host)");
    let mut cmd = Command::new("python3");
    cmd.args([
        "-m",
        "pip",
        "download",
        "--disable-pip-version-check",
        "--progress-bar",
        "off",
    ])
    .args(["--only-binary=:all:", "--python-version", "3.11"])
    .args(["--implementation", "cp", "--abi", "cp311"])
    .args(["--platform", "manylinux_2_28_x86_64"])
    .args(["--platform", "manylinux2014_x86_64"])
    .args(["--platform", "manylinux_2_17_x86_64"])
    .arg("-d")
    .arg(dest)
    .arg("-r")
    .arg(requirements);
    run_logged("pip download", cmd)
}

fn copy_tree(from: &Path, to: &Path) -> Result<(), ImagesError> {
    std::fs::create_dir_all(to).map_err(|e| ImagesError::io(to, e))?;
    for entry in std::fs::read_dir(from).map_err(|e| ImagesError::io(from, e))? {
        let entry = entry.map_err(|e| ImagesError::io(from, e))?;
        let src = entry.path();
        let dst = to.join(entry.file_name());
        if src.is_dir() {
            copy_tree(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst).map_err(|e| ImagesError::io(&src, e))?;
        }
    }
    Ok(())
}
