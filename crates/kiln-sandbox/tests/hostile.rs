//! The hostile-workload suite, against the real Docker engine: each case is contained and
//! recorded with the right outcome, the host stays healthy, and nothing is left behind.

mod common;

use std::io::Read;
use std::net::{IpAddr, TcpListener};
use std::time::{Duration, Instant};

use common::{finish, host_healthy, job, sandbox};
use kiln_sandbox::{Outcome, Workspace};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fork_bomb_is_contained_by_the_pids_limit() {
    let sb = sandbox("forkbomb").await;
    let mut spec = job(&sb, "bomb() { bomb | bomb & }; bomb; sleep 60");
    spec.timeout = Duration::from_secs(8);
    let r = sb.run(&spec, None).await.unwrap();
    assert!(
        matches!(r.outcome, Outcome::TimedOut | Outcome::NonZeroExit),
        "{:?}",
        r.outcome
    );
    host_healthy(&sb).await;
    // The engine still runs jobs afterwards.
    let ok = sb.run(&job(&sb, "echo alive"), None).await.unwrap();
    assert_eq!(ok.outcome, Outcome::Success);
    assert_eq!(ok.stdout.text(), "alive\n");
    finish(sb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocating_4_gib_is_oom_killed() {
    let sb = sandbox("oom").await;
    let spec = job(&sb, "python3 -c \"b = b'x' * (4 << 30); print(len(b))\"");
    let r = sb.run(&spec, None).await.unwrap();
    assert_eq!(r.outcome, Outcome::OomKilled, "stderr: {}", r.stderr.text());
    assert_eq!(r.exit_code, Some(137));
    // The cgroup holds the job's memory plus its workspace quota (the workspace is a tmpfs).
    assert!(r.usage.peak_memory_bytes <= spec.limits.cgroup_memory_bytes() as u64);
    assert!(r.usage.peak_memory_bytes > (spec.limits.memory_bytes as u64) / 2);
    host_healthy(&sb).await;
    finish(sb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn printing_forever_is_capped_and_timed_out() {
    let sb = sandbox("print").await;
    let mut spec = job(&sb, "yes kiln");
    spec.timeout = Duration::from_secs(4);
    let r = sb.run(&spec, None).await.unwrap();
    assert_eq!(r.outcome, Outcome::TimedOut);
    assert_eq!(r.stdout.kept.len(), spec.limits.log_cap_bytes);
    assert!(r.stdout.total_bytes > spec.limits.log_cap_bytes as u64);
    assert!(r.stdout.truncated());

    // Exiting 0 after printing past the cap is told apart as `output_truncated`.
    let r = sb
        .run(&job(&sb, "head -c 3000000 /dev/zero | tr '\\0' x"), None)
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::OutputTruncated);
    assert_eq!(r.stdout.total_bytes, 3_000_000);
    assert_eq!(r.stdout.kept.len(), 1 << 20);
    host_healthy(&sb).await;
    finish(sb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sleeping_forever_ends_within_timeout_plus_five_seconds() {
    let sb = sandbox("sleep").await;
    let mut spec = job(&sb, "sleep 100000");
    spec.timeout = Duration::from_secs(3);
    let t = Instant::now();
    let r = sb.run(&spec, None).await.unwrap();
    let took = t.elapsed();
    assert_eq!(r.outcome, Outcome::TimedOut);
    // The container is frozen at the deadline (so /work can still be read back from its
    // tmpfs) and removed afterwards: allow for the read-back on a loaded machine.
    assert!(took <= spec.timeout + Duration::from_secs(5), "took {took:?}");

    // Closing stdout and stderr does not end the job early.
    let mut spec = job(&sb, "exec >/dev/null 2>&1; sleep 100000");
    spec.timeout = Duration::from_secs(3);
    let t = Instant::now();
    let r = sb.run(&spec, None).await.unwrap();
    let took = t.elapsed();
    assert_eq!(r.outcome, Outcome::TimedOut);
    assert!(took >= spec.timeout, "took {took:?}");
    // The container is frozen at the deadline (so /work can still be read back from its
    // tmpfs) and removed afterwards: allow for the read-back on a loaded machine.
    assert!(took <= spec.timeout + Duration::from_secs(5), "took {took:?}");
    finish(sb).await;
}

/// Address of the Docker bridge on this machine: the `bridge` network's gateway, or else the
/// IPv4 address of its host interface (`docker0`). Binding a listener to it proves it is local.
async fn bridge_address(sb: &kiln_sandbox::Sandbox) -> IpAddr {
    let net = sb
        .docker()
        .inspect_network("bridge", None)
        .await
        .expect("bridge network");
    if let Some(gw) = net
        .ipam
        .and_then(|i| i.config)
        .and_then(|c| c.into_iter().find_map(|c| c.gateway))
    {
        return gw.parse().expect("gateway address");
    }
    let iface = net
        .options
        .and_then(|o| o.get("com.docker.network.bridge.name").cloned())
        .unwrap_or_else(|| "docker0".into());
    let out = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show", "dev", &iface])
        .output()
        .expect("ip addr");
    let text = String::from_utf8_lossy(&out.stdout);
    let cidr = text
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .expect("an IPv4 address on the bridge");
    cidr.split('/').next().unwrap().parse().expect("address")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_network_reaches_the_host() {
    let sb = sandbox("network").await;
    let bridge = bridge_address(&sb).await;
    assert!(
        bridge.is_ipv4() && !bridge.is_loopback(),
        "bridge address {bridge}"
    );
    // Listeners run by the test itself, on this machine only.
    let local = TcpListener::bind("127.0.0.1:0").unwrap();
    let on_bridge = TcpListener::bind((bridge, 0)).unwrap();
    local.set_nonblocking(true).unwrap();
    on_bridge.set_nonblocking(true).unwrap();
    let targets = [local.local_addr().unwrap(), on_bridge.local_addr().unwrap()];
    let script = format!(
        "import socket\n\
         for host, port in [('{}', {}), ('{}', {})]:\n\
         \x20   s = socket.socket(); s.settimeout(3)\n\
         \x20   try:\n\
         \x20       s.connect((host, port)); print('connected', host)\n\
         \x20   except OSError as e:\n\
         \x20       print('blocked', host, e.errno)\n",
        targets[0].ip(),
        targets[0].port(),
        targets[1].ip(),
        targets[1].port()
    );
    let mut spec = job(&sb, "python3 probe.py");
    let mut ws = Workspace::new();
    ws.add_file("probe.py", script).unwrap();
    spec.workspace = ws;
    let r = sb.run(&spec, None).await.unwrap();
    assert_eq!(r.outcome, Outcome::Success, "stderr: {}", r.stderr.text());
    let out = r.stdout.text();
    assert!(!out.contains("connected"), "{out}");
    assert_eq!(out.matches("blocked").count(), 2, "{out}");
    assert!(local.accept().is_err(), "loopback listener got a connection");
    assert!(on_bridge.accept().is_err(), "bridge listener got a connection");
    finish(sb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_outside_work_and_huge_files_fail() {
    let sb = sandbox("writes").await;
    let (root, etc, big) = (
        job(&sb, "echo x > /kiln-was-here"),
        job(&sb, "echo x >> /etc/passwd"),
        job(
            &sb,
            "head -c 10737418240 /dev/zero > big; s=$?; stat -c %s big; rm -f big; exit $s",
        ),
    );
    let (root, etc, big) = (sb.run(&root, None), sb.run(&etc, None), sb.run(&big, None));
    let (root, etc, big) = tokio::join!(root, etc, big);
    let (root, etc, big) = (root.unwrap(), etc.unwrap(), big.unwrap());
    assert_eq!(root.outcome, Outcome::NonZeroExit);
    assert!(
        root.stderr.text().contains("Read-only file system"),
        "{}",
        root.stderr.text()
    );
    assert_eq!(etc.outcome, Outcome::NonZeroExit);
    assert!(
        etc.stderr.text().contains("Read-only file system")
            || etc.stderr.text().contains("Permission denied"),
        "{}",
        etc.stderr.text()
    );
    // The file-size limit stops the 10 GiB file (SIGXFSZ → 128 + 25).
    assert_eq!(big.outcome, Outcome::NonZeroExit);
    assert_eq!(big.exit_code, Some(153), "stderr: {}", big.stderr.text());
    let written: u64 = big.stdout.text().trim().parse().unwrap();
    assert!(written <= big_limit(), "wrote {written}");
    host_healthy(&sb).await;
    finish(sb).await;
}

fn big_limit() -> u64 {
    kiln_sandbox::Limits::default().file_size_bytes as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workspace_symlink_to_etc_passwd_stays_in_the_container() {
    let sb = sandbox("symlink-in").await;
    let host_passwd = std::fs::read("/etc/passwd").unwrap();
    let mut spec = job(&sb, "cat passwd && echo pwned > passwd");
    let mut ws = Workspace::new();
    ws.add_symlink("passwd", "/etc/passwd").unwrap();
    spec.workspace = ws;
    spec.outputs = vec!["passwd".into()];
    let r = sb.run(&spec, None).await.unwrap();
    // It reads the container's own passwd (with the sandbox user), and cannot write it.
    assert!(r.stdout.text().contains("kiln:x:10001"), "{}", r.stdout.text());
    assert_eq!(r.outcome, Outcome::NonZeroExit);
    // The symlink is refused as an output, so nothing on the host is reached through it.
    assert!(r.outputs.files.is_empty());
    assert!(r.outputs.rejected.iter().any(|(p, _)| p == "passwd"));
    let dir = tempfile::tempdir().unwrap();
    r.outputs.write_to(dir.path()).unwrap();
    assert!(std::fs::symlink_metadata(dir.path().join("passwd")).is_err());
    assert_eq!(std::fs::read("/etc/passwd").unwrap(), host_passwd);
    finish(sb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_symlink_to_root_is_refused() {
    let sb = sandbox("symlink-out").await;
    let mut spec = job(
        &sb,
        "mkdir -p out/sub && ln -s / out/root && ln -s ../ok.txt out/sub/fine && echo hi > out/ok.txt",
    );
    spec.outputs = vec!["out".into()];
    let r = sb.run(&spec, None).await.unwrap();
    assert_eq!(r.outcome, Outcome::Success);
    assert_eq!(r.outputs.file("out/ok.txt"), Some(&b"hi\n"[..]));
    assert!(r
        .outputs
        .rejected
        .iter()
        .any(|(p, why)| p == "out/root" && why.contains("outside")));
    let dir = tempfile::tempdir().unwrap();
    r.outputs.write_to(dir.path()).unwrap();
    assert!(std::fs::symlink_metadata(dir.path().join("out/root")).is_err());
    let mut s = String::new();
    std::fs::File::open(dir.path().join("out/sub/fine"))
        .unwrap()
        .read_to_string(&mut s)
        .unwrap();
    assert_eq!(s, "hi\n");
    finish(sb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docker_socket_is_out_of_reach() {
    let sb = sandbox("socket").await;
    let script = "import socket\n\
                  for p in ['/var/run/docker.sock', '/run/docker.sock']:\n\
                  \x20   s = socket.socket(socket.AF_UNIX)\n\
                  \x20   try:\n\
                  \x20       s.connect(p); print('reached', p)\n\
                  \x20   except OSError as e:\n\
                  \x20       print('unreachable', p, e.errno)\n";
    let mut spec = job(&sb, "python3 probe.py; cat /var/run/docker.sock");
    let mut ws = Workspace::new();
    ws.add_file("probe.py", script).unwrap();
    spec.workspace = ws;
    let r = sb.run(&spec, None).await.unwrap();
    assert_eq!(r.outcome, Outcome::NonZeroExit);
    let out = r.stdout.text();
    assert!(!out.contains("reached"), "{out}");
    assert_eq!(out.matches("unreachable").count(), 2, "{out}");
    assert!(r.stderr.text().contains("No such file"), "{}", r.stderr.text());
    finish(sb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_thousand_empty_files_are_read_back_within_the_caps() {
    let sb = sandbox("manyfiles").await;
    // 300 directories of 1,000 empty files each.
    let script = "import os\n\
                  for d in range(300):\n\
                  \x20   os.mkdir(f'd{d}')\n\
                  \x20   for f in range(1000):\n\
                  \x20       open(f'd{d}/f{f}', 'w').close()\n\
                  print('made', sum(len(os.listdir(f'd{d}')) for d in range(300)))\n";
    let mut spec = job(&sb, "python3 make.py && rm make.py");
    spec.timeout = Duration::from_secs(120);
    // Room for them under the workspace quota (its own test, tests/quota.rs, shows the
    // default file cap refusing them): this one is about reading such a tree back.
    spec.limits.disk_files = 400_000;
    let mut ws = Workspace::new();
    ws.add_file("make.py", script).unwrap();
    spec.workspace = ws;
    let r = sb.run(&spec, None).await.unwrap();
    assert_eq!(r.outcome, Outcome::Success, "{}", r.stderr.text());
    assert_eq!(r.stdout.text(), "made 300000\n");
    assert!(r.diff_truncated, "a tree past the entry cap is marked partial");
    let listed = r.diff.added.len() + r.diff.removed.len();
    assert!(
        listed <= kiln_sandbox::snapshot::MAX_ENTRIES,
        "{listed} paths listed"
    );
    host_healthy(&sb).await;
    finish(sb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pathological_diff_ends_with_counts_and_the_too_large_marker() {
    let sb = sandbox("bigdiff").await;
    let old: String = (0..300_000).map(|i| format!("line {i}\n")).collect();
    let mut spec = job(&sb, "sed -i 's/^line /changed /' big.txt");
    let mut ws = Workspace::new();
    ws.add_file("big.txt", old).unwrap();
    spec.workspace = ws;
    let r = sb.run(&spec, None).await.unwrap();
    assert_eq!(r.outcome, Outcome::Success, "{}", r.stderr.text());
    let d = &r.diff;
    assert_eq!(d.modified, vec!["big.txt"]);
    assert_eq!(
        (d.files_changed, d.insertions, d.deletions),
        (1, 300_000, 300_000)
    );
    assert!(d.too_large);
    assert!(d.unified.len() <= kiln_sandbox::DiffCaps::default().unified_bytes + 512);
    assert!(d.unified.lines().last().unwrap().starts_with("# diff too large"));
    host_healthy(&sb).await;
    finish(sb).await;
}
