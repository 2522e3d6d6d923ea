//! The real `clew` binary: one data dir, one process. A second `clew serve` on the same
//! `storage.path` exits at start-up naming the directory, the holder's PID and the fix, without
//! touching the first server; after the first is killed with SIGKILL (no clean-up at all) the
//! kernel has released its `flock`, and a new server starts on the directory.

mod common;
use common::{free_port, Server, BIN};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `clew serve` on `data` with fresh ports and waits for it to exit (it must, at start-up):
/// its status and stderr.
fn serve_expecting_exit(data: &Path) -> (std::process::ExitStatus, String) {
    let mut cmd = Command::new(BIN);
    cmd.arg("serve").arg("--data-dir").arg(data);
    for flag in [
        "--otlp-grpc-endpoint",
        "--otlp-http-endpoint",
        "--zipkin-endpoint",
        "--query-endpoint",
        "--sampling-endpoint",
        "--tempo-endpoint",
    ] {
        cmd.arg(flag).arg(format!("127.0.0.1:{}", free_port()));
    }
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            return (
                out.status,
                String::from_utf8_lossy(&out.stderr).into_owned(),
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "a second server on a locked data dir is still running after 60 s; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The PID written into `<data>/.lock` by its holder.
fn lock_holder(data: &Path) -> u32 {
    let text = std::fs::read_to_string(data.join(".lock")).unwrap();
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("lock file holds {text:?}, not a PID"))
}

fn is_clew_serve(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
            args.iter().any(|a| *a == b"serve")
        })
        .unwrap_or(false)
}

#[test]
fn a_second_server_on_the_same_data_dir_fails_until_the_first_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let first = Server::start(&data);
    let holder = lock_holder(&data);
    assert!(
        is_clew_serve(holder),
        "the lock file names PID {holder}, which is not the running `clew serve`"
    );
    let audit = data.join("audit").join("audit.log");
    let audit_before = std::fs::read(&audit).unwrap();

    let (status, stderr) = serve_expecting_exit(&data);
    assert!(!status.success(), "second server exited with {status}");
    for needle in [
        data.display().to_string(),
        format!("PID {holder}"),
        "storage.path".to_string(),
        "fix: stop the other process".to_string(),
    ] {
        assert!(
            stderr.contains(&needle),
            "{needle:?} missing from: {stderr}"
        );
    }
    // The refused server wrote nothing: not its PID, not an audit event.
    assert_eq!(lock_holder(&data), holder);
    assert_eq!(std::fs::read(&audit).unwrap(), audit_before);
    // And the first one still serves.
    let port = first
        .query
        .rsplit(':')
        .next()
        .unwrap()
        .parse::<u16>()
        .unwrap();
    std::net::TcpStream::connect(("127.0.0.1", port)).expect("first server still listening");

    // SIGKILL (Server's drop): no shutdown code runs; the kernel drops the flock with the process.
    drop(first);
    assert!(
        !is_clew_serve(holder),
        "PID {holder} still runs after SIGKILL"
    );
    // The stale PID is still in the file, which must not matter.
    assert_eq!(lock_holder(&data), holder);

    let third = Server::start(&data);
    let new_holder = lock_holder(&data);
    assert_ne!(new_holder, holder);
    assert!(is_clew_serve(new_holder));
    assert!(third.terminate().success());
}
