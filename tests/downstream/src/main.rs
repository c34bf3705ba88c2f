//! `rnnkit-downstream MODEL_DIR TEXT...`: loads a classifier model directory with the library's
//! Predictor and prints one JSON line per text. Exit status 1 on any error.
use rnnkit::serve::{Predictor, PredictorOptions};
use std::path::PathBuf;

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next().map(PathBuf::from) else {
        eprintln!("usage: rnnkit-downstream MODEL_DIR TEXT...");
        std::process::exit(2);
    };
    let texts: Vec<String> = args.collect();
    let run = || -> rnnkit::Result<()> {
        let predictor = Predictor::load(
            &dir,
            rnnkit::device::parse_device("cpu")?,
            PredictorOptions::default(),
        )?;
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        for (text, p) in texts.iter().zip(predictor.predict(&refs)?) {
            println!(
                "{{\"text\": {text:?}, \"label\": {:?}, \"probabilities\": {:?}}}",
                p.label, p.probabilities
            );
        }
        Ok(())
    };
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
