//! `clew`: the binary. Thin glue: parses the command line and config, wires receivers → pipeline →
//! store → query (`serve`), and runs the CLI subcommands.

mod admin;
mod admin_cli;
mod audit_cli;
mod cli;
mod demo;
mod doctor_cli;
mod fsck_cli;
mod keys_cli;
mod pipelines;
mod proxy_cli;
mod serve;
mod tls_args;
mod token_cli;

// In the library (lib.rs) so the config fuzz target can use them; `crate::config` and
// `crate::graph` keep working through these imports.
use clew::{config, graph};

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "clew",
    version,
    about = "Distributed tracing: OTLP/Zipkin collector, durable trace store and query API in one binary"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run Clew all-in-one: receivers, storage and the query API.
    Serve(ServeArgs),
    /// Print one trace as an indented tree.
    Trace(cli::TraceArgs),
    /// Search traces.
    Search(cli::SearchArgs),
    /// Find what silently breaks traces (orphans, lost context, clock skew) on a running Clew.
    Doctor(doctor_cli::DoctorArgs),
    /// Send realistic multi-service demo traffic to a running Clew.
    Demo(demo::DemoArgs),
    /// Bearer tokens for `auth: {bearer_tokens: ...}`: `new --tenant T`, `hash`.
    Token(token_cli::TokenArgs),
    /// Erase traces of a tenant everywhere (head, WAL, blocks, bucket) on a running Clew.
    Erase(admin_cli::EraseArgs),
    /// Legal holds on a running Clew: exempt a tenant or a trace from retention and erasure.
    Hold(admin_cli::HoldArgs),
    /// Keys of encryption at rest: `init`, `list`, `rotate`, `retire`, `destroy`.
    Keys(keys_cli::KeysArgs),
    /// Check (`verify`) or read (`show`) the hash-chained audit log.
    Audit(audit_cli::AuditArgs),
    /// Check every WAL segment and block of a data dir; `--repair` quarantines damaged blocks
    /// and cuts damaged WAL records out (as start-up does). Exit status 1 when damaged.
    Fsck(fsck_cli::FsckArgs),
    /// Tracing sidecar for legacy HTTP services: `--config FILE`, or `check-config`.
    Proxy(proxy_cli::ProxyArgs),
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a config file and report the first problem (file, key, fix).
    Check { file: PathBuf },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// YAML config file (OpenTelemetry Collector style); every key is optional.
    #[arg(long, short, env = "CLEW_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (overrides storage.path).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// OTLP/gRPC listen address (overrides receivers.otlp.protocols.grpc.endpoint).
    #[arg(long, value_parser = config::parse_endpoint)]
    otlp_grpc_endpoint: Option<std::net::SocketAddr>,
    /// OTLP/HTTP listen address (overrides receivers.otlp.protocols.http.endpoint).
    #[arg(long, value_parser = config::parse_endpoint)]
    otlp_http_endpoint: Option<std::net::SocketAddr>,
    /// Zipkin listen address (overrides receivers.zipkin.endpoint).
    #[arg(long, value_parser = config::parse_endpoint)]
    zipkin_endpoint: Option<std::net::SocketAddr>,
    /// Query API listen address (overrides query.endpoint).
    #[arg(long, value_parser = config::parse_endpoint)]
    query_endpoint: Option<std::net::SocketAddr>,
    /// Tempo HTTP API listen address, for Grafana's Tempo data source (overrides tempo.endpoint;
    /// 127.0.0.1:3200 by default).
    #[arg(long, value_parser = config::parse_endpoint)]
    tempo_endpoint: Option<std::net::SocketAddr>,
    /// Jaeger remote sampling listen address (overrides
    /// extensions.jaeger_remote_sampling.http.endpoint; on by default at 127.0.0.1:5778).
    #[arg(long, value_parser = config::parse_endpoint)]
    sampling_endpoint: Option<std::net::SocketAddr>,
    /// What this process runs (overrides `target`): everything (`all`), or one role of a
    /// scale-out deployment sharing a Kafka topic and a bucket (docs/scale-out.md).
    #[arg(long, value_enum)]
    target: Option<clew::target::Target>,
}

impl ServeArgs {
    fn into_config(self) -> anyhow::Result<config::Config> {
        let mut cfg = match &self.config {
            Some(path) => config::Config::load(path)?,
            // The defaults go through the same checks (and graph building) as a file.
            None => config::Config::parse("", "the defaults")?,
        };
        if let Some(d) = self.data_dir {
            cfg.storage.path = d;
        }
        if let Some(otlp) = &mut cfg.receivers.otlp {
            if let (Some(a), Some(g)) = (self.otlp_grpc_endpoint, otlp.protocols.grpc.as_mut()) {
                g.endpoint = a;
            }
            if let (Some(a), Some(h)) = (self.otlp_http_endpoint, otlp.protocols.http.as_mut()) {
                h.endpoint = a;
            }
        }
        if let (Some(a), Some(z)) = (self.zipkin_endpoint, cfg.receivers.zipkin.as_mut()) {
            z.endpoint = a;
        }
        if let Some(a) = self.query_endpoint {
            cfg.query.endpoint = a;
        }
        if let Some(a) = self.tempo_endpoint {
            cfg.tempo.endpoint = a;
        }
        if let Some(a) = self.sampling_endpoint {
            cfg.remote_sampling_settings_mut().http.endpoint = a;
        }
        // Re-validate after overrides (e.g. two flags naming the same port).
        let origin = self
            .config
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "command line".into());
        let mut seen = std::collections::HashMap::new();
        for (key, addr) in cfg.endpoints() {
            if let Some(other) = seen.insert(addr, key) {
                anyhow::bail!("{origin}: `{key}` and `{other}` both use {addr} (fix: give each listener its own port)");
            }
        }
        if let Some(t) = self.target {
            cfg.target = t;
            cfg.check_target()
                .map_err(|e| anyhow::anyhow!("{origin} with --target {}: {e}", t.as_str()))?;
        }
        Ok(cfg)
    }
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => {
                let cfg = args.into_config()?;
                init_logging(&cfg.service.telemetry.logs.level);
                serve::run(cfg).await
            }
            Command::Trace(args) => cli::trace(args).await,
            Command::Search(args) => cli::search(args).await,
            Command::Doctor(args) => doctor_cli::run(args).await,
            Command::Demo(args) => {
                init_logging("warn");
                demo::run(args).await
            }
            Command::Token(args) => token_cli::run(args),
            Command::Erase(args) => admin_cli::erase(args).await,
            Command::Hold(args) => admin_cli::hold(args).await,
            Command::Audit(args) => audit_cli::run(args),
            Command::Fsck(args) => {
                init_logging("warn");
                fsck_cli::run(args).await
            }
            Command::Keys(args) => keys_cli::run(args).await,
            Command::Proxy(args) => {
                init_logging("info");
                proxy_cli::run(args).await
            }
            Command::Config {
                command: ConfigCommand::Check { file },
            } => {
                config::Config::load(&file)?;
                println!("{}: OK", file.display());
                Ok(())
            }
        }
    })
}
