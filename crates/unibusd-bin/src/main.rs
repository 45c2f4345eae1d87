//! unibusd: the unibus service (auth callout + control plane), the key
//! generator, the first-admin command, and the dev kit's local stack and
//! demo. Only flag parsing and dispatch live here: the service is the
//! `unibusd` library, the local stack and the demo are `unibus-devkit`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use unibus_devkit::{demo, dev};
use unibus_proto::wire as proto;
use unibusd::config::DaemonArgs;
use unibusd::daemon;

/// unibus service daemon.
#[derive(Parser)]
#[command(version, about = "unibus: NATS membership and admission service")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the auth callout responder and the control plane.
    Run(DaemonArgs),
    /// Generate fresh keys into an env file (mode 0600, never overwritten).
    Keygen {
        /// Where to write the keys (public keys and seeds).
        #[arg(long, default_value = "unibus.env")]
        out: PathBuf,
        /// Also write the public keys alone here (what nats-server needs).
        #[arg(long)]
        public_out: Option<PathBuf>,
        /// Keep an existing key file instead of failing.
        #[arg(long)]
        if_missing: bool,
    },
    /// Mint the single-use first-admin invite (refused once an admin exists).
    BootstrapAdmin {
        #[command(flatten)]
        daemon: DaemonArgs,
        /// Invite lifetime in seconds.
        #[arg(long, default_value_t = proto::TTL_DEFAULT_SECS)]
        ttl_secs: u64,
    },
    /// Start nats-server + unibusd locally and print {"url","admin_invite"}.
    Dev(dev::DevArgs),
    /// Start a fresh local stack and run the narrated demo (alice, bob,
    /// encrypted messages, revocation), then stop.
    Demo {
        /// Client port on 127.0.0.1.
        #[arg(long, default_value_t = 4222)]
        port: u16,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo narrates on stdout; keep the log to real problems there.
    let default_filter = match cli.command {
        Command::Demo { .. } => "error,async_nats=off",
        _ => "info,async_nats=warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default_filter.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("unibusd: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("unibusd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run(args) => {
            let settings = args.validate()?;
            let mut running = daemon::start(&settings).await?;
            tokio::select! {
                _ = shutdown_signal() => {}
                _ = running.wait() => anyhow::bail!("serving stopped"),
            }
            running.stop().await;
            Ok(())
        }
        Command::Keygen { out, public_out, if_missing } => {
            let secrets = if if_missing && out.exists() {
                unibusd::secrets::Secrets::read_file(&out)?
            } else {
                let s = unibusd::secrets::Secrets::generate();
                s.write_new(&out)?;
                eprintln!("wrote {} (mode 0600)", out.display());
                s
            };
            if let Some(path) = public_out {
                let text: String =
                    secrets.public_env().into_iter().map(|(k, v)| format!("export {k}={v}\n")).collect();
                std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
            }
            Ok(())
        }
        Command::BootstrapAdmin { daemon: args, ttl_secs } => {
            if !(proto::TTL_MIN_SECS..=proto::TTL_MAX_SECS).contains(&ttl_secs) {
                anyhow::bail!("--ttl-secs must be {}..={}", proto::TTL_MIN_SECS, proto::TTL_MAX_SECS);
            }
            let settings = args.validate()?;
            let client = daemon::connect_service(&settings, "unibusd-bootstrap").await?;
            let store = tokio::time::timeout(
                std::time::Duration::from_secs(30),
                daemon::open_store(&client, &client, &settings),
            )
            .await
            .context("store did not answer within 30 s")?;
            let (invite, token) = store.bootstrap_admin_invite(ttl_secs).await?;
            println!(
                "{}",
                serde_json::json!({"id": invite.id, "token": token.to_hex(), "link": token.link(), "expires_at": invite.expires_at})
            );
            Ok(())
        }
        Command::Dev(args) => Ok(dev::run(args, shutdown_signal()).await?),
        Command::Demo { port } => Ok(demo::run(port).await?),
    }
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
