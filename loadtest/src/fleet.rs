//! A fleet started from the `eventfleet` binary next to this one: an ingress and N workers sharing one embedded
//! store in a temporary directory, the Slack stub in this process. Processes can be killed and restarted (chaos),
//! and their memory is sampled.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

/// The `eventfleet` binary beside the running load generator.
pub fn eventfleet_binary() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let dir = me.parent().context("the load generator has no directory")?;
    let bin = dir.join("eventfleet");
    if !bin.exists() {
        bail!("{} not found: build it (`cargo build --release --workspace --bins`)", bin.display());
    }
    Ok(bin)
}

/// A fleet process.
pub struct Proc {
    /// `ingress` or `worker-<n>`.
    pub name: String,
    args: Vec<String>,
    child: Child,
    /// Highest resident set size seen, KiB.
    pub peak_rss_kib: u64,
    /// Times it was killed.
    pub kills: u32,
}

impl Proc {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn sample_rss(&mut self) {
        if let Some(kib) = rss_kib(self.child.id(), "VmHWM:") {
            self.peak_rss_kib = self.peak_rss_kib.max(kib);
        }
    }
}

/// The resident-set line `field` of `/proc/<pid>/status`, KiB.
fn rss_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with(field))?.split_whitespace().nth(1)?.parse().ok()
}

/// The running fleet.
pub struct Fleet {
    bin: PathBuf,
    /// Data directory of the shared store.
    pub data_dir: PathBuf,
    env: HashMap<String, String>,
    /// The ingress (index 0) and the workers.
    pub procs: Vec<Proc>,
    /// Ingress base URL.
    pub base: String,
}

impl Fleet {
    /// Starts an ingress and `workers` workers on a store in `data_dir`; with no workers, one `eventfleet serve`
    /// (ingress and workers in one process).
    pub fn start(data_dir: &Path, env: HashMap<String, String>, workers: usize) -> anyhow::Result<Self> {
        let bin = eventfleet_binary()?;
        let mut fleet = Fleet { bin, data_dir: data_dir.to_owned(), env, procs: Vec::new(), base: String::new() };
        let (command, name) = if workers == 0 { ("serve", "serve") } else { ("ingress", "ingress") };
        let (ingress, base) = fleet.spawn(name, vec![command.into(), "--listen".into(), "127.0.0.1:0".into()])?;
        fleet.base = base.clone();
        // A restarted ingress comes back on the same address.
        let addr = base.trim_start_matches("http://").to_owned();
        fleet.procs.push(Proc {
            name: name.into(),
            args: vec![command.into(), "--listen".into(), addr],
            child: ingress,
            peak_rss_kib: 0,
            kills: 0,
        });
        for i in 0..workers {
            let args = vec!["worker".to_string()];
            let (child, _) = fleet.spawn("worker", args.clone())?;
            fleet.procs.push(Proc { name: format!("worker-{i}"), args, child, peak_rss_kib: 0, kills: 0 });
        }
        Ok(fleet)
    }

    /// Runs an operator command against the fleet's store; returns stdout.
    pub fn command(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(&self.bin).args(args).arg("--data-dir").arg(&self.data_dir).envs(&self.env).output()?;
        if !out.status.success() {
            bail!("eventfleet {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    fn spawn(&self, role: &str, args: Vec<String>) -> anyhow::Result<(Child, String)> {
        let mut child = Command::new(&self.bin)
            .args(&args)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .envs(&self.env)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("start {role}"))?;
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("listening on") || line.starts_with("worker started") {
                    let url = line.split_whitespace().find(|w| w.starts_with("http://")).unwrap_or("").to_owned();
                    let _ = tx.send(url);
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(url) => Ok((child, url)),
            Err(_) => {
                // A `Child` is not killed on drop: never leave one behind.
                let _ = child.kill();
                let _ = child.wait();
                bail!("{role} did not start within 30 s")
            }
        }
    }

    /// Samples every process's peak memory.
    pub fn sample(&mut self) {
        for p in &mut self.procs {
            p.sample_rss();
        }
    }

    /// SIGKILLs process `index` and starts it again with the same arguments.
    pub fn kill_and_restart(&mut self, index: usize) -> anyhow::Result<()> {
        let args = self.procs[index].args.clone();
        let role = if index == 0 { self.procs[0].name.clone() } else { "worker".to_owned() };
        let role = role.as_str();
        {
            let p = &mut self.procs[index];
            p.sample_rss();
            p.child.kill()?;
            p.child.wait()?;
            p.kills += 1;
        }
        let (child, _) = self.spawn(role, args)?;
        self.procs[index].child = child;
        Ok(())
    }

    /// Stops every process with SIGTERM (waiting for the drain), sampling memory first.
    pub fn stop(&mut self) {
        self.sample();
        for p in &mut self.procs {
            let _ = Command::new("kill").args(["-TERM", &p.child.id().to_string()]).status();
        }
        for p in &mut self.procs {
            let _ = p.child.wait();
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
}
