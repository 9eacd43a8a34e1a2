//! `quorumkv-cli snapshot save FILE`: a backup of the whole state, downloaded from the leader.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use quorumkv::client::{Client, ClientConfig};
use quorumkv::protocol::raft::SnapshotMeta;
use quorumkv::protocol::resp::Reply;
use quorumkv::storage::snapshot_file::SnapshotFileWriter;

use super::{describe_failure, EXIT_ERROR, EXIT_OK};

/// `snapshot`'s arguments.
#[derive(Parser, Debug)]
#[command(name = "quorumkv-cli snapshot", about = "Back up the whole state to a file")]
pub struct SnapshotArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand, Debug)]
enum Action {
    /// Save a consistent snapshot, taken at one applied index, to FILE (written atomically;
    /// `quorumkv-server restore FILE ...` starts a new cluster from it).
    Save {
        /// Where to write it.
        file: PathBuf,
    },
}

/// How long BEGIN may take: the server's own bound on taking the image.
const BEGIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// What `SNAPSHOT BEGIN` answered.
struct Begun {
    token: u64,
    meta: SnapshotMeta,
    size: u64,
    crc32: u32,
    keys: u64,
    digest: String,
}

fn begun(reply: Reply) -> Result<Begun, String> {
    let int = |r: &Reply| match r {
        Reply::Integer(n) => u64::try_from(*n).map_err(|_| format!("negative field {n}")),
        other => Err(format!("unexpected field {other:?}")),
    };
    match reply {
        Reply::Array(Some(items)) if items.len() == 7 => {
            let digest = match &items[6] {
                Reply::Bulk(Some(d)) => String::from_utf8_lossy(d).into_owned(),
                other => return Err(format!("unexpected digest {other:?}")),
            };
            Ok(Begun {
                token: int(&items[0])?,
                meta: SnapshotMeta { index: int(&items[1])?, term: int(&items[2])? },
                size: int(&items[3])?,
                crc32: u32::try_from(int(&items[4])?).map_err(|_| "checksum out of range".to_string())?,
                keys: int(&items[5])?,
                digest,
            })
        }
        Reply::Error(e) => Err(e),
        other => Err(format!("SNAPSHOT BEGIN answered {other:?}")),
    }
}

/// Runs `snapshot save`; exit 0 saved, 1 failed, 2 no server reachable.
pub fn run(args: &SnapshotArgs, config: ClientConfig) -> u8 {
    let Action::Save { file } = &args.action;
    let mut finder = match Client::new(config.clone()) {
        Ok(client) => client,
        Err(e) => {
            eprintln!("{e}");
            return EXIT_ERROR;
        }
    };
    // The image is taken where the download is served: the leader if one is known.
    let leader = match finder.info_map() {
        Ok(info) => info.get("leader_client_addr").filter(|a| !a.is_empty()).cloned(),
        Err(e) => {
            let (code, message) = describe_failure(&e);
            eprintln!("{message}");
            return code;
        }
    };
    let server = leader.unwrap_or_else(|| finder.current_server().to_string());
    let pinned = ClientConfig { servers: vec![server.clone()], ..config };
    // BEGIN waits while the server encodes the whole state (seconds per GB): one long call,
    // never retried (a retry would only take a second image).
    let begin_ms = BEGIN_TIMEOUT.as_millis() as u64;
    let begin_config =
        ClientConfig { request_timeout_ms: begin_ms, io_timeout_ms: begin_ms, ..pinned.clone() };
    let (mut beginner, mut client) = match (Client::new(begin_config), Client::new(pinned)) {
        (Ok(beginner), Ok(client)) => (beginner, client),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("{e}");
            return EXIT_ERROR;
        }
    };
    let call = |client: &mut Client, args: &[&[u8]]| {
        let args: Vec<Vec<u8>> = args.iter().map(|a| a.to_vec()).collect();
        client.call(&args).map_err(|e| describe_failure(&e))
    };
    let begun = match call(&mut beginner, &[b"SNAPSHOT", b"BEGIN"]).map(begun) {
        Ok(Ok(begun)) => begun,
        Ok(Err(why)) => {
            eprintln!("snapshot save: {why}");
            return EXIT_ERROR;
        }
        Err((code, message)) => {
            eprintln!("{message}");
            return code;
        }
    };
    let token = begun.token.to_string();
    let outcome = download(&mut client, &call, &begun, &token, file);
    // Let the server drop its copy whatever happened here (it would after a minute anyway).
    let _ = call(&mut client, &[b"SNAPSHOT", b"END", token.as_bytes()]);
    match outcome {
        Ok(()) => {
            println!(
                "snapshot of {server} saved to {}: index {}, term {}, {} bytes, {} keys, state_digest {}",
                file.display(),
                begun.meta.index,
                begun.meta.term,
                begun.size,
                begun.keys,
                begun.digest
            );
            EXIT_OK
        }
        Err((code, message)) => {
            eprintln!("snapshot save: {message}");
            code
        }
    }
}

type CallResult = Result<Reply, (u8, String)>;

fn download(
    client: &mut Client,
    call: &impl Fn(&mut Client, &[&[u8]]) -> CallResult,
    begun: &Begun,
    token: &str,
    file: &std::path::Path,
) -> Result<(), (u8, String)> {
    let failed = |e: quorumkv::storage::StorageError| (EXIT_ERROR, e.to_string());
    let mut writer = SnapshotFileWriter::create(file, begun.meta, begun.size).map_err(failed)?;
    let bar = ProgressBar::new(begun.size);
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec}") {
        bar.set_style(style);
    }
    let mut crc = crc32fast::Hasher::new();
    let mut offset = 0u64;
    // On any early return the writer is dropped unfinished and its temp file goes with it.
    while offset < begun.size {
        let at = offset.to_string();
        let chunk = match call(client, &[b"SNAPSHOT", b"CHUNK", token.as_bytes(), at.as_bytes()])? {
            Reply::Bulk(Some(chunk)) if !chunk.is_empty() => chunk,
            Reply::Error(e) => return Err((EXIT_ERROR, e)),
            other => return Err((EXIT_ERROR, format!("SNAPSHOT CHUNK at {offset} answered {other:?}"))),
        };
        crc.update(&chunk);
        writer.write(&chunk).map_err(failed)?;
        offset += chunk.len() as u64;
        bar.set_position(offset);
    }
    bar.finish_and_clear();
    if crc.finalize() != begun.crc32 {
        return Err((EXIT_ERROR, "the downloaded image does not match its checksum; nothing written".into()));
    }
    writer.finish().map_err(failed)
}
