//! Issue 14, item 10: git checkouts asked for through the API reach only the address Kiln
//! checked (pinned, so a second DNS answer is never used), stop at a deadline and a size cap,
//! hide git's messages, and take no shell from the source or the ref. Real git against real
//! sockets on loopback (allowed here by policy); an https git server is out of reach offline,
//! so a plain TCP server stands in for the far end.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kiln_artifacts::{ArtifactError, CheckoutOptions, DestinationPolicy, GitAccess};
use kiln_net::FixedResolver;

fn loopback_access(name: &str) -> GitAccess {
    GitAccess::Remote {
        policy: DestinationPolicy {
            allow_loopback: true,
            allow_private: false,
        },
        resolver: Arc::new(FixedResolver::new([(name, "127.0.0.1")])),
    }
}

/// A TCP server on loopback that counts connections and answers each with `reply` (or holds
/// it open without a word when `reply` is None).
fn server(reply: Option<&'static [u8]>) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            counter.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
                match reply {
                    Some(r) => {
                        let _ = s.read(&mut buf);
                        let _ = s.write_all(r);
                    }
                    None => while matches!(s.read(&mut buf), Ok(n) if n > 0) {},
                }
            });
        }
    });
    (port, seen)
}

#[test]
fn the_checked_address_is_pinned_and_git_says_nothing_of_what_it_found() {
    // `.invalid` never resolves in DNS: git can only reach the server through the pinned
    // address. The source's path and the ref carry shell syntax that must stay inert.
    let (port, seen) = server(Some(b"SSH-2.0-OpenSSH_9.2 not tls at all\r\n"));
    let work = tempfile::tempdir().unwrap();
    let marker = work.path().join("pwned");
    let source = format!(
        "https://pinned.kiln-test.invalid:{port}/$(touch${{IFS}}{}).git",
        marker.display()
    );
    let git_ref = format!("main;touch${{IFS}}{}", marker.display());
    let mut opts = CheckoutOptions::new(loopback_access("pinned.kiln-test.invalid"), 1 << 20);
    opts.timeout = Duration::from_secs(60);
    let err = kiln_artifacts::git::checkout_with(&source, Some(&git_ref), &opts).unwrap_err();
    assert!(
        seen.load(Ordering::SeqCst) >= 1,
        "git connected to the pinned address"
    );
    let msg = err.to_string();
    assert!(matches!(err, ArtifactError::Git(_)), "{err:?}");
    for leak in [
        "SSL",
        "TLS",
        "OpenSSH",
        "127.0.0.1",
        &port.to_string(),
        "unable",
        "error:",
    ] {
        assert!(!msg.contains(leak), "git's own words reached the error: {msg}");
    }
    assert!(!marker.exists(), "no shell ran the source or the ref");
}

#[test]
fn names_resolving_to_refused_ranges_are_not_contacted() {
    let (port, seen) = server(Some(b"x"));
    for (ip, why) in [("169.254.169.254", "cloud-metadata"), ("127.0.0.1", "loopback")] {
        let access = GitAccess::Remote {
            policy: DestinationPolicy::default(),
            resolver: Arc::new(FixedResolver::new([("rebind.kiln-test.invalid", ip)])),
        };
        let err = kiln_artifacts::git::checkout_with(
            &format!("https://rebind.kiln-test.invalid:{port}/r.git"),
            None,
            &CheckoutOptions::new(access, 1 << 20),
        )
        .unwrap_err();
        assert!(err.to_string().contains(why), "{err}");
    }
    assert_eq!(seen.load(Ordering::SeqCst), 0);
}

#[test]
fn a_silent_server_is_cut_at_the_deadline() {
    let (port, seen) = server(None);
    let mut opts = CheckoutOptions::new(loopback_access("silent.kiln-test.invalid"), 1 << 20);
    opts.timeout = Duration::from_secs(2);
    let err = kiln_artifacts::git::checkout_with(
        &format!("https://silent.kiln-test.invalid:{port}/r.git"),
        None,
        &opts,
    )
    .unwrap_err();
    assert!(matches!(err, ArtifactError::TimedOut(_)), "{err:?}");
    assert!(seen.load(Ordering::SeqCst) >= 1);
}

fn git(dir: &Path, args: &[&str]) {
    let ok = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .status()
        .unwrap()
        .success();
    assert!(ok, "git {args:?}");
}

#[test]
fn a_clone_stops_at_its_size_cap_and_the_cli_still_clones_local_paths() {
    let repo = tempfile::tempdir().unwrap();
    git(repo.path(), &["init", "-q", "-b", "main"]);
    // Incompressible bytes: the fetched pack is as large as the file.
    let mut data = vec![0u8; 4 << 20];
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    std::fs::write(repo.path().join("blob.bin"), &data).unwrap();
    std::fs::write(repo.path().join("test_a.py"), "def test_a():\n    assert True\n").unwrap();
    git(repo.path(), &["add", "."]);
    git(repo.path(), &["commit", "-q", "-m", "big"]);
    let source = format!("file://{}", repo.path().display());

    let mut opts = CheckoutOptions::new(GitAccess::Local, 50 << 20);
    opts.max_fetch_bytes = 1 << 20;
    let err = kiln_artifacts::git::checkout_with(&source, Some("main"), &opts).unwrap_err();
    assert!(
        matches!(err, ArtifactError::TooLarge { cap, .. } if cap == 1 << 20),
        "{err:?}"
    );

    let packed = kiln_artifacts::git::checkout_with(
        &source,
        Some("main"),
        &CheckoutOptions::new(GitAccess::Local, 50 << 20),
    )
    .unwrap();
    assert_eq!(packed.files, 2);
    // The same path through the remote rules is refused before git runs.
    let err = kiln_artifacts::git::checkout_with(
        &source,
        Some("main"),
        &CheckoutOptions::new(GitAccess::remote(DestinationPolicy::default()), 50 << 20),
    )
    .unwrap_err();
    assert!(err.to_string().contains("https://"), "{err}");
}
