//! `meshcall bench`: measurements that print numbers (built only with the `bench` feature, which
//! is on by default for development and off in the Debian package).

use std::process::ExitCode;

use clap::Subcommand;

use super::runtime;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Open N WebSocket clients against a fresh server and measure memory, fan-out and latency.
    Server(meshcall::bench::server::BenchArgs),
    /// H.264 and Opus encode/decode speed on synthetic camera-like content.
    Media(meshcall::bench::media::MediaBenchArgs),
    /// End-to-end call media: join → first frame, capture → decode latency, 4-party CPU
    /// (run inside a loopback-only network namespace).
    Call(meshcall::bench::call::CallBenchArgs),
    /// The desktop app: frame time with N 720p30 tiles, CPU and RSS; `--call` for the whole
    /// app in a 4-party call (needs a display, e.g. `xvfb-run -a`).
    Ui(meshcall::bench::ui::UiBenchArgs),
}

/// Runs one benchmark; each prints its own numbers.
pub fn run(what: BenchCommand) -> anyhow::Result<ExitCode> {
    match what {
        BenchCommand::Server(args) => runtime().and_then(|rt| {
            rt.block_on(meshcall::bench::server::run(args))
                .map_err(Into::into)
        }),
        BenchCommand::Media(args) => meshcall::bench::media::run(args).map_err(Into::into),
        BenchCommand::Ui(args) => meshcall::bench::ui::run(args).map_err(anyhow::Error::msg),
        BenchCommand::Call(args) => runtime().and_then(|rt| {
            rt.block_on(meshcall::bench::call::run(args))
                .map_err(anyhow::Error::msg)
        }),
    }
}
