//! Rules for a training run's output directory, shared by both training loops: never the
//! input model's directory, never a directory that already holds another run.

use crate::error::{Error, Result};
use std::path::Path;

/// Refuses an output directory that is the input model's directory: writing the fine-tuned
/// model there would replace the pretrained weights it started from.
pub fn check_out_is_not_input(out: &Path, model: &Path) -> Result<()> {
    if let (Ok(a), Ok(b)) = (out.canonicalize(), model.canonicalize()) {
        if a == b {
            return Err(Error::invalid(format!(
                "--out {} is the --model directory; its weights would be overwritten. Choose another output directory",
                out.display()
            )));
        }
    }
    Ok(())
}

/// Refuses to start a new run in a directory that holds an earlier one (any of `files`): the
/// new run would replace its log and checkpoint while its model files stayed, mixing the two.
pub fn check_no_earlier_run(out: &Path, files: &[&str], resumable: bool) -> Result<()> {
    let found: Vec<&str> = files
        .iter()
        .copied()
        .filter(|f| out.join(f).exists())
        .collect();
    if found.is_empty() {
        return Ok(());
    }
    Err(Error::invalid(format!(
        "{} already holds a run ({}); {}remove it or choose another --out",
        out.display(),
        found.join(", "),
        if resumable {
            "pass --resume to continue it, or "
        } else {
            ""
        }
    )))
}
