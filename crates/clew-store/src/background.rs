//! Background work that must not compete with ingest for the cores.
//!
//! Compaction decodes and re-encodes Parquet for seconds to minutes at a time. On the server's
//! runtime it held an ingest worker (the one-hour soak saw one worker at 100 % and clients
//! waiting for acknowledgements), and at the same priority it took half of a 2-core machine from
//! ingest. It runs on a thread of its own at nice +10 instead (CFS gives it ~1/10 of a core
//! that ingest wants, and every idle cycle), with a single-threaded runtime of its own.
//! Anything it reaches over the network is driven by the runtime that built the client (the S3
//! store and the KMS provider are set up that way), so a pooled connection never waits for
//! this thread.

use std::future::Future;

/// How much nicer than the thread that starts them background threads are: lower priority than
/// ingest, not starved.
const BACKGROUND_NICE: i32 = 10;

/// Runs `job` on a new thread named `name`, [`BACKGROUND_NICE`] nicer, on a single-threaded
/// runtime. The job also stops when the runtime that called this shuts down (a store dropped
/// without `shutdown`, as tests do, does not leave its thread behind).
pub(crate) fn spawn_low_priority<F>(name: &str, job: F) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let (alive, caller_gone) = tokio::sync::oneshot::channel::<()>();
    let parent_nice = current_nice();
    // Dropped, with `alive`, when the calling runtime drops its tasks.
    tokio::spawn(async move {
        let _alive = alive;
        std::future::pending::<()>().await
    });
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            lower_priority(parent_nice);
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the background runtime; compaction is off");
                    return;
                }
            };
            runtime.block_on(async move {
                tokio::select! {
                    _ = job => {}
                    _ = caller_gone => {}
                }
            });
        })?;
    Ok(())
}

/// Makes the calling thread [`BACKGROUND_NICE`] nicer than `parent` (Linux: nice is per thread;
/// threads it starts, such as its runtime's blocking pool, inherit it). Elsewhere a no-op.
fn lower_priority(parent: i32) {
    #[cfg(target_os = "linux")]
    {
        let nice = (parent + BACKGROUND_NICE).min(19);
        // SAFETY: a plain syscall on the calling thread's own id.
        let rc =
            unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, nice) };
        if rc != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "cannot lower the background thread's priority");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = parent;
}

/// The calling thread's nice value (0 where threads have none of their own).
fn current_nice() -> i32 {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: a plain syscall on the calling thread's own id.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
    }
    #[cfg(not(target_os = "linux"))]
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn runs_the_job_on_a_lower_priority_thread() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        spawn_low_priority("clew-test-bg", async move {
            let name = std::thread::current().name().map(str::to_string);
            let _ = tx.send((name, current_nice()));
        })
        .unwrap();
        let (name, nice) = rx.await.unwrap();
        assert_eq!(name.as_deref(), Some("clew-test-bg"));
        assert_eq!(nice, (current_nice() + BACKGROUND_NICE).min(19));
    }

    #[test]
    fn the_job_stops_when_the_calling_runtime_shuts_down() {
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            spawn_low_priority("clew-test-bg2", async move {
                // Dropped (and the sender with it) when the job is cancelled.
                let _done = done_tx;
                std::future::pending::<()>().await
            })
            .unwrap();
        });
        assert!(
            done_rx.recv_timeout(Duration::from_millis(200)).is_err(),
            "still running"
        );
        drop(runtime);
        assert_eq!(
            done_rx.recv_timeout(Duration::from_secs(5)),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected)
        );
    }
}
