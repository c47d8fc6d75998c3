//! Conformance against the official Python SDK (`metered-realtime`, PyPI): runs
//! `tests/conformance/python_sdk_conformance.py` through `run.sh` against the real
//! `meshcall serve` binary. The venv lives outside the repository (`$MESHCALL_PYVENV`, default
//! `~/.cache/meshcall/pyvenv`); `scripts/test` creates it before entering the network namespace.

use std::process::Command;

#[test]
fn official_python_sdk_passes_every_scenario() {
    let venv = std::env::var("MESHCALL_PYVENV").unwrap_or_else(|_| {
        format!(
            "{}/.cache/meshcall/pyvenv",
            std::env::var("HOME").unwrap_or_else(|_| "/root".into())
        )
    });
    let out = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/conformance/run.sh"
        ))
        .env("MESHCALL", env!("CARGO_BIN_EXE_meshcall"))
        .env("PYVENV", &venv)
        .output()
        .expect("run.sh starts");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    let passes = stdout.lines().filter(|l| l.starts_with("PASS ")).count();
    let fails: Vec<&str> = stdout.lines().filter(|l| l.starts_with("FAIL ")).collect();
    assert!(
        out.status.success() && fails.is_empty(),
        "conformance failed (exit {:?}):\n{}\n--- stderr ---\n{stderr}",
        out.status.code(),
        fails.join("\n")
    );
    assert!(
        passes >= 10,
        "expected at least 10 scenarios, saw {passes}:\n{stdout}"
    );
}
