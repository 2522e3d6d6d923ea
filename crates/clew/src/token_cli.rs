//! `clew token`: bearer tokens for `auth: {bearer_tokens: {file: ...}}`. Clew stores only a
//! token's SHA-256: `new` prints a fresh random token once, with the line to add to the tokens
//! file; `hash` prints the SHA-256 of an existing token (for the file, or for
//! `metrics_token_sha256`). Revoking a token is deleting its line (picked up at the next reload).

use anyhow::{bail, Context};
use clew_model::Tenant;
use clew_security::auth::{generate_token, hash_token, token_file_line};
use clew_security::TenantScope;
use std::io::Read;

#[derive(clap::Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(clap::Subcommand)]
enum TokenCommand {
    /// Print a new random token (stdout line 1) and the line to add to the tokens file (line 2).
    New {
        /// A tenant the token may use (repeatable; the first is used when a request names none).
        #[arg(long = "tenant", required_unless_present = "all_tenants")]
        tenants: Vec<String>,
        /// The token may use every tenant (administrators, `/metrics` scrapers).
        #[arg(long, conflicts_with = "tenants")]
        all_tenants: bool,
        /// The token's name in the file and in logs (default: the first tenant and a short id).
        #[arg(long)]
        name: Option<String>,
    },
    /// Print the SHA-256 (hex) of a token given as an argument or on stdin.
    Hash {
        /// The token (read from stdin when absent, so it stays out of the shell history).
        token: Option<String>,
    },
}

pub fn run(args: TokenArgs) -> anyhow::Result<()> {
    match args.command {
        TokenCommand::New {
            tenants,
            all_tenants,
            name,
        } => {
            let scope = if all_tenants {
                TenantScope::Any
            } else {
                let list = tenants
                    .iter()
                    .map(|t| {
                        Tenant::new(t).map_err(|e| {
                            anyhow::anyhow!(
                                "--tenant {t:?}: {e} (fix: a tenant name such as team-a)"
                            )
                        })
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                TenantScope::Only(list)
            };
            let token = generate_token();
            let hash = hash_token(&token);
            let name = name.unwrap_or_else(|| {
                let who = match &scope {
                    TenantScope::Any => "all-tenants".to_string(),
                    TenantScope::Only(l) => l[0].to_string(),
                };
                format!("{who}-{}", &hex::encode(hash)[..8])
            });
            if name.trim().is_empty() {
                bail!("--name: empty (fix: name the token after its owner)");
            }
            eprintln!("# The token (shown once; Clew keeps only its SHA-256), then the line for the tokens file:");
            println!("{token}");
            println!("{}", token_file_line(&name, &hash, &scope));
            Ok(())
        }
        TokenCommand::Hash { token } => {
            let token = match token {
                Some(t) => t,
                None => {
                    let mut s = String::new();
                    std::io::stdin()
                        .read_to_string(&mut s)
                        .context("cannot read the token from stdin")?;
                    s
                }
            };
            if token.trim().is_empty() {
                bail!("no token given (fix: `clew token hash TOKEN` or `echo TOKEN | clew token hash`)");
            }
            println!("{}", hex::encode(hash_token(&token)));
            Ok(())
        }
    }
}
