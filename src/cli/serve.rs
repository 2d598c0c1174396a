//! `baken serve` (the gRPC service) and `baken token` (bearer tokens for it).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};

use baken::service::{self, ServiceConfig, auth};

#[derive(Args)]
pub struct ServeArgs {
    /// Configuration file (TOML; see deploy/baken.toml). Environment variables override it.
    #[arg(long, env = "BAKEN_CONFIG")]
    config: Option<PathBuf>,
    /// gRPC address (overrides the file and BAKEN_LISTEN).
    #[arg(long)]
    listen: Option<String>,
    /// Metrics address, or "off" (overrides the file and BAKEN_METRICS_LISTEN).
    #[arg(long)]
    metrics_listen: Option<String>,
    /// Do not build the demo list.
    #[arg(long)]
    no_demo: bool,
    /// Print the effective configuration's environment variables and exit.
    #[arg(long)]
    print_env: bool,
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Make a fresh random token: prints the token once (give it to the client) and the
    /// `[[token]]` entry for the tokens file, which holds only its SHA-256.
    New {
        /// Who holds it (recorded as the actor in audit logs: `token:NAME`).
        #[arg(long)]
        name: String,
        /// scanner, reviewer, list_admin, auditor, replica or admin (repeatable).
        #[arg(long = "role", required = true)]
        roles: Vec<auth::Role>,
    },
    /// Print the SHA-256 of a token read from stdin (for an existing token).
    Hash,
}

pub fn run_token(cmd: TokenCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TokenCommand::New { name, roles } => {
            let token = auth::new_token().context("no randomness from the OS")?;
            let roles: Vec<String> = roles.iter().map(|r| format!("{:?}", r.as_str())).collect();
            eprintln!("token for {name} (shown once; only its hash goes into the tokens file):");
            println!("{token}");
            eprintln!("tokens file entry:");
            println!(
                "\n[[token]]\nname = {name:?}\nroles = [{}]\nsha256 = \"{}\"",
                roles.join(", "),
                auth::token_hash(&token)
            );
        }
        TokenCommand::Hash => {
            let mut s = String::new();
            std::io::stdin().read_line(&mut s)?;
            println!("{}", auth::token_hash(s.trim()));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The effective configuration: defaults < file < environment < flags.
fn load_config(args: &ServeArgs, data: &Path) -> anyhow::Result<ServiceConfig> {
    let mut c = match &args.config {
        Some(p) => ServiceConfig::from_file(p)?,
        None => ServiceConfig::default(),
    };
    c.apply_env(|k| std::env::var(k).ok())?;
    // `--data` has a default of its own; it only wins over the file when given or set by env.
    if data != Path::new("./baken-data") || args.config.is_none() {
        c.data = data.to_path_buf();
    }
    if let Some(l) = &args.listen {
        c.listen = l.clone();
    }
    if let Some(m) = &args.metrics_listen {
        c.metrics.listen = m.clone();
    }
    if args.no_demo {
        c.demo_list = false;
    }
    Ok(c)
}

pub fn run_serve(args: ServeArgs, data: &Path, actor: &str) -> anyhow::Result<ExitCode> {
    let config = load_config(&args, data)?;
    if args.print_env {
        for (var, key) in service::config::ENV_VARS {
            println!("{var:<26} {key}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    config.validate()?;
    let store = service::open_store(&config)?;
    let replica = config.replication.mode == service::config::ReplicationMode::Replica;
    if replica && config.demo_list {
        // A replica's lists are the writer's; a demo list of its own would diverge from it.
        tracing::info!("replica: no demo list here (lists come from the writer)");
    }
    if config.demo_list && !replica && store.list("demo").is_err() {
        let files = super::demo::write_demo_images(&config.demo_images)?;
        let report = super::demo::build_demo_list(&store, &files, actor)?;
        eprintln!(
            "demo list `demo` built ({} entries) from generated images in {}: scan e.g. {}",
            report.counts.added,
            config.demo_images.display(),
            config.demo_images.join("demo-0.jpg").display()
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("baken-rt")
        .build()?;
    rt.block_on(async move {
        let running = service::Server::new(config).store(store).start().await?;
        eprintln!(
            "baken: serving gRPC on {}{}",
            running.addr,
            running
                .metrics_addr
                .map(|m| format!(", metrics on http://{m}/metrics"))
                .unwrap_or_default()
        );
        wait_for_signal().await;
        eprintln!("baken: shutting down (in-flight requests finish first)");
        let left = running.shutdown().await;
        if left > 0 {
            eprintln!("baken: {left} request(s) did not finish within the drain timeout");
        }
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
