//! The subcommands of the `meshcall` binary, one module each, and what they share (logging and
//! the async runtime). The flags documented in the README under "CLI contract" are relied on by
//! outside test harnesses and must stay stable.

#[cfg(feature = "bench")]
pub mod bench;
pub mod join;
pub mod serve;
pub mod token;

use anyhow::Context;

/// Logs to stderr with the given filter; tungstenite's handshake trace (which prints the token
/// in the request line) is never written.
pub fn init_logs(filter: &str) {
    use tracing_subscriber::filter::{FilterExt, filter_fn};
    use tracing_subscriber::layer::{Layer, SubscriberExt};
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Whatever the filter asks for: tungstenite's handshake logs its whole request line at
    // trace level, and a client's request line carries the token in its query.
    let no_secrets = filter_fn(|meta| {
        !(meta.target().starts_with("tungstenite::handshake")
            && *meta.level() == tracing::Level::TRACE)
    });
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .with_filter(filter.and(no_secrets));
    tracing_subscriber::registry().with(layer).init();
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}
