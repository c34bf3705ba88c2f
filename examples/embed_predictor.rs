//! Embedding rnnkit's `Predictor` in another Rust service: a worker pool of "request handlers"
//! (plain threads standing in for your service's handlers) shares one Predictor by cloning it.
//! No global lock: each handler tokenizes on its own thread and the predictor's workers batch
//! what arrives together.
//!
//! cargo run --release --example embed_predictor -- MODEL_DIR

use anyhow::{Context, Result};
use rnnkit::serve::predictor::{Predictor, PredictorOptions};
use std::time::Duration;

fn main() -> Result<()> {
    let dir = std::env::args()
        .nth(1)
        .context("usage: embed_predictor MODEL_DIR")?;
    let opts = PredictorOptions {
        max_batch: 32,
        max_wait: Duration::from_millis(2),
        workers: 1,
        queue_capacity: 1024,
        batch_invariant: true,
        ..Default::default()
    };
    let predictor = Predictor::load(dir.as_ref(), rnnkit::device::parse_device("auto")?, opts)?;
    let reviews = [
        "a warm , witty and wise film",
        "dull , dull , dull",
        "an uneven but rewarding debut",
    ];
    std::thread::scope(|s| {
        for handler in 0..4 {
            let predictor = predictor.clone(); // cheap: shares the model and the queue
            s.spawn(move || {
                for text in reviews {
                    match predictor.predict(&[text]) {
                        Ok(p) => println!(
                            "handler {handler}: {text:?} -> {} {:?}",
                            p[0].label, p[0].probabilities
                        ),
                        Err(e) => eprintln!("handler {handler}: {e}"),
                    }
                }
            });
        }
    });
    let st = predictor.stats();
    println!(
        "{} sequences in {} forward passes",
        st.sequences.load(std::sync::atomic::Ordering::Relaxed),
        st.batches.load(std::sync::atomic::Ordering::Relaxed)
    );
    Ok(())
}
