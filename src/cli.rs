//! The command line: clap definitions only. Each subcommand maps to one library call in
//! `main.rs`.

use clap::{Parser, Subcommand};

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
}
