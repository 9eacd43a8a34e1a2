//! `src/protocol/` stays pure (DESIGN.md): no runtime, clock, socket, file, thread or unseeded RNG.

use std::path::Path;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src/protocol") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn protocol_layer_has_no_io_clock_or_runtime() {
    let forbidden = [
        "actix",
        "tokio",
        "std::time",
        "Instant::now",
        "SystemTime",
        "std::net",
        "std::fs",
        "std::thread",
        concat!("thread::", "sleep"),
        "thread_rng",
        "std::process",
    ];
    let mut files = Vec::new();
    rust_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src/protocol"), &mut files);
    assert!(files.len() >= 10, "found only {} files: is the path right?", files.len());
    let mut hits = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read file");
        for (n, line) in text.lines().enumerate() {
            for word in forbidden {
                if line.contains(word) {
                    hits.push(format!("{}:{}: {word}", file.display(), n + 1));
                }
            }
        }
    }
    assert!(hits.is_empty(), "impure code in src/protocol:\n{}", hits.join("\n"));
}
