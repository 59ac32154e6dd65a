//! Helpers for tests that run the real `eventfleet` binary.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
pub fn eventfleet() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_eventfleet"));
    // Children must not inherit the developer's settings; each test passes what it needs.
    for (name, _) in std::env::vars() {
        if name.starts_with("EVENTFLEET_") {
            cmd.env_remove(name);
        }
    }
    cmd.env("EVENTFLEET_LOG_FORMAT", "json");
    // Tests run in parallel: never the fixed default metrics port.
    cmd.env("EVENTFLEET_METRICS_LISTEN", "127.0.0.1:0");
    cmd
}

/// Runs a command to completion with `--data-dir`, asserting success; returns stdout.
pub fn run_ok(data_dir: &Path, args: &[&str]) -> String {
    let out = run(data_dir, args);
    assert!(out.status.success(), "eventfleet {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

/// Runs a command to completion with `--data-dir`.
pub fn run(data_dir: &Path, args: &[&str]) -> Output {
    eventfleet().args(args).arg("--data-dir").arg(data_dir).output().expect("run eventfleet")
}

/// Starts a long-running command and waits for its "listening on" line; returns the child and the base URL.
pub fn spawn_listening(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (Child, String) {
    let mut cmd = eventfleet();
    cmd.args(args).arg("--data-dir").arg(data_dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("spawn eventfleet");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("listening on")
                && let Some(url) = line.split_whitespace().find(|w| w.starts_with("http://"))
            {
                let _ = tx.send(url.to_owned());
            }
        }
    });
    let base = rx.recv_timeout(Duration::from_secs(30)).expect("the process printed where it listens");
    (child, base)
}

/// Starts a long-running command with `env` and returns the child and the first `http://` URL on a stdout line
/// containing `marker` (`listening on`, `worker started`).
pub fn spawn_marked(env: &[(String, String)], data_dir: &Path, args: &[&str], marker: &'static str) -> (Child, String) {
    let mut cmd = eventfleet();
    cmd.args(args).arg("--data-dir").arg(data_dir).envs(env.iter().map(|(k, v)| (k, v)));
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("spawn eventfleet");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains(marker)
                && let Some(url) = line.split_whitespace().find(|w| w.starts_with("http://"))
            {
                let _ = tx.send(url.to_owned());
            }
        }
    });
    let url = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| panic!("{args:?} printed {marker:?}"));
    (child, url)
}

/// The environment of a process on the aws backend against the emulator at `endpoint`, on the queues and tables
/// of `prefix`, with no AWS configuration of the machine leaking in.
pub fn aws_env(endpoint: &str, prefix: &str) -> Vec<(String, String)> {
    [
        ("EVENTFLEET_BACKEND", "aws"),
        ("EVENTFLEET_AWS_ENDPOINT_URL", endpoint),
        ("EVENTFLEET_NAME_PREFIX", prefix),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_CONFIG_FILE", "/dev/null"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Starts `eventfleet worker` and waits for its start line.
pub fn spawn_worker(data_dir: &Path, env: &[(&str, &str)]) -> Child {
    let mut cmd = eventfleet();
    cmd.arg("worker").arg("--data-dir").arg(data_dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("spawn worker");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("worker started") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(30)).expect("the worker started");
    child
}

/// Sends SIGTERM and waits for the exit; returns the exit code.
pub fn terminate(child: &mut Child) -> Option<i32> {
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status.code();
        }
        assert!(Instant::now() < deadline, "process did not exit within 30 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `check` until it returns `Some` or the deadline passes.
pub fn poll<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Validates `cards` with Microsoft's adaptivecards SDK (tests/teams/validate.cjs; `scripts/test` installs it).
pub fn validate_cards(cards: &[serde_json::Value]) {
    use std::io::Write;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/teams");
    assert!(
        dir.join("node_modules/adaptivecards").is_dir(),
        "the card validator is not installed: run scripts/browser install (scripts/test does)"
    );
    let mut child = std::process::Command::new("node")
        .arg("validate.cjs")
        .current_dir(&dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("node runs");
    child.stdin.take().unwrap().write_all(serde_json::to_string(cards).unwrap().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the SDK found problems:\n{}{}\ncards: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        serde_json::to_string_pretty(cards).unwrap()
    );
}
