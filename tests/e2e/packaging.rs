//! Packaging: the Debian package's inputs stay consistent (fast, runs with every `cargo test`),
//! and — `#[ignore]`d by default because it needs a release build (about 10 minutes on 2 cores)
//! and cargo-deb (`cargo install` from crates.io the first time) — the whole
//! `packaging/build-deb.sh` run: build, unpack into a scratch root, `meshcall --version`, the
//! window under Xvfb. Run it outside the test namespace (it may need the network for
//! `cargo install`; the script makes its own loopback-only namespace for the app):
//!
//! ```sh
//! cargo test --test e2e packaging -- --ignored
//! ```

use std::path::Path;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn deb_metadata() -> toml::Table {
    let text = std::fs::read_to_string(Path::new(ROOT).join("Cargo.toml")).expect("Cargo.toml");
    let manifest: toml::Table = text.parse().expect("Cargo.toml parses");
    manifest["package"]["metadata"]["deb"]
        .as_table()
        .expect("[package.metadata.deb]")
        .clone()
}

/// `Key=Value` lines of the `[Desktop Entry]` group.
fn desktop_entry() -> std::collections::HashMap<String, String> {
    let text = std::fs::read_to_string(Path::new(ROOT).join("packaging/meshcall.desktop"))
        .expect("packaging/meshcall.desktop");
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("[Desktop Entry]"),
        "the group comes first"
    );
    lines
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("not Key=Value: {l}"));
            (k.to_string(), v.to_string())
        })
        .collect()
}

#[test]
fn deb_assets_exist_and_fit_together() {
    let deb = deb_metadata();
    let assets = deb["assets"].as_array().expect("assets");
    let mut dests = Vec::new();
    for a in assets {
        let a = a.as_array().expect("[source, dest, mode]");
        let (src, dest) = (a[0].as_str().expect("src"), a[1].as_str().expect("dest"));
        // The binary is built by cargo-deb itself; everything else is in the repository.
        if !src.starts_with("target/release/") {
            assert!(Path::new(ROOT).join(src).is_file(), "asset {src} exists");
        }
        dests.push(format!("{dest}{}", src.rsplit('/').next().unwrap_or(src)));
    }
    for want in [
        "usr/bin/meshcall",
        "usr/share/applications/meshcall.desktop",
        "usr/share/icons/hicolor/256x256/apps/meshcall.png",
    ] {
        assert!(dests.iter().any(|d| d == want), "{want} in {dests:?}");
    }

    let entry = desktop_entry();
    assert_eq!(entry["Type"], "Application");
    assert_eq!(
        entry["Exec"], "meshcall",
        "the binary installed in /usr/bin"
    );
    assert_eq!(
        entry["Icon"], "meshcall",
        "the icon installed as .../apps/meshcall.png"
    );
    assert_eq!(entry["Terminal"], "false");
    // The window's WM_CLASS class is the app id set in src/ui/mod.rs.
    assert_eq!(entry["StartupWMClass"], "meshcall");
    let ui = std::fs::read_to_string(Path::new(ROOT).join("src/ui/mod.rs")).expect("ui");
    assert!(
        ui.contains(r#".with_app_id("meshcall")"#),
        "app id = StartupWMClass"
    );
    assert!(entry["Categories"].ends_with(';'));

    let icon = image::open(Path::new(ROOT).join("assets/meshcall.png")).expect("icon decodes");
    assert_eq!((icon.width(), icon.height()), (256, 256));
    assert!(icon.color().has_alpha(), "transparent corners");
}

/// winit and wgpu load these with dlopen, so cargo-deb's `$auto` cannot see them; a missing one
/// is a window that never opens on a minimal system. (Measured list: see Cargo.toml.)
#[test]
fn deb_depends_lists_the_libraries_loaded_at_run_time() {
    let deb = deb_metadata();
    let depends = deb["depends"].as_str().expect("depends");
    let listed: Vec<&str> = depends
        .split([',', '|'])
        .map(|d| d.split_whitespace().next().unwrap_or(""))
        .collect();
    assert!(listed.contains(&"$auto"), "linked libraries (libasound2 …)");
    for p in [
        "libx11-6",
        "libx11-xcb1",
        "libxcursor1",
        "libxi6",
        "libxkbcommon0",
        "libxkbcommon-x11-0",
        "libegl1",
        "libegl-mesa0",
        "libgl1-mesa-dri",
        "libwayland-client0",
    ] {
        assert!(listed.contains(&p), "{p} in depends: {depends}");
    }
}

/// The package built from the binary this test run already has (debug, DWARF stripped):
/// `build-deb.sh --binary` runs every check the release packaging runs — control fields, file
/// list, unpacked into a scratch root, `meshcall --version` from there, linked libraries,
/// dependencies satisfiable (`dpkg --dry-run -i`, root), the window opening under Xvfb and
/// closing on SIGTERM (root). Needs cargo-deb (`scripts/test` installs it); without it the
/// test says so and passes only outside CI.
#[test]
fn deb_of_this_build_unpacks_runs_and_opens_its_window() {
    let has_cargo_deb = std::process::Command::new("cargo")
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_cargo_deb {
        assert!(
            std::env::var_os("CI").is_none(),
            "cargo-deb is missing on CI (scripts/test installs it)"
        );
        eprintln!("skipped: cargo-deb is not installed (cargo install cargo-deb --version 3.8.0)");
        return;
    }
    let scratch = tempfile::tempdir().expect("temp dir");
    let out = std::process::Command::new(Path::new(ROOT).join("packaging/build-deb.sh"))
        .args(["--binary", env!("CARGO_BIN_EXE_meshcall")])
        .env("CARGO_TARGET_DIR", scratch.path())
        .env("CARGO_NET_OFFLINE", "true")
        .output()
        .expect("packaging/build-deb.sh runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "build-deb.sh failed:\n{stdout}\n{stderr}"
    );
    let deb = stdout.lines().last().unwrap_or_default();
    assert!(
        deb.ends_with("_amd64.deb"),
        "last line is the package: {deb}"
    );
    assert!(Path::new(deb).is_file(), "{deb} exists");
    for step in [
        "--version: meshcall ",
        "desktop-file-validate: ok",
        "satisfiable",
        "closed on SIGTERM, exit 0",
    ] {
        let optional = step.starts_with("desktop") || std::env::var_os("CI").is_none();
        assert!(
            stdout.contains(step) || optional,
            "build-deb.sh did not report {step:?}:\n{stdout}"
        );
    }
}

#[test]
#[ignore = "release build + cargo-deb: cargo test --test e2e packaging -- --ignored"]
fn deb_builds_unpacks_and_runs() {
    let out = std::process::Command::new(Path::new(ROOT).join("packaging/build-deb.sh"))
        .current_dir(ROOT)
        .output()
        .expect("packaging/build-deb.sh runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "build-deb.sh failed:\n{stdout}\n{stderr}"
    );
    let deb = stdout.lines().last().unwrap_or_default();
    assert!(deb.ends_with(".deb"), "the last line is the package: {deb}");
    assert!(stdout.contains(&format!(
        "--version: meshcall {}",
        env!("CARGO_PKG_VERSION")
    )));
}
