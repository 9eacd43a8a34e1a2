//! The interactive prompt: redis-cli style, with line editing and a history file.

use std::path::PathBuf;

use quorumkv::client::{Client, ClientConfig};
use quorumkv::protocol::resp::split_inline_args;
use rustyline::error::ReadlineError;
use rustyline::history::DefaultHistory;
use rustyline::{Config, Editor};

use super::{describe_failure, print_reply, EXIT_ERROR, EXIT_OK};

/// Most lines kept in the history file.
pub const MAX_HISTORY_ENTRIES: usize = 1_000;
/// The history file's name, in the home directory.
pub const HISTORY_FILE_NAME: &str = ".quorumkv_history";

/// Where the history lives: `$HOME/.quorumkv_history`, or nowhere if HOME is unset.
fn history_path() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|home| !home.is_empty())
        .map(|home| PathBuf::from(home).join(HISTORY_FILE_NAME))
}

/// Runs the prompt until `quit`, `exit`, end of input or Ctrl-C; returns the exit code.
pub fn run(config: ClientConfig) -> u8 {
    let mut client = match Client::new(config) {
        Ok(client) => client,
        Err(error) => {
            eprintln!("{error}");
            return EXIT_ERROR;
        }
    };
    let editor_config = match Config::builder().max_history_size(MAX_HISTORY_ENTRIES) {
        Ok(builder) => builder.auto_add_history(false).build(),
        Err(error) => {
            eprintln!("cannot set up line editing: {error}");
            return EXIT_ERROR;
        }
    };
    let mut editor: Editor<(), DefaultHistory> = match Editor::with_config(editor_config) {
        Ok(editor) => editor,
        Err(error) => {
            eprintln!("cannot set up line editing: {error}");
            return EXIT_ERROR;
        }
    };
    let history = history_path();
    // A missing or unreadable history file only means starting without history.
    if let Some(path) = &history {
        let _ = editor.load_history(path);
    }
    loop {
        let prompt = format!("{}> ", client.current_server());
        let line = match editor.readline(&prompt) {
            Ok(line) => line,
            Err(ReadlineError::Eof | ReadlineError::Interrupted) => return EXIT_OK,
            Err(error) => {
                eprintln!("{error}");
                return EXIT_ERROR;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        let _ = editor.add_history_entry(line.as_str());
        // Saved after every line, as redis-cli does, so a killed prompt keeps what was typed.
        if let Some(path) = &history {
            let _ = editor.save_history(path);
        }
        let args = match split_inline_args(line.as_bytes()) {
            Ok(args) if args.is_empty() => continue,
            Ok(args) => args,
            Err(_) => {
                println!("Invalid argument(s)");
                continue;
            }
        };
        if args[0].eq_ignore_ascii_case(b"quit") || args[0].eq_ignore_ascii_case(b"exit") {
            return EXIT_OK;
        }
        match client.call(&args) {
            Ok(reply) => print_reply(&args[0], &reply),
            Err(error) => eprintln!("{}", describe_failure(&error).1),
        }
    }
}
