//! `layerfuse-driver`: the storage driver's front ends as one program.

use clap::Parser;

/// layerfuse as a container runtime's storage driver.
#[derive(Parser)]
#[command(version, about)]
struct Cli {}

fn main() {
    let _ = Cli::parse();
}
