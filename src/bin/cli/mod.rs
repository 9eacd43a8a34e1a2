//! The parts of `quorumkv-cli` behind its argument parsing: shared settings, the interactive prompt
//! and the benchmark.

pub mod bench;
pub mod check;
pub mod repl;
pub mod snapshot;
pub mod status;

use std::io::Write;

use quorumkv::client::{ClientConfig, ClientError};
use quorumkv::protocol::resp::{format_reply, Reply};

/// Environment variable overriding the overall deadline of each request, in milliseconds (tests and
/// scripts use it to fail fast when no server is up).
pub const TIMEOUT_ENV: &str = "QUORUMKV_CLI_TIMEOUT_MS";
/// Exit code: the command ran and the reply was not an error.
pub const EXIT_OK: u8 = 0;
/// Exit code: an error reply, a usage error, or a failure other than reaching a server.
pub const EXIT_ERROR: u8 = 1;
/// Exit code: no server could be reached (or none could serve the request) in time.
pub const EXIT_UNAVAILABLE: u8 = 2;

/// The client settings for `servers`, with the request deadline from [`TIMEOUT_ENV`] if set.
pub fn client_config(servers: &[String]) -> Result<ClientConfig, String> {
    let servers: Vec<String> =
        servers.iter().map(|server| server.trim().to_string()).filter(|server| !server.is_empty()).collect();
    if servers.is_empty() {
        return Err("--servers needs at least one HOST:PORT".to_string());
    }
    let mut config = ClientConfig::new(servers);
    if let Some(value) = std::env::var_os(TIMEOUT_ENV) {
        let timeout_ms = value
            .to_str()
            .and_then(|text| text.trim().parse::<u64>().ok())
            .filter(|&ms| ms > 0)
            .ok_or_else(|| format!("{TIMEOUT_ENV} must be a positive number of milliseconds"))?;
        config.request_timeout_ms = timeout_ms;
        // One connect or read must not outlive the whole request.
        config.connect_timeout_ms = config.connect_timeout_ms.min(timeout_ms);
        config.io_timeout_ms = config.io_timeout_ms.min(timeout_ms);
    }
    Ok(config)
}

/// Prints the reply to `command` the way redis-cli does: INFO's text raw, everything else
/// formatted. A closed stdout (`| head`) is not an error worth a panic.
pub fn print_reply(command: &[u8], reply: &Reply) {
    let mut stdout = std::io::stdout().lock();
    match reply {
        Reply::Bulk(Some(text)) if command.eq_ignore_ascii_case(b"info") => {
            let text = String::from_utf8_lossy(text).replace("\r\n", "\n");
            let _ = write!(stdout, "{text}");
        }
        _ => {
            let _ = writeln!(stdout, "{}", format_reply(reply));
        }
    }
    let _ = stdout.flush();
}

/// The exit code and message for a call that got no reply.
pub fn describe_failure(error: &ClientError) -> (u8, String) {
    match error {
        ClientError::Unavailable { .. } => {
            (EXIT_UNAVAILABLE, format!("Could not reach the cluster: {error}"))
        }
        other => (EXIT_ERROR, format!("(error) {other}")),
    }
}
