//! `kiln pipelines download ID -o DIR`: the workspace a pipeline ends with (a generation
//! pipeline's edited workspace, or the workspace a validation pipeline ran on), written into a
//! new or empty directory.

use std::path::{Path, PathBuf};

use anyhow::Context;
use kiln_artifacts::Tree;

use crate::commands::Backend;

/// Largest workspace downloaded (the API's own cap on stored workspaces is smaller).
const MAX_BYTES: u64 = 1 << 30;

/// `kiln pipelines …`.
#[derive(Debug, clap::Subcommand)]
pub enum PipelinesCommand {
    /// Write the workspace a pipeline ends with into a directory.
    Download {
        /// Pipeline id.
        id: i64,
        /// Where to write it: a new or empty directory.
        #[arg(long, short = 'o')]
        output: PathBuf,
    },
}

/// Runs `kiln pipelines …`.
pub async fn run(backend: &Backend, cmd: PipelinesCommand) -> anyhow::Result<()> {
    match cmd {
        PipelinesCommand::Download { id, output } => {
            check_output(&output)?;
            let tree = match backend {
                Backend::Db(pool) => {
                    let view = kiln_pipeline::get(pool, id).await?;
                    let Some(digest) = view.result_workspace() else {
                        anyhow::bail!("pipeline {id} has no workspace yet (it started from nothing and has not settled)");
                    };
                    kiln_artifacts::load(pool, digest, MAX_BYTES)
                        .await
                        .with_context(|| format!("read pipeline {id}'s workspace"))?
                }
                Backend::Api(api) => Tree::from_tar(&api.pipeline_workspace(id).await?, MAX_BYTES)?,
            };
            let files = tree.entries.len();
            let dir = output.clone();
            tokio::task::spawn_blocking(move || tree.write_to(&dir))
                .await?
                .with_context(|| format!("write the workspace into {}", output.display()))?;
            eprintln!("pipeline {id}: {files} entries written to {}", output.display());
            Ok(())
        }
    }
}

/// Refuses an output that is a file or a non-empty directory (nothing is overwritten).
fn check_output(dir: &Path) -> anyhow::Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                anyhow::bail!("--output {}: the directory is not empty", dir.display());
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(anyhow::anyhow!("--output {}: {e}", dir.display())),
    }
}
