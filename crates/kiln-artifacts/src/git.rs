//! Checking out a git repository at a ref, and packing it.
//!
//! Two kinds of caller: the CLI ([`GitAccess::Local`]: any URL git understands or a local
//! path, with the user's own git setup, and git's messages in errors) and the API
//! ([`GitAccess::Remote`]: `https://` only, every address of the host checked by a
//! [`DestinationPolicy`] and pinned for the fetch with `http.curloptResolve`, no redirects, no
//! proxy, no credential helpers, `.netrc`, SSH keys or system/global config, and errors that
//! never carry git's stderr). Both run git under a deadline, in its own process group (killed
//! whole), with the checkout directory's size watched during the fetch.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_net::{DestinationPolicy, HttpsTarget, Resolve, SystemResolver};

use crate::error::ArtifactError;
use crate::pack::{pack_dir, Packed};

/// Who asked for a checkout, which decides what it may reach.
#[derive(Clone)]
pub enum GitAccess {
    /// The CLI on the user's machine: local paths and any transport but `ext::`.
    Local,
    /// A request from the network: `https://` only, destinations checked and pinned.
    Remote {
        /// Which addresses may be reached.
        policy: DestinationPolicy,
        /// How names are resolved before the check.
        resolver: Arc<dyn Resolve>,
    },
}

impl GitAccess {
    /// Remote access under `policy`, with the system resolver.
    pub fn remote(policy: DestinationPolicy) -> Self {
        GitAccess::Remote {
            policy,
            resolver: Arc::new(SystemResolver),
        }
    }
}

impl std::fmt::Debug for GitAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GitAccess::Local => f.write_str("Local"),
            GitAccess::Remote { policy, .. } => f.debug_struct("Remote").field("policy", policy).finish(),
        }
    }
}

/// Limits of one checkout.
#[derive(Debug, Clone)]
pub struct CheckoutOptions {
    /// What the source may be and reach.
    pub access: GitAccess,
    /// Deadline of the whole checkout (all git commands together).
    pub timeout: Duration,
    /// Cap of the packed workspace, in bytes.
    pub max_bytes: u64,
    /// Cap of the checkout directory (objects and files) while git runs.
    pub max_fetch_bytes: u64,
}

impl CheckoutOptions {
    /// Defaults for `access`: 120 s, the workspace cap `max_bytes`, and twice that (plus
    /// 16 MiB) on disk during the fetch.
    pub fn new(access: GitAccess, max_bytes: u64) -> Self {
        CheckoutOptions {
            access,
            timeout: Duration::from_secs(120),
            max_bytes,
            max_fetch_bytes: max_bytes.saturating_mul(2).saturating_add(16 << 20),
        }
    }
}

/// Checks out `source` (a URL or a local repository path) at `git_ref` (a branch, tag or
/// commit; `HEAD` when None) with the CLI's access and default limits. See [`checkout_with`].
pub fn checkout(source: &str, git_ref: Option<&str>, cap: u64) -> Result<Packed, ArtifactError> {
    checkout_with(source, git_ref, &CheckoutOptions::new(GitAccess::Local, cap))
}

