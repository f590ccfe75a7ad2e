//! Running external steps (docker, debootstrap, pip) with their output logged through `tracing`.

use std::collections::{HashSet, VecDeque};
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

use crate::ImagesError;

/// How many trailing output lines a failed step reports.
const TAIL_LINES: usize = 30;

/// Runs `cmd`, logging each output line (`Step …` lines of docker build at info, the rest at
/// debug); fails with the tail of the output when it exits non-zero.
pub(crate) fn run_logged(step: &str, mut cmd: Command) -> Result<(), ImagesError> {
    tracing::debug!(step, command = ?cmd, "running");
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| ImagesError::Step {
        step: step.to_string(),
        detail: format!("cannot start {:?}: {e}", cmd.get_program()),
    })?;
    let stderr = child.stderr.take().expect("piped stderr");
    let err_reader = std::thread::spawn(move || read_lines(stderr, "stderr"));
    let stdout = child.stdout.take().expect("piped stdout");
    let mut tail = read_lines(stdout, "stdout");
    tail.extend(err_reader.join().unwrap_or_default());
    let status = child.wait().map_err(|e| ImagesError::Step {
        step: step.to_string(),
        detail: e.to_string(),
    })?;
    if status.success() {
        return Ok(());
    }
    let start = tail.len().saturating_sub(TAIL_LINES);
    Err(ImagesError::Step {
        step: step.to_string(),
        detail: format!(
            "{status}\n{}",
            tail.into_iter().skip(start).collect::<Vec<_>>().join("\n")
        ),
    })
}

fn read_lines(stream: impl Read, which: &'static str) -> VecDeque<String> {
    let mut tail = VecDeque::new();
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { break };
        if line.starts_with("Step ") || line.starts_with("Successfully") {
            tracing::info!("{line}");
        } else {
            tracing::debug!(stream = which, "{line}");
        }
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    }
    tail
}

/// The subset of `tags` that exist in the local Docker engine (one `docker image inspect`).
pub(crate) fn existing_tags(tags: &[String]) -> Result<HashSet<String>, ImagesError> {
    let out = Command::new("docker")
        .args(["image", "inspect", "--format", "{{json .RepoTags}}"])
        .args(tags)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| ImagesError::Step {
            step: "docker image inspect".into(),
            detail: e.to_string(),
        })?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && !stderr.contains("No such image") {
        return Err(ImagesError::Step {
            step: "docker image inspect".into(),
            detail: stderr.into_owned(),
        });
    }
    let listed = String::from_utf8_lossy(&out.stdout);
    Ok(tags
        .iter()
        .filter(|t| listed.contains(&format!("\"{t}\"")))
        .cloned()
        .collect())
}

/// `tar -C root -c . | docker import --change … - tag`.
pub(crate) fn import_root(root: &std::path::Path, tag: &str, changes: &[String]) -> Result<(), ImagesError> {
    let mut tar = Command::new("tar")
        .arg("-C")
        .arg(root)
        .args(["--numeric-owner", "-c", "."])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| ImagesError::Step {
            step: "tar".into(),
            detail: e.to_string(),
        })?;
    let mut import = Command::new("docker");
    import.arg("import");
    for change in changes {
        import.arg("--change").arg(change);
    }
    import
        .args(["-", tag])
        .stdin(Stdio::from(tar.stdout.take().expect("piped stdout")));
    let result = run_logged("docker import", import);
    let tar_status = tar.wait().map_err(|e| ImagesError::Step {
        step: "tar".into(),
        detail: e.to_string(),
    })?;
    result?;
    if !tar_status.success() {
        return Err(ImagesError::Step {
            step: "tar".into(),
            detail: tar_status.to_string(),
        });
    }
    Ok(())
}

/// Removes images labelled `kiln.image=NAME` whose tag is not `keep` (older input hashes).
/// Images still used by a container stay; failures are only logged.
pub(crate) fn prune_stale(name: &str, keep: &str) {
    let out = Command::new("docker")
        .args(["image", "ls", "--filter"])
        .arg(format!("label=kiln.image={name}"))
        .args(["--format", "{{.Repository}}:{{.Tag}}"])
        .stdin(Stdio::null())
        .output();
    let Ok(out) = out else { return };
    for tag in String::from_utf8_lossy(&out.stdout).lines() {
        let tag = tag.trim();
        if tag == keep || tag.is_empty() || tag.contains("<none>") {
            continue;
        }
        let rm = Command::new("docker")
            .args(["image", "rm", tag])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        match rm {
            Ok(s) if s.success() => tracing::info!(image = name, tag, "removed stale image"),
            _ => tracing::debug!(image = name, tag, "stale image kept (in use?)"),
        }
    }
}
