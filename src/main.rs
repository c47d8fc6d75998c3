//! The `meshcall` command line: with no command it opens the desktop app; `serve` runs the
//! signalling server, `token` mints a JWT, `join` opens the app straight into a call (or runs
//! the scriptable peer with `--headless`), `bench` measures. Each subcommand lives in `cli/`.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "meshcall",
    version,
    about = "Native video calls and a Metered-compatible signalling server"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the signalling server (WebSocket at /v1, REST at /v1/…, /healthz, /metrics).
    Serve(cli::serve::ServeArgs),
    /// Mint a JWT for a peer and print it.
    Token(cli::token::TokenArgs),
    /// Join a room: opens the app straight into the call. With --headless: a scriptable peer
    /// printing one JSON line per event.
    Join(cli::join::JoinArgs),
    /// Benchmarks that print numbers.
    #[cfg(feature = "bench")]
    Bench {
        #[command(subcommand)]
        what: cli::bench::BenchCommand,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Some(command) = cli.command else {
        cli::init_logs("warn");
        return match meshcall::ui::run(meshcall::ui::AppOptions::default()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(1)
            }
        };
    };
    let result = match command {
        Command::Serve(args) => cli::serve::run(args),
        Command::Token(args) => cli::token::run(args),
        Command::Join(args) => cli::join::run(args),
        #[cfg(feature = "bench")]
        Command::Bench { what } => cli::bench::run(what),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
