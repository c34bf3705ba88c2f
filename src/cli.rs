//! The command line: clap definitions only. Each subcommand maps to one library call in
//! `main.rs`.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "rnnkit",
    version,
    about = "Recurrent networks on libtorch, exactly as PyTorch computes them"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show which libtorch is loaded and what it can do (threads, MKL, oneDNN, CUDA).
    Doctor {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a model directory on the inputs of a PyTorch reference file and compare the outputs.
    Parity {
        /// Model directory (config.json + model.safetensors).
        #[arg(long)]
        model: PathBuf,
        /// Reference file written by scripts/rnnkit_export.py (default: MODEL/reference.safetensors).
        #[arg(long)]
        reference: Option<PathBuf>,
        /// Absolute tolerance.
        #[arg(long, default_value_t = 1e-5)]
        atol: f64,
        /// Relative tolerance.
        #[arg(long, default_value_t = 1e-4)]
        rtol: f64,
        #[arg(long, default_value = "auto")]
        device: String,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}
