//! `cargo isolate`: run every test of a cargo workspace in its own process.

#![forbid(unsafe_code)]

mod cli;

fn main() {
    cli::Cargo::parse_args();
}
