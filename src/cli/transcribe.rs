//! `rnnkit transcribe`: WAV files in, JSONL out, one line per file in the order given:
//! `{"file": path, "text": t, "score": s, "words": [{"word", "start", "end"}, …]}` (times in
//! seconds). Every file's header is checked before any is decoded, so a bad file among many
//! fails at once with its name. `--chunk-seconds S`: each file in pieces of S seconds
//! ([`Transcriber::transcribe_chunked`]), any length, no `--max-seconds` limit. `--stream`:
//! each file pushed in pieces of `--chunk-seconds` (0.5 by default) through a unidirectional
//! model carrying its state ([`Transcriber::transcribe_streamed`]): the whole file's result,
//! any length greedily; with `--beam`, files up to `--max-seconds` (the search runs at the end
//! over every step). `--fused`: the encoder on rnnkit's fused kernel
//! ([`Transcriber::set_fused_inference`]).

use crate::cli::args::TranscribeArgs;
use anyhow::Result;
use rnnkit::models::ctc::audio::wav_info;
use rnnkit::models::ctc::transcribe::{DecodeOptions, Transcriber};
use std::io::Write;

/// Runs the command.
pub fn run(a: &TranscribeArgs) -> Result<()> {
    if let Some(n) = a.threads {
        tch::set_num_threads(n);
    }
    let device = rnnkit::device::parse_device(&a.device)?;
    let mut tr = Transcriber::load(&a.model, device)?;
    tr.set_fused_inference(a.fused);
    for f in &a.files {
        let info = wav_info(f)?;
        let seconds = info.frames as f64 / info.sample_rate as f64;
        // Beam search over a stream runs at its end, over every step kept, at a cost that
        // grows faster than the length: only greedy streams are unbounded.
        anyhow::ensure!(
            !(a.stream && a.beam > 0 && seconds > a.max_seconds),
            "{}: {seconds:.1} s is over --max-seconds {}: --stream with --beam keeps every \
             step's log-probabilities and searches them at the end; stream it greedily (no \
             --beam), or raise --max-seconds",
            f.display(),
            a.max_seconds
        );
    }
    let words = match &a.words {
        Some(p) => {
            anyhow::ensure!(
                a.beam > 0,
                "--words constrains beam search: give --beam N too"
            );
            Some(std::sync::Arc::new(tr.read_word_list(p)?))
        }
        None => None,
    };
    let opts = DecodeOptions {
        beam: a.beam,
        words,
    };
    if let Some(s) = a.chunk_seconds {
        let least = if a.stream { 0.01 } else { 1.0 };
        anyhow::ensure!(
            (least..=3600.0).contains(&s),
            "--chunk-seconds must be between {least} and 3600{}, got {s}",
            if a.stream { " with --stream" } else { "" }
        );
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let batch = if a.chunk_seconds.is_some() || a.stream {
        1
    } else {
        a.batch_size.max(1)
    };
    for chunk in a.files.chunks(batch) {
        let transcripts = match a.chunk_seconds {
            _ if a.stream => {
                let piece = a.chunk_seconds.unwrap_or(0.5);
                vec![tr.transcribe_streamed(&chunk[0], piece, &opts)?]
            }
            Some(s) => vec![tr.transcribe_chunked(&chunk[0], s, &opts)?],
            None => {
                let feats = chunk
                    .iter()
                    .map(|f| tr.file_features(f, a.max_seconds))
                    .collect::<rnnkit::Result<Vec<_>>>()?;
                tr.transcribe_features(&feats, &opts)?
            }
        };
        for (f, t) in chunk.iter().zip(transcripts) {
            let words: Vec<_> = t
                .words
                .iter()
                .map(|w| serde_json::json!({"word": w.word, "start": w.start, "end": w.end}))
                .collect();
            let line = serde_json::json!({
                "file": f.display().to_string(),
                "text": t.text,
                "score": t.score,
                "words": words,
            });
            writeln!(out, "{line}")?;
        }
    }
    Ok(())
}