/// Checks out `source` at `git_ref` into a temporary directory and packs the tracked files.
/// A shallow fetch of just that ref is tried first; a full clone is the fallback (a server
/// may refuse fetching a commit by id).
pub fn checkout_with(
    source: &str,
    git_ref: Option<&str>,
    opts: &CheckoutOptions,
) -> Result<Packed, ArtifactError> {
    let git_ref = git_ref.unwrap_or("HEAD");
    if source.starts_with('-') || git_ref.starts_with('-') || source.starts_with("ext::") {
        return Err(ArtifactError::Git(format!(
            "refusing source {source:?} / ref {git_ref:?}"
        )));
    }
    if git_ref.len() > 256 || git_ref.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(ArtifactError::Git(
            "the ref must be 1 to 256 visible characters".into(),
        ));
    }
    let mut runner = Runner::new(opts)?;
    let url = match &opts.access {
        GitAccess::Local if Path::new(source).is_dir() => {
            // Local paths are fetched over the file protocol (shallow fetches need it).
            let abs = std::fs::canonicalize(source).map_err(|e| ArtifactError::Io {
                path: source.to_string(),
                source: e,
            })?;
            format!("file://{}", abs.display())
        }
        GitAccess::Local => source.to_string(),
        GitAccess::Remote { policy, resolver } => {
            let target = HttpsTarget::parse(source).map_err(|e| ArtifactError::Git(e.to_string()))?;
            let ips = policy
                .resolve(&target.host, target.port, resolver.as_ref())
                .map_err(|e| ArtifactError::Git(e.to_string()))?;
            if !target.is_ip_literal() {
                runner.pin = Some(target.curl_resolve(&ips));
            }
            source.to_string()
        }
    };
    tracing::info!(source, git_ref, "checking out");
    let dir = runner.dir.path().join("shallow");
    std::fs::create_dir(&dir).map_err(|e| ArtifactError::Io {
        path: dir.display().to_string(),
        source: e,
    })?;
    runner.git(&dir, &["init", "-q", "."])?;
    let shallow = runner
        .git(&dir, &["fetch", "-q", "--depth", "1", "--", &url, git_ref])
        .and_then(|_| runner.git(&dir, &["checkout", "-q", "--detach", "FETCH_HEAD"]));
    match shallow {
        Ok(_) => finish(&runner, &dir, source, git_ref, opts.max_bytes),
        Err(e @ (ArtifactError::TooLarge { .. } | ArtifactError::TimedOut(_))) => Err(e),
        Err(e) => {
            tracing::info!(error = %e, "shallow fetch refused; cloning in full");
            let _ = std::fs::remove_dir_all(&dir);
            let full = runner.dir.path().join("full");
            std::fs::create_dir(&full).map_err(|e| ArtifactError::Io {
                path: full.display().to_string(),
                source: e,
            })?;
            runner.git(&full, &["clone", "-q", "--no-checkout", "--", &url, "."])?;
            runner.git(&full, &["checkout", "-q", "--detach", git_ref, "--"])?;
            finish(&runner, &full, source, git_ref, opts.max_bytes)
        }
    }
}

fn finish(
    runner: &Runner,
    dir: &Path,
    source: &str,
    git_ref: &str,
    cap: u64,
) -> Result<Packed, ArtifactError> {
    let commit = runner.git(dir, &["rev-parse", "HEAD"])?;
    let mut packed = pack_dir(dir, cap)?;
    packed.source = serde_json::json!({"git": source, "ref": git_ref, "commit": commit});
    tracing::info!(source, git_ref, %commit, digest = %packed.digest, "checked out and packed");
    Ok(packed)
}

/// Runs the git commands of one checkout under its shared deadline and size cap.
struct Runner {
    dir: tempfile::TempDir,
    remote: bool,
    pin: Option<String>,
    deadline: Instant,
    timeout: Duration,
    max_fetch_bytes: u64,
}

/// How much of git's stdout and stderr is kept.
const MAX_OUTPUT: u64 = 64 * 1024;

impl Runner {
    fn new(opts: &CheckoutOptions) -> Result<Runner, ArtifactError> {
        let dir = tempfile::Builder::new()
            .prefix("kiln-checkout-")
            .tempdir()
            .map_err(|e| ArtifactError::Io {
                path: "temporary directory".into(),
                source: e,
            })?;
        Ok(Runner {
            dir,
            remote: matches!(opts.access, GitAccess::Remote { .. }),
            pin: None,
            deadline: Instant::now() + opts.timeout,
            timeout: opts.timeout,
            max_fetch_bytes: opts.max_fetch_bytes,
        })
    }

