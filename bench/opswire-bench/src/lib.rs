//! `opswire-bench`: the load generator (see `docs/benchmarks.md`), a crate
//! of its own so that the server does not carry its dependencies.
//!
//! A coordinator process ([`coordinator`]) checks the server, then starts
//! worker processes ([`worker`]): the same executable, re-executed with
//! `--worker`, since one process may hold at most 20,000 file descriptors
//! here. Each worker opens its share of the subscribers from loopback
//! source addresses 127.0.0.2–127.0.0.254 ([`conn`]), reports ready, and on
//! the coordinator's `go` records every data frame whose `ts` falls in the
//! measurement window: counts per (team, stream), seq ranges and gaps, and
//! lag histograms ([`hist`]). The coordinator merges the workers' results
//! into a [`report::Report`]. [`wire`] sits between each socket and
//! tungstenite (permessage-deflate, bytes on the wire); [`fleet`] publishes
//! synthetic hosts.
//!
//! Arrival is the kernel's receive timestamp of the subscriber's socket
//! (`SO_TIMESTAMPNS`), so the lag a loaded generator adds while it gets
//! round to its sockets is kept out of the delivery lag; it is reported
//! apart (`lag_app_ms`).

pub mod cli;
pub mod conn;
pub mod coordinator;
pub mod fleet;
pub mod frame;
pub mod hist;
pub mod ingest;
pub mod procfs;
pub mod report;
pub mod wire;
pub mod worker;

use std::process::ExitCode;

use clap::Parser;

/// The `opswire-bench` binary.
pub fn main() -> ExitCode {
    let args = cli::Args::parse();
    if args.worker {
        worker::main()
    } else {
        coordinator::main(args)
    }
}
