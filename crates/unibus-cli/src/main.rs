//! unibus: the command-line client (see `unibus --help`).

use std::process::ExitCode;

use clap::Parser as _;
use unibus_cli::Cli;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Cli::parse();
    let json = args.json;
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("unibus: cannot start runtime: {e}");
            return ExitCode::from(5);
        }
    };
    match rt.block_on(unibus_cli::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if json {
                let err = serde_json::json!({"error": {"code": e.code(), "message": e.message()}});
                unibus_cli::line_out(&err.to_string());
            }
            eprintln!("unibus: error: {}: {}", e.code(), e.message());
            ExitCode::from(unibus_cli::exit_code(&e))
        }
    }
}
