//! The layer rule, checked on the source text: the desktop UI talks to the call engine only,
//! so nothing under `src/ui` may name the `media` or `peer` modules (the types it needs are
//! re-exported by `engine::api`).

use std::path::Path;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn the_ui_reaches_media_and_peers_only_through_the_engine() {
    let ui = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/ui");
    let mut files = Vec::new();
    rust_files(&ui, &mut files);
    assert!(files.len() >= 5, "found the UI sources: {files:?}");
    let mut offences = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read source");
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if [
                "crate::media",
                "crate::peer",
                "meshcall::media",
                "meshcall::peer",
            ]
            .iter()
            .any(|m| code.contains(m))
            {
                offences.push(format!("{}:{}: {}", f.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        offences.is_empty(),
        "the UI must use engine::api instead:\n{}",
        offences.join("\n")
    );
}
