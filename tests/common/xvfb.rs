//! A private Xvfb for the tests that need an X server (screen capture, the app window).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// An Xvfb child process, killed on drop. Xvfb picks a free display number itself and reports
/// it on `-displayfd` once it accepts connections, so parallel runs and a developer's own X
/// servers never collide.
pub struct Xvfb {
    child: Child,
    pub display: String,
}

impl Xvfb {
    /// Starts Xvfb with one screen per `WxH` size. `None` when the binary is not installed.
    pub fn start(screens: &[&str]) -> Option<Xvfb> {
        let mut cmd = Command::new("Xvfb");
        cmd.args(["-displayfd", "1"]);
        for (i, size) in screens.iter().enumerate() {
            cmd.args(["-screen", &i.to_string(), &format!("{size}x24")]);
        }
        let spawned = cmd
            .args(["-nolisten", "tcp"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => panic!("starting Xvfb: {e}"),
        };
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(l) if !l.trim().is_empty() => l,
            other => {
                let _ = child.kill();
                panic!("Xvfb did not report a display: {other:?}");
            }
        };
        Some(Xvfb {
            child,
            display: format!(":{}", line.trim()),
        })
    }

    /// [`Xvfb::start`], or a visible "SKIPPED" line when Xvfb is not installed.
    pub fn start_or_skip(screens: &[&str]) -> Option<Xvfb> {
        let x = Xvfb::start(screens);
        if x.is_none() {
            eprintln!("SKIPPED: the Xvfb binary is not installed (apt-get install xvfb)");
        }
        x
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
