//! `kiln images …`: build the job images (only what is missing or out of date) and list the
//! tags the current inputs give.

use std::path::PathBuf;

use clap::{Args, Subcommand};

/// The `kiln images` subcommands.
#[derive(Debug, Subcommand)]
pub enum ImagesCommand {
    /// Build the images that are missing or out of date (base first).
    Build(BuildArgs),
    /// Print each image's tag for the current inputs, and whether it is built.
    List(DirArgs),
}

/// Where the image inputs are.
#[derive(Debug, Args)]
pub struct DirArgs {
    /// The `images/` directory (default: ./images when it has a base/, else the inputs built
    /// into this binary: no checkout needed).
    #[arg(long, env = "KILN_IMAGES_DIR")]
    pub images_dir: Option<PathBuf>,
}

/// Options of `kiln images build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Build only this image (base, python, node, go, rust); the base too if it is missing.
    #[arg(long)]
    pub only: Option<String>,
    /// Rebuild even when the tag already exists.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub dir: DirArgs,
}

impl DirArgs {
    fn resolve(&self) -> PathBuf {
        self.images_dir
            .clone()
            .unwrap_or_else(kiln_images::default_images_dir)
    }
}

/// Runs a `kiln images` subcommand (blocking: it drives docker, debootstrap and pip).
pub fn run(cmd: ImagesCommand) -> anyhow::Result<()> {
    match cmd {
        ImagesCommand::Build(args) => {
            let opts = kiln_images::BuildOptions {
                images_dir: args.dir.resolve(),
                only: args.only,
                force: args.force,
            };
            let report = kiln_images::build(&opts)?;
            for tag in &report.built {
                println!("built       {tag}");
            }
            for tag in &report.up_to_date {
                println!("up to date  {tag}");
            }
            Ok(())
        }
        ImagesCommand::List(dir) => {
            for spec in kiln_images::plan(&dir.resolve())? {
                println!("{:<8} {}", spec.name, spec.tag());
            }
            Ok(())
        }
    }
}
