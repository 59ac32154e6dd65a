//! `eventfleet`: the one binary of the fleet. Ingress, workers, `dev` (both in one process) and the operator
//! commands. Thin by design: parse arguments, set up logging, hand over to a command module.
//!
//! # Layout
//!
//! - `cli`: the command-line contract (clap).
//! - `config`: settings from `EVENTFLEET_*` variables, validated at start-up.
//! - `backend`: opens the configured storage backend.
//! - `aws_ops`: on AWS, subscription confirmation, ops notices and CloudWatch metrics for the workers.
//! - `shutdown`: SIGTERM / Ctrl-C → one cancellation token.
//! - `telemetry`: logs to stderr, OpenTelemetry export when configured.
//! - `commands`: one module per command family.
//! - `console`: the operator console (`eventfleet console`), a web page on the same ports.
//! - `lookup`: events and dead letters by the names operators know them by (CLI and console alike).
//! - `when`: times as operators type them.

/// Prints a line of a command's output on stdout. A reader that went away (`eventfleet dlq show … | head`) ends
/// the command quietly, as SIGPIPE ends other tools, instead of a panic with a backtrace.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::print_line(format_args!($($arg)*))
    };
}

/// mimalloc instead of glibc's malloc: allocation was about a seventh of the fleet's CPU under load
/// (docs/benchmarks.md, "The allocator"). Without transparent huge pages ([`no_huge_pages`]).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod aws_ops;
mod backend;
mod cli;
mod commands;
mod config;
mod console;
mod event_search;
mod lookup;
mod shutdown;
mod telemetry;
mod when;

use clap::Parser;

fn main() -> std::process::ExitCode {
    no_huge_pages();
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// What [`say!`] does: one line on stdout; exit 0 when the reader is gone, 1 on any other write error.
pub(crate) fn print_line(args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing to stdout: {e}");
        std::process::exit(1);
    }
}

/// Transparent huge pages off for this process: mimalloc reserves memory in large aligned arenas, which a host
/// whose THP mode is `always` backs with 2 MiB pages, holding far more resident than the process uses (mimalloc
/// asking for them measured 107 to 133 MiB at full load here, against about 50 without; docs/benchmarks.md, "The
/// allocator"). The crate's `no_thp` only stops mimalloc from asking. A host that refuses keeps its own setting.
#[cfg(target_os = "linux")]
fn no_huge_pages() {
    let _ = rustix::thread::disable_transparent_huge_pages(true);
}

#[cfg(not(target_os = "linux"))]
fn no_huge_pages() {}
