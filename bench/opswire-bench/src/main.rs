//! `opswire-bench`: load generator for opswire. See `docs/benchmarks.md`
//! and `opswire-bench --help`.

fn main() -> std::process::ExitCode {
    opswire_bench::main()
}