    /// The command line and environment of one git run.
    fn command(&self, dir: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new("git");
        cmd.arg("-C").arg(dir);
        cmd.args([
            "-c",
            "protocol.ext.allow=never",
            "-c",
            "advice.detachedHead=false",
        ]);
        cmd.env("GIT_TERMINAL_PROMPT", "0");
        if self.remote {
            // Nothing from the API host's own setup: no system or user config, no HOME (so no
            // ~/.gitconfig, ~/.git-credentials, ~/.netrc, ~/.ssh), no proxy, no askpass.
            let home = self.dir.path();
            cmd.env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .env("HOME", home)
                .env("XDG_CONFIG_HOME", home)
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("GIT_CONFIG_GLOBAL", "/dev/null")
                .env("GIT_TERMINAL_PROMPT", "0")
                .env("GIT_ASKPASS", "true")
                .env("SSH_ASKPASS", "true")
                .env("GIT_SSH_COMMAND", "false")
                .env("LC_ALL", "C");
            for kv in [
                "protocol.allow=never",
                "protocol.https.allow=always",
                "credential.helper=",
                "core.sshCommand=false",
                "core.askPass=true",
                "http.followRedirects=false",
                "http.proxy=",
                "core.hooksPath=/dev/null",
                "transfer.fsckObjects=true",
            ] {
                cmd.args(["-c", kv]);
            }
            if let Some(pin) = &self.pin {
                cmd.arg("-c").arg(format!("http.curloptResolve={pin}"));
            }
        }
        cmd.args(args);
        cmd
    }

    /// Runs git with `args` in `dir`; its stdout (trimmed) on success.
    fn git(&self, dir: &Path, args: &[&str]) -> Result<String, ArtifactError> {
        use std::os::unix::process::CommandExt;
        let mut cmd = self.command(dir, args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd
            .spawn()
            .map_err(|e| ArtifactError::Git(format!("cannot run git: {e}")))?;
        let read = |pipe: Option<Box<dyn Read + Send>>| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                if let Some(p) = pipe {
                    let mut p = p;
                    let _ = p.by_ref().take(MAX_OUTPUT).read_to_end(&mut buf);
                    let _ = std::io::copy(&mut p, &mut std::io::sink());
                }
                buf
            })
        };
        let stdout = read(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
        let stderr = read(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
        let pgid = child.id() as i32;
        let mut last_size_check = Instant::now();
        let verdict = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Ok(status),
                Ok(None) => {}
                Err(e) => break Err(ArtifactError::Git(format!("waiting for git: {e}"))),
            }
            if Instant::now() >= self.deadline {
                break Err(ArtifactError::TimedOut(self.timeout));
            }
            if last_size_check.elapsed() >= Duration::from_millis(200) {
                last_size_check = Instant::now();
                let size = dir_size(self.dir.path(), self.max_fetch_bytes);
                if size > self.max_fetch_bytes {
                    break Err(ArtifactError::TooLarge {
                        size,
                        cap: self.max_fetch_bytes,
                    });
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if verdict.is_err() {
            // git forks helpers (remote-https, index-pack): stop the whole group.
            // SAFETY: kill(2) on our own child's process group; no memory is involved.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
            let _ = child.wait();
        }
        let out = stdout.join().unwrap_or_default();
        let err = stderr.join().unwrap_or_default();
        let status = verdict?;
        // A command that finished between two looks is measured once more.
        let size = dir_size(self.dir.path(), self.max_fetch_bytes);
        if size > self.max_fetch_bytes {
            return Err(ArtifactError::TooLarge {
                size,
                cap: self.max_fetch_bytes,
            });
        }
        if status.success() {
            return Ok(String::from_utf8_lossy(&out).trim().to_string());
        }
        let err = String::from_utf8_lossy(&err);
        let what = args.first().copied().unwrap_or("git");
        if self.remote {
            // git's messages can tell an open port from a closed one: log them, answer plainly.
            tracing::info!(command = what, %status, stderr = %err.trim(), "git failed");
            Err(ArtifactError::Git(format!("`git {what}` failed")))
        } else {
            Err(ArtifactError::Git(format!(
                "`git {}` failed: {}",
                args.join(" "),
                err.trim()
            )))
        }
    }
}

/// Bytes of regular files under `dir`, counting stops a little past `stop_after`.
fn dir_size(dir: &Path, stop_after: u64) -> u64 {
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                total += meta.len();
                if total > stop_after {
                    return total;
                }
            }
        }
    }
    total
}
