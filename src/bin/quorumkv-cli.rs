//! `quorumkv-cli`: run one command, an interactive prompt, or `bench`, against a quorumkv cluster.
//!
//! ```text
//! quorumkv-cli [--servers HOST:PORT,...] [COMMAND [ARGS...]]
//! quorumkv-cli bench [--clients N] [--ops N | --duration SECS] [--value-size B]
//!                    [--keys N] [--write-ratio F] [--pipeline N] [--json]
//! quorumkv-cli member list | add ID PEER-ADDR CLIENT-ADDR | promote ID | remove ID
//! quorumkv-cli leader transfer ID
//! quorumkv-cli status [--json] | check [...] | snapshot save FILE
//! ```
//!
//! Exit codes: 0 success, 1 an error reply (or a usage error), 2 no server could be reached in time.
//! `QUORUMKV_CLI_TIMEOUT_MS` overrides the per-request deadline (default 10 000 ms).

mod cli;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser;
use quorumkv::client::{Client, ClientConfig, DEFAULT_SERVERS};

use cli::bench::BenchArgs;
use cli::{describe_failure, print_reply, EXIT_ERROR, EXIT_OK};

const AFTER_HELP: &str = "\
With COMMAND, runs it and prints the reply as redis-cli does; without, starts an interactive prompt
(history in ~/.quorumkv_history). `quorumkv-cli bench --help` describes the benchmark.
Membership: `member list`, `member add ID PEER-ADDR CLIENT-ADDR`, `member promote ID`,
`member remove ID`, `member change OP...`, `leader transfer ID` (each answered once in force).
`status`, `check` and `snapshot save FILE` have their own --help.

Exit codes: 0 success, 1 an error reply or a usage error, 2 no server could be reached in time.
Environment: QUORUMKV_CLI_TIMEOUT_MS, the deadline of each request in milliseconds (default 10000).";

/// `quorumkv-cli` arguments before the command.
#[derive(Debug, Parser)]
#[command(name = "quorumkv-cli", version, about = "The quorumkv client", after_help = AFTER_HELP)]
struct Cli {
    /// Client addresses of the replicas, comma-separated; the leader is found among them.
    #[arg(long, value_delimiter = ',', value_name = "HOST:PORT,...", default_values_t = DEFAULT_SERVERS.map(String::from))]
    servers: Vec<String>,
    /// The command and its arguments (raw bytes, as given), or `bench` and its options.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "COMMAND [ARGS...]")]
    command: Vec<OsString>,
}

/// An argument's bytes as the OS gave them, so binary values reach the server unchanged.
#[cfg(unix)]
fn os_bytes(arg: OsString) -> Vec<u8> {
    use std::os::unix::ffi::OsStringExt;
    arg.into_vec()
}

/// An argument's bytes (lossy where the platform's strings are not bytes).
#[cfg(not(unix))]
fn os_bytes(arg: OsString) -> Vec<u8> {
    arg.to_string_lossy().into_owned().into_bytes()
}

/// Parses arguments with `P`; help and version exit 0, usage errors exit 1 (2 means "unreachable").
fn parse_or_exit<P: Parser, I: IntoIterator<Item = OsString>>(args: I) -> Result<P, ExitCode> {
    P::try_parse_from(args).map_err(|error| {
        let _ = error.print();
        ExitCode::from(if error.use_stderr() { EXIT_ERROR } else { EXIT_OK })
    })
}

fn config_or_exit(servers: &[String]) -> Result<ClientConfig, ExitCode> {
    cli::client_config(servers).map_err(|message| {
        eprintln!("{message}");
        ExitCode::from(EXIT_ERROR)
    })
}

/// Parses a subcommand's own arguments and runs it against `servers`.
fn subcommand<P: Parser>(
    servers: &[String],
    name: &str,
    rest: impl Iterator<Item = OsString>,
    run: impl FnOnce(P, ClientConfig) -> u8,
) -> ExitCode {
    let args =
        match parse_or_exit(std::iter::once(OsString::from(format!("quorumkv-cli {name}"))).chain(rest)) {
            Ok(args) => args,
            Err(code) => return code,
        };
    match config_or_exit(servers) {
        Ok(config) => ExitCode::from(run(args, config)),
        Err(code) => code,
    }
}

fn run_once(config: ClientConfig, args: Vec<Vec<u8>>) -> u8 {
    let mut client = match Client::new(config) {
        Ok(client) => client,
        Err(error) => {
            eprintln!("{error}");
            return EXIT_ERROR;
        }
    };
    match client.call(&args) {
        Ok(reply) => {
            print_reply(&args[0], &reply);
            if matches!(reply, quorumkv::protocol::resp::Reply::Error(_)) {
                EXIT_ERROR
            } else {
                EXIT_OK
            }
        }
        Err(error) => {
            let (code, message) = describe_failure(&error);
            eprintln!("{message}");
            code
        }
    }
}

fn main() -> ExitCode {
    let cli: Cli = match parse_or_exit(std::env::args_os()) {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let mut command = cli.command.into_iter();
    let Some(name) = command.next() else {
        return match config_or_exit(&cli.servers) {
            Ok(config) => ExitCode::from(cli::repl::run(config)),
            Err(code) => code,
        };
    };
    if name == "bench" {
        let bench: BenchArgs =
            match parse_or_exit(std::iter::once(OsString::from("quorumkv-cli bench")).chain(command)) {
                Ok(bench) => bench,
                Err(code) => return code,
            };
        let servers = bench.servers.clone().unwrap_or(cli.servers);
        return match config_or_exit(&servers) {
            Ok(config) => ExitCode::from(cli::bench::run(&bench, config)),
            Err(code) => code,
        };
    }
    if name == "check" {
        return subcommand(&cli.servers, "check", command, |args: cli::check::CheckArgs, config| {
            cli::check::run(&args, config)
        });
    }
    if name == "snapshot" {
        return subcommand(&cli.servers, "snapshot", command, |args: cli::snapshot::SnapshotArgs, config| {
            cli::snapshot::run(&args, config)
        });
    }
    if name == "status" {
        return subcommand(&cli.servers, "status", command, |args: cli::status::StatusArgs, config| {
            cli::status::run(&args, &config)
        });
    }
    let args = std::iter::once(name).chain(command).map(os_bytes).collect();
    match config_or_exit(&cli.servers) {
        Ok(config) => ExitCode::from(run_once(config, args)),
        Err(code) => code,
    }
}
