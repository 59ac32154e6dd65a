//! What an event costs the embedded store, step by step as the fleet runs it: 64 tasks accept hook payloads of
//! about 1 KB in 128 message groups while 32 worker tasks receive them (ten at a time), and each success starts
//! the next message of its group, as the worker pool does (no handler: the store's work only). Every answer waits
//! for its commit to be synced (the default durability).
//!
//! Prints, per event: CPU time of the process and of its SQLite threads (writer, flusher, checkpointer), and bytes
//! written; and events a second. CPU an event is the figure to compare builds by on a shared machine: it does not
//! move with the neighbours' load as a rate does. Run with
//! `cargo bench -p eventfleet-storage --bench protocol -- [events] [rounds]` (defaults 20,000 and 3).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use eventfleet_schema::{HookId, IdempotencyKey};
use eventfleet_storage::conformance::envelope;
use eventfleet_storage::protocol::{Actor, Delivery, Start};
use eventfleet_storage::{EmbeddedOptions, EmbeddedStore, OutgoingMessage, Store};

const ACCEPTORS: usize = 64;
const WORKERS: usize = 32;
const GROUPS: usize = 128;

fn main() {
    // `cargo bench` passes `--bench`; the numbers are what is left.
    let numbers: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let events = numbers.first().copied().unwrap_or(20_000);
    let rounds = numbers.get(1).copied().unwrap_or(3);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    println!("{events} events a round: {ACCEPTORS} accepting, {WORKERS} workers, {GROUPS} groups, ~1 KB payloads");
    for round in 1..=rounds {
        let r = runtime.block_on(run(events));
        println!(
            "round {round}: {:>6.0} events/s; CPU µs an event: process {:>4.0}, SQLite threads {:>4.0}; \
             written {:>5.1} KB an event",
            r.rate, r.cpu_us, r.sqlite_us, r.written_kb
        );
    }
}

struct Figures {
    rate: f64,
    cpu_us: f64,
    sqlite_us: f64,
    written_kb: f64,
}

async fn run(events: usize) -> Figures {
    // On the build disk, not a tmpfs: a sync must cost what it costs in production.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let store = EmbeddedStore::open_dir(dir.path(), EmbeddedOptions::default()).unwrap().into_store();
    let payload = format!(r#"{{"text":"{}"}}"#, "x".repeat(1000));
    let before = Usage::now();
    let started = Instant::now();
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for a in 0..ACCEPTORS {
        let (store, payload) = (store.clone(), payload.clone());
        let hook = HookId::from_raw("hk_01jf4bench6m8kq2w0x5e7r9tz");
        tasks.push(tokio::spawn(async move {
            for n in (a..events).step_by(ACCEPTORS) {
                // A hook payload without an `Idempotency-Key`: keyed by its body's digest, as most are.
                let key = IdempotencyKey::hook_body(&hook, format!("{n}").as_bytes());
                let env = envelope(key, &format!("hook:g{}", n % GROUPS), &payload);
                let horizon = Duration::from_secs(7 * 24 * 3600);
                store.protocol.accept(OutgoingMessage::first_delivery(env), horizon, "ingress").await.unwrap();
            }
        }));
    }
    for w in 0..WORKERS {
        let (store, done) = (store.clone(), done.clone());
        tasks.push(tokio::spawn(async move { work(&store, w, &done, events).await }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let wall = started.elapsed().as_secs_f64();
    let used = Usage::now().since(&before);
    let n = events as f64;
    Figures {
        rate: n / wall,
        cpu_us: used.cpu * 1e6 / n,
        sqlite_us: used.sqlite_cpu * 1e6 / n,
        written_kb: used.written as f64 / 1024.0 / n,
    }
}

/// A worker: receives up to ten, runs each group's messages in order (each success starting the next), until every
/// event is done.
async fn work(store: &Store, w: usize, done: &AtomicUsize, events: usize) {
    let actor = Actor {
        name: format!("worker:bench:{w}"),
        visibility: Duration::from_secs(60),
        max_attempts: 5,
        horizon: Duration::from_secs(7 * 24 * 3600),
    };
    while done.load(Ordering::Relaxed) < events {
        let got = store.protocol.receive(10, Duration::from_millis(100), &actor).await.unwrap();
        let mut chains: BTreeMap<String, Vec<Delivery>> = BTreeMap::new();
        for d in got {
            chains.entry(d.message.group.clone()).or_default().push(d);
        }
        let chains = chains.into_values().map(|chain| {
            let (store, actor) = (store.clone(), actor.clone());
            async move { run_chain(&store, chain, &actor).await }
        });
        let finished: usize = futures_util::future::join_all(chains).await.into_iter().sum();
        done.fetch_add(finished, Ordering::Relaxed);
    }
}

/// One group's messages of a receive, in order; how many it finished.
async fn run_chain(store: &Store, chain: Vec<Delivery>, actor: &Actor) -> usize {
    let mut finished = 0;
    let mut start = None;
    for i in 0..chain.len() {
        let d = &chain[i];
        let decided = match start.take() {
            Some(s) => s,
            None if d.start == Start::Waiting => store.protocol.start(&d.message, actor).await.unwrap(),
            None => d.start.clone(),
        };
        let Start::Run { attempt, .. } = decided else { panic!("unexpected start {decided:?}") };
        match chain.get(i + 1) {
            Some(next) => {
                let s = store.protocol.succeed_and_start(&d.message, attempt, "ok", &next.message, actor).await;
                start = Some(s.unwrap());
            }
            None => store.protocol.succeed(&d.message, attempt, "ok", actor).await.unwrap(),
        }
        finished += 1;
    }
    finished
}

/// CPU time and bytes written by this process so far (Linux `/proc`).
struct Usage {
    cpu: f64,
    sqlite_cpu: f64,
    written: u64,
}

impl Usage {
    fn now() -> Self {
        let tick = 100.0; // USER_HZ on Linux
        let cpu_of = |stat: &str| -> f64 {
            let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
            (fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()) as f64 / tick
        };
        let cpu = cpu_of(&std::fs::read_to_string("/proc/self/stat").unwrap());
        let mut sqlite_cpu = 0.0;
        for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.starts_with("eventfleet-sqli")
                && let Ok(stat) = std::fs::read_to_string(task.path().join("stat"))
            {
                sqlite_cpu += cpu_of(&stat);
            }
        }
        let io = std::fs::read_to_string("/proc/self/io").unwrap();
        let written = io.lines().find_map(|l| l.strip_prefix("wchar: ")).unwrap().trim().parse().unwrap();
        Self { cpu, sqlite_cpu, written }
    }

    fn since(&self, before: &Usage) -> Usage {
        Usage {
            cpu: self.cpu - before.cpu,
            sqlite_cpu: self.sqlite_cpu - before.sqlite_cpu,
            written: self.written - before.written,
        }
    }
}
