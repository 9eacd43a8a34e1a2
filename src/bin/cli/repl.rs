//! The interactive prompt: redis-cli style, with line editing, a history file, `help` and completion
//! of command names, both drawn from the server's command table.

use std::borrow::Cow;
use std::io::Write;
use std::path::PathBuf;

use quorumkv::client::{Client, ClientConfig};
use quorumkv::protocol::command_table::{self, command_help, command_names, help_line, help_text, COMMANDS};
use quorumkv::protocol::resp::split_inline_args;
use rustyline::completion::Completer;
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{Config, Context, Editor, Helper};

use super::{describe_failure, print_reply, EXIT_ERROR, EXIT_OK};

/// Most lines kept in the history file.
pub const MAX_HISTORY_ENTRIES: usize = 1_000;
/// The history file's name, in the home directory.
pub const HISTORY_FILE_NAME: &str = ".quorumkv_history";

/// Words the prompt itself understands, offered for completion beside the server's commands.
const PROMPT_WORDS: &[&str] = &["exit", "help"];

/// Line-editing help for the prompt: completes the command name (the first word) and, once a known
/// command and a space are typed, hints the rest of its syntax.
struct CommandHelper;

impl Completer for CommandHelper {
    type Candidate = String;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<String>)> {
        let before = line.get(..pos).unwrap_or(line);
        let start = before.len() - before.trim_start().len();
        let word = &before[start..];
        if word.contains(char::is_whitespace) {
            // Past the first word: arguments are keys and values, nothing to complete.
            return Ok((pos, Vec::new()));
        }
        let mut candidates: Vec<String> = command_names()
            .chain(PROMPT_WORDS.iter().copied())
            .filter(|name| {
                name.len() >= word.len()
                    && name.as_bytes()[..word.len()].eq_ignore_ascii_case(word.as_bytes())
            })
            .map(str::to_ascii_uppercase)
            .collect();
        candidates.sort_unstable();
        Ok((start, candidates))
    }
}

impl Hinter for CommandHelper {
    type Hint = String;

    fn hint(&self, line: &str, pos: usize, _ctx: &Context<'_>) -> Option<String> {
        if pos < line.len() {
            return None;
        }
        // Only right after `NAME `: once arguments are typed the full syntax would mislead.
        let name = line.trim_start().strip_suffix(' ')?;
        if name.is_empty() || name.contains(char::is_whitespace) {
            return None;
        }
        let spec = command_table::lookup(name.as_bytes())?;
        let arguments = spec.syntax.split_once(' ')?.1;
        Some(arguments.to_string())
    }
}

impl Highlighter for CommandHelper {
    fn highlight_hint<'h>(&self, hint: &'h str) -> Cow<'h, str> {
        // Grey, as redis-cli shows its hints.
        Cow::Owned(format!("\x1b[90m{hint}\x1b[0m"))
    }
}

impl Validator for CommandHelper {}

impl Helper for CommandHelper {}

/// Writes `text` to stdout; a closed stdout (`| head`) is not worth a panic.
fn print_text(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

/// What `help [NAME|@GROUP]` prints: every command, one command's syntax and summary, or the
/// commands of one group (`@keyspace` or Redis's `@generic`).
fn help_for(topic: Option<&[u8]>) -> String {
    let Some(topic) = topic else {
        return help_text();
    };
    if let Some(group) = topic.strip_prefix(b"@") {
        let group = if group.eq_ignore_ascii_case(b"generic") { &b"keyspace"[..] } else { group };
        let lines: String = COMMANDS
            .iter()
            .filter(|spec| spec.group.as_bytes().eq_ignore_ascii_case(group))
            .map(help_line)
            .collect();
        if lines.is_empty() {
            return format!("unknown group '{}'\n", String::from_utf8_lossy(topic));
        }
        return lines;
    }
    match command_table::lookup(topic) {
        Some(spec) => command_help(spec),
        None => format!("unknown command '{}'\n", String::from_utf8_lossy(topic)),
    }
}

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
    let mut editor: Editor<CommandHelper, DefaultHistory> = match Editor::with_config(editor_config) {
        Ok(editor) => editor,
        Err(error) => {
            eprintln!("cannot set up line editing: {error}");
            return EXIT_ERROR;
        }
    };
    editor.set_helper(Some(CommandHelper));
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
        if args[0].eq_ignore_ascii_case(b"help") {
            print_text(&help_for(args.get(1).map(Vec::as_slice)));
            continue;
        }
        match client.call(&args) {
            Ok(reply) => print_reply(&args[0], &reply),
            Err(error) => eprintln!("{}", describe_failure(&error).1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(line: &str) -> (usize, Vec<String>) {
        let history = DefaultHistory::new();
        let context = Context::new(&history);
        CommandHelper.complete(line, line.len(), &context).expect("completion never fails")
    }

    fn hint(line: &str) -> Option<String> {
        let history = DefaultHistory::new();
        let context = Context::new(&history);
        CommandHelper.hint(line, line.len(), &context)
    }

    #[test]
    fn completes_the_first_word_in_upper_case_whatever_the_case_typed() {
        assert_eq!(
            complete("ge"),
            (0, ["GET", "GETDEL", "GETEX", "GETRANGE", "GETSET", "GETVER"].map(String::from).to_vec())
        );
        assert_eq!(complete("  mSe"), (2, vec!["MSET".to_string(), "MSETNX".to_string()]));
        assert_eq!(complete("hel"), (0, vec!["HELLO".to_string(), "HELP".to_string()]));
        assert_eq!(complete("zz"), (0, Vec::new()));
        assert_eq!(complete("").1.len(), COMMANDS.len() + PROMPT_WORDS.len());
    }

    #[test]
    fn does_not_complete_arguments() {
        assert_eq!(complete("get ke"), (6, Vec::new()));
    }

    #[test]
    fn hints_the_arguments_after_a_known_command() {
        assert_eq!(hint("set ").as_deref(), Some(&command_table::lookup(b"set").expect("set").syntax[4..]));
        assert_eq!(hint("GETVER ").as_deref(), Some("key"));
        assert_eq!(hint("get"), None);
        assert_eq!(hint("get k"), None);
        assert_eq!(hint("nosuch "), None);
    }

    #[test]
    fn help_for_all_one_command_and_a_group() {
        assert_eq!(help_for(None), help_text());
        assert!(help_for(Some(b"SetVer")).contains("SETVER key version value"));
        assert!(help_for(Some(b"nosuch")).contains("unknown command"));
        let transactions = help_for(Some(b"@transactions"));
        assert_eq!(transactions.lines().count(), 5);
        assert_eq!(help_for(Some(b"@generic")), help_for(Some(b"@keyspace")));
        assert!(help_for(Some(b"@nosuch")).contains("unknown group"));
    }
}
