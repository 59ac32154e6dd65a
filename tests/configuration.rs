//! Configuration as the binary reads it: in `dev`, a flag wins over its variable, and the variables a service
//! reads (`EVENTFLEET_LISTEN`, `EVENTFLEET_WORKER_CONCURRENCY`) are read by `dev` too.

mod support;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use support::{eventfleet, terminate};

/// Starts `dev` and returns its banner: every stdout line up to the one saying where it listens.
fn dev_banner(args: &[&str], env: &[(&str, &str)]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = eventfleet();
    cmd.arg("dev").args(args).arg("--data-dir").arg(dir.path());
    // Short polls: the workers notice the shutdown at their next poll.
    cmd.env("EVENTFLEET_RECEIVE_WAIT_S", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("spawn dev");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let listening = line.contains("listening on");
            let _ = tx.send(line);
            if listening {
                break;
            }
        }
    });
    let mut banner = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) {
        let listening = line.contains("listening on");
        banner.push(line);
        if listening {
            break;
        }
    }
    assert_eq!(terminate(&mut child), Some(0), "dev exits 0 on SIGTERM; its banner: {banner:?}");
    banner
}

fn listening_port(banner: &[String]) -> u16 {
    let line = banner.iter().find(|l| l.contains("listening on")).unwrap_or_else(|| panic!("no address: {banner:?}"));
    let url = line.split_whitespace().find(|w| w.starts_with("http://")).unwrap();
    url.rsplit(':').next().unwrap().parse().unwrap()
}

#[test]
fn dev_listens_where_the_flag_says_even_when_the_variable_says_otherwise() {
    // The variable names a port that is taken: if it won, dev could not start.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    let banner = dev_banner(&["--listen", "127.0.0.1:0"], &[("EVENTFLEET_LISTEN", &taken_addr)]);
    assert_ne!(listening_port(&banner), taken.local_addr().unwrap().port(), "{banner:?}");
}

#[test]
fn dev_runs_the_configured_number_of_handlers_unless_the_flag_says_otherwise() {
    let from_env = dev_banner(&["--listen", "127.0.0.1:0"], &[("EVENTFLEET_WORKER_CONCURRENCY", "3")]);
    assert!(from_env[0].contains("ingress and 3 workers"), "{from_env:?}");
    let from_flag =
        dev_banner(&["--listen", "127.0.0.1:0", "--workers", "5"], &[("EVENTFLEET_WORKER_CONCURRENCY", "3")]);
    assert!(from_flag[0].contains("ingress and 5 workers"), "{from_flag:?}");
}

#[test]
fn a_bad_routes_file_stops_the_worker_naming_the_route() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("routes.toml");
    let head = "[[route]]\nname = \"bot\"\nmatch = { kind = \"github.*\" }\n";
    let cases = [
        (format!("{head}url = \"https://bot.internal/events\"\nretries = 3\n"), "unknown field `retries`"),
        (format!("{head}url = \"bot.internal/events\"\n"), "not a URL"),
        (format!("{head}url = \"https://bot.internal/events\"\nsecret_env = \"EVENTFLEET_TEST_UNSET\"\n"), "not set"),
        (format!("{head}url = \"https://bot.internal/events\"\nsecret = \"whsec_inline\"\n"), "unknown field `secret`"),
    ];
    for (text, reason) in cases {
        std::fs::write(&file, &text).unwrap();
        for command in ["worker", "dev"] {
            let out = eventfleet()
                .args([command, "--data-dir"])
                .arg(dir.path())
                .env("EVENTFLEET_ROUTES_FILE", &file)
                .env("EVENTFLEET_LISTEN", "127.0.0.1:0")
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{command} stopped for {text:?}");
            assert!(stderr.contains("EVENTFLEET_ROUTES_FILE") && stderr.contains(reason), "{command}: {stderr}");
            assert!(
                text.contains("retries") || text.contains("secret =") || stderr.contains("route \"bot\""),
                "{stderr}"
            );
        }
    }
}
