//! The `rnnkit` binary: parse, dispatch to the library, print the error chain, exit non-zero.

use anyhow::Result;
use clap::Parser;
use rnnkit::cli::{Cli, Command};

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Doctor { json } => {
            let report = rnnkit::doctor::run();
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{report}");
            }
            if !report.problems.is_empty() {
                anyhow::bail!("{} problem(s) found; see above", report.problems.len());
            }
        }
        Command::Parity {
            model,
            reference,
            atol,
            rtol,
            device,
            json,
        } => {
            let reference = reference.unwrap_or_else(|| model.join("reference.safetensors"));
            let device = rnnkit::device::parse_device(&device)?;
            let report = rnnkit::parity::check_model(&model, &reference, atol, rtol, device)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{report}");
            }
            if !report.ok {
                anyhow::bail!("outputs differ from PyTorch's beyond the tolerance");
            }
        }
    }
    Ok(())
}
