//! `clew keys`: the local keyring of encryption at rest (`init`, `list`, `retire`, `destroy`, on
//! the file) and key rotation on a running Clew (`rotate`: a new key version, then every block's
//! data key re-wrapped under it by the server, which audits it — no data is rewritten), and
//! `rotate-secret`: a new version of a provider-held secret (a `redaction` processor's HMAC key
//! with `hash_key_source: key_provider`), used for new hashes from the next start of Clew.

use crate::admin_cli::{call, AdminTarget};
use anyhow::Context;
use clew_encryption::local::Keyring;
use reqwest::Method;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(clap::Args)]
struct KeyringFile {
    /// The keyring file (`storage.encryption.local.keyring`).
    #[arg(long)]
    keyring: PathBuf,
}

#[derive(clap::Subcommand)]
enum KeysCommand {
    /// Create an empty keyring (mode 0600); each tenant's first key is made on first use.
    Init(KeyringFile),
    /// Tenants, their key versions and the current one (never key material).
    List(KeyringFile),
    /// On a running Clew: a new key version for the tenant (`--tenant`, or every tenant with
    /// `--all-tenants`), then every block's data key re-wrapped under it. With AWS KMS, re-wraps
    /// data keys under the key the configuration names now.
    Rotate {
        /// Every tenant (needs an identity allowed every tenant when auth is on).
        #[arg(long)]
        all_tenants: bool,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Remove an old key version. Data still wrapped under it becomes unreadable: run `rotate`
    /// first (it re-wraps everything), then retire.
    Retire {
        #[command(flatten)]
        file: KeyringFile,
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        version: u32,
    },
    /// Crypto-shred a tenant: every key version of it is removed, so all of its data already
    /// written becomes unreadable for good (new data gets a new key). Irreversible.
    Destroy {
        #[command(flatten)]
        file: KeyringFile,
        #[arg(long)]
        tenant: String,
        /// Confirms the destruction.
        #[arg(long)]
        yes: bool,
    },
    /// A new version of a provider-held secret: the HMAC key of the `redaction` processor NAME
    /// (`hash_key_source: key_provider`). Generated and wrapped by `storage.encryption`'s key
    /// provider under `{storage.path}/keys/secrets/`; older versions stay, so old hashes can still
    /// be searched. Clew hashes with the new version from its next start.
    RotateSecret {
        /// The processor's name as configured (`redaction/pii`).
        name: String,
        /// The Clew configuration (for `storage.path` and `storage.encryption`).
        #[arg(long)]
        config: PathBuf,
        /// Overrides `storage.path`, like `clew serve --data-dir`.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

pub async fn run(args: KeysArgs) -> anyhow::Result<()> {
    match args.command {
        KeysCommand::Init(f) => {
            Keyring::create(&f.keyring).map_err(|e| anyhow::anyhow!("{e}"))?;
            println!(
                "created {} (mode 0600). Back it up: without it, encrypted data cannot be read.",
                f.keyring.display()
            );
        }
        KeysCommand::List(f) => {
            let k = open(&f)?;
            let list = k.list().map_err(|e| anyhow::anyhow!("{e}"))?;
            if list.is_empty() {
                println!("no tenant keys yet (each tenant's first key is made on first use)");
            }
            for t in list {
                let current = t
                    .current
                    .map_or("none (destroyed)".to_string(), |v| format!("v{v}"));
                let versions: Vec<String> = t.versions.iter().map(|v| format!("v{v}")).collect();
                println!(
                    "{}: current {current}; readable {}",
                    t.tenant,
                    if versions.is_empty() {
                        "none".to_string()
                    } else {
                        versions.join(", ")
                    }
                );
            }
        }
        KeysCommand::Rotate {
            all_tenants,
            target,
        } => {
            let r = call(
                &target,
                Method::POST,
                "/api/admin/keys/rotate",
                Some(serde_json::json!({ "all_tenants": all_tenants })),
            )
            .await?;
            println!(
                "new key versions: {}; re-wrapped {} block key(s), {} already current, {} failed",
                r["rotated"], r["rewrapped"], r["already_current"], r["failed"]
            );
            if r["failed"].as_u64().unwrap_or(0) > 0 {
                anyhow::bail!("some block keys were not re-wrapped (see the server log); run rotate again before retiring old versions");
            }
        }
        KeysCommand::Retire {
            file,
            tenant,
            version,
        } => {
            open(&file)?
                .retire(&tenant, version)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("retired {tenant} v{version}");
        }
        KeysCommand::Destroy { file, tenant, yes } => {
            anyhow::ensure!(
                yes,
                "destroying {tenant}'s keys makes all of its encrypted data unreadable for good; add --yes to confirm"
            );
            let n = open(&file)?
                .destroy(&tenant)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!(
                "destroyed {n} key version(s) of {tenant}: its data written so far is unreadable"
            );
        }
        KeysCommand::RotateSecret {
            name,
            config,
            data_dir,
        } => {
            let mut cfg = crate::config::Config::load(&config)?;
            if let Some(d) = data_dir {
                cfg.storage.path = d;
            }
            let enc = cfg.storage.encryption.as_ref().ok_or_else(|| {
                anyhow::anyhow!("{}: `storage.encryption` is not configured: provider-held secrets need its key provider (docs/encryption-at-rest.md)", config.display())
            })?;
            let provider = enc
                .build()
                .map_err(|e| anyhow::anyhow!("key `storage.{e}`"))?;
            let manager = std::sync::Arc::new(clew_encryption::KeyManager::new(provider));
            let store = clew_encryption::secrets::SecretStore::new(
                crate::pipelines::secrets_dir(&cfg.storage.path),
                manager,
            );
            // Unwrap what exists first: a rotation over secrets the provider cannot open would
            // only hide the problem until the next start.
            store
                .load(&name)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let v = store
                .rotate(&name)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let versions: Vec<String> = store
                .versions(&name)
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .iter()
                .map(|v| format!("kp{v}"))
                .collect();
            println!(
                "secret {name:?}: version kp{v} is current (kept: {}); restart Clew to hash new values with it",
                versions.join(", ")
            );
        }
    }
    Ok(())
}

fn open(f: &KeyringFile) -> anyhow::Result<Keyring> {
    Keyring::open(&f.keyring)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("cannot open the keyring {}", f.keyring.display()))
}
