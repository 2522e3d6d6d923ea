//! `clew proxy`: the tracing sidecar for legacy HTTP services (crates/clew-proxy). Thin glue:
//! loads and checks the YAML config, runs until SIGTERM/SIGINT, then shuts down gracefully.

use std::path::PathBuf;

use anyhow::Context as _;

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = false)]
pub struct ProxyArgs {
    /// The proxy's YAML config (see docs/proxy.md).
    #[arg(long, short, env = "CLEW_PROXY_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<ProxyCommand>,
}

#[derive(clap::Subcommand)]
enum ProxyCommand {
    /// Check the config (keys, values, TLS files, upstream URLs) without opening a port.
    CheckConfig,
}

pub async fn run(args: ProxyArgs) -> anyhow::Result<()> {
    let Some(path) = args.config else {
        anyhow::bail!(
            "--config: missing (fix: `clew proxy --config proxy.yaml`; see docs/proxy.md)"
        );
    };
    let cfg = clew_proxy::ProxyConfig::load(&path)?;
    let origin = path.display().to_string();
    match args.command {
        Some(ProxyCommand::CheckConfig) => {
            clew_proxy::check(&cfg).map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
            println!("{origin}: OK");
            Ok(())
        }
        None => {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .context("cannot install the SIGTERM handler")?;
            let stop = async move {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            };
            clew_proxy::run(cfg, stop)
                .await
                .map_err(|e| anyhow::anyhow!("{origin}: {e}"))
        }
    }
}
