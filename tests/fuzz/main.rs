//! Fuzz targets of opswire's parsers, on stable Rust (proptest).
//!
//! One module per target; each test runs `OPSWIRE_FUZZ_CASES` (default
//! [`support::DEFAULT_CASES`]) times its weight (`support::weight`: 1, 2
//! or 8) cases and checks real invariants, not only the absence of a
//! panic. `docs/fuzzing.md` lists what each target
//! covers and how to run the long run.
//!
//! ```sh
//! cargo test --test fuzz --locked                                   # short
//! OPSWIRE_FUZZ_CASES=85000 cargo test --release --test fuzz --locked -- --nocapture  # 10^7 inputs
//! OPSWIRE_FUZZ_SEED=12345 cargo test --test fuzz op_decoder         # reproduce
//! ```

mod support;

mod alertmanager;
mod config_loader;
mod json_lines;
mod op_decoder;
mod otlp;
mod resume;
mod tokens;
mod ws_reader;
