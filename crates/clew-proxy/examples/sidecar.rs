//! The sidecar alone: `sidecar proxy --config FILE` runs [`clew_proxy::run`] exactly as
//! `clew proxy --config FILE` does (same multi-threaded tokio runtime as the `clew` binary,
//! SIGTERM/SIGINT for a graceful stop), without linking the server, the store or the query
//! side. It exists for profiling: a release build of this example is seconds of compile instead
//! of the whole `clew` binary, and its instruction counts under callgrind are the proxy's.
//! `clew-bench proxy --clew-bin target/release/examples/sidecar` drives it like `clew`.
//!
//! Only the config is read; logging goes to stderr at `warn` (no subscriber: the proxy's
//! `tracing` events are dropped, as with `RUST_LOG=warn` and no warnings).

use std::path::PathBuf;
use std::process::ExitCode;

fn config_path() -> Option<PathBuf> {
    let mut args = std::env::args_os().skip(1);
    while let Some(a) = args.next() {
        if a == "--config" || a == "-c" {
            return args.next().map(PathBuf::from);
        }
    }
    None
}

fn main() -> ExitCode {
    let Some(path) = config_path() else {
        eprintln!("usage: sidecar proxy --config FILE");
        return ExitCode::from(2);
    };
    let cfg = match clew_proxy::ProxyConfig::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    // `SIDECAR_RUNTIME=current_thread`: one thread, no work stealing or cross-thread wake-ups,
    // to measure what the multi-threaded runtime (the `clew` binary's) costs per request.
    let mut builder = if std::env::var("SIDECAR_RUNTIME").as_deref() == Ok("current_thread") {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let stop = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        };
        clew_proxy::run(cfg, stop)
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            ExitCode::FAILURE
        }
    }
}
