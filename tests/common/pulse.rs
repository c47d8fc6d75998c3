//! A private PulseAudio server for device tests: a 48 kHz null sink whose monitor is the
//! default source, on a socket in a temporary directory (point cpal at it with `PULSE_SERVER`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Pulse {
    child: Child,
    pub socket: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Pulse {
    /// Starts a private PulseAudio; `None` when the binary is missing.
    pub fn start() -> Option<Pulse> {
        let dir = tempfile::tempdir().expect("tempdir");
        let runtime = dir.path().join("runtime");
        std::fs::create_dir_all(&runtime).expect("runtime dir");
        let socket = dir.path().join("native");
        let pa = dir.path().join("test.pa");
        std::fs::write(
            &pa,
            format!(
                "load-module module-null-sink sink_name=meshcall_null rate=48000 \
                 sink_properties=device.description=MeshcallNull\n\
                 load-module module-native-protocol-unix socket={} auth-anonymous=1\n\
                 set-default-sink meshcall_null\n\
                 set-default-source meshcall_null.monitor\n",
                socket.display()
            ),
        )
        .expect("write .pa");
        let log = dir.path().join("pulseaudio.log");
        let log_file = std::fs::File::create(&log).expect("log file");
        let spawned = Command::new("pulseaudio")
            .arg("-n")
            .arg("-F")
            .arg(&pa)
            .args([
                "--exit-idle-time=-1",
                "--daemonize=no",
                "--system=false",
                "--use-pid-file=false",
                "--log-target=stderr",
            ])
            // A private home and runtime dir: no user configuration, no clash with a desktop
            // server, and writable when running as root in CI.
            .env("HOME", dir.path())
            .env("XDG_RUNTIME_DIR", &runtime)
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .env_remove("PULSE_SERVER")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn();
        let child = match spawned {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => panic!("starting pulseaudio: {e}"),
        };
        let mut pulse = Pulse {
            child,
            socket,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while !pulse.socket.exists() {
            if let Ok(Some(status)) = pulse.child.try_wait() {
                panic!("pulseaudio exited ({status}):\n{}", pulse.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "pulseaudio socket never appeared:\n{}",
                pulse.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(pulse)
    }

    /// Adds a null sink named `name` (a new speaker, and its monitor a new microphone), as if
    /// a headset were plugged in.
    pub fn plug_in(&self, name: &str) {
        let status = Command::new("pactl")
            .env("PULSE_SERVER", format!("unix:{}", self.socket.display()))
            .args([
                "load-module",
                "module-null-sink",
                &format!("sink_name={name}"),
                "rate=48000",
                &format!("sink_properties=device.description={name}"),
            ])
            .stdout(Stdio::null())
            .status()
            .expect("pactl runs (apt-get install pulseaudio-utils)");
        assert!(status.success(), "pactl load-module: {status}");
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Pulse {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Pulse {
    /// Starts a private server, points this process's cpal at it (`PULSE_SERVER`) and waits
    /// until cpal lists its null sink. `None` when the binary is missing. Only for test binaries
    /// holding a single test: the environment is process-wide.
    pub fn start_for_this_process() -> Option<Pulse> {
        let pulse = Pulse::start()?;
        // SAFETY: callers are single-test binaries; cpal reads the variable when it connects.
        unsafe { std::env::set_var("PULSE_SERVER", format!("unix:{}", pulse.socket.display())) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !meshcall::media::devices::list_speakers()
            .unwrap_or_default()
            .iter()
            .any(|d| d.id == "pulseaudio:meshcall_null")
        {
            assert!(
                Instant::now() < deadline,
                "PulseAudio never answered:\n{}",
                pulse.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(pulse)
    }
}
