//! The `rnnkit` binary's own code: clap definitions ([`args`]), the commands that are not one
//! library call ([`doctor`], [`bench`], [`inspect`], [`translate`], [`transcribe`]). The library never imports this module.

pub mod args;
pub mod bench;
pub mod doctor;
pub mod probes;
pub mod transcribe;
pub mod translate;

use rnnkit::error::Error;

/// `rnnkit inspect`: the report as text, or as JSON with `--json`.
pub fn inspect(args: &args::InspectArgs) -> rnnkit::Result<String> {
    let report =
        rnnkit::checkpoint::inspect::inspect(&args.file, args.key.as_deref(), args.max_items)?;
    Ok(if args.json {
        serde_json::to_string_pretty(&report).map_err(|e| Error::invalid(e.to_string()))? + "\n"
    } else {
        report.to_string()
    })
}
