//! Long audio in pieces (`rnnkit transcribe --chunk-seconds`): a 26 s file, over `--max-seconds
//! 20`, is refused whole and transcribed in 5 s pieces; the result equals transcribing each piece
//! written as a WAV file of its own (the whole-file path, bitwise PyTorch's in
//! tests/ctc_parity.rs): texts joined by a space, the score their sum, word times shifted by the
//! piece's start, every number compared by its f64 bits. Greedy and beam 4.
//! Regenerate the golden model: scripts/make_ctc_golden.py tests/golden/ctc.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const RATE: u32 = 16_000;

fn write_wav(path: &Path, samples: &[i16]) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for &s in samples {
        w.write_sample(s).unwrap();
    }
    w.finalize().unwrap();
}

fn transcribe(model: &Path, args: &[&str], files: &[PathBuf]) -> (bool, Vec<Value>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rnnkit"))
        .args([
            "transcribe",
            "--model",
            model.to_str().unwrap(),
            "--device",
            "cpu",
        ])
        .args(args)
        .args(files)
        .output()
        .unwrap();
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (
        out.status.success(),
        lines,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn bits(v: &Value) -> u64 {
    v.as_f64().unwrap().to_bits()
}

#[test]
fn a_long_file_in_pieces_equals_its_pieces_transcribed_alone() {
    let golden = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/ctc");
    let model = golden.join("ctc_lstm_uni");
    let source = golden.join("wav/b_16k_16bit.wav");
    assert!(
        source.exists(),
        "{} missing: run scripts/make_ctc_golden.py tests/golden/ctc",
        source.display()
    );
    let speech: Vec<i16> = hound::WavReader::open(&source)
        .unwrap()
        .samples::<i16>()
        .map(|s| s.unwrap())
        .collect();
    let total = 26 * RATE as usize;
    let long: Vec<i16> = speech.iter().copied().cycle().take(total).collect();
    let dir = std::env::temp_dir().join(format!("rnnkit-long-audio-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let long_path = dir.join("long.wav");
    write_wav(&long_path, &long);
    // 5 s pieces of a 26 s file: the last second (under half a piece) joins the fifth piece.
    let bounds = [(0, 5), (5, 10), (10, 15), (15, 20), (20, 26)]
        .map(|(a, b)| (a * RATE as usize, b * RATE as usize));
    let pieces: Vec<PathBuf> = bounds
        .iter()
        .enumerate()
        .map(|(i, &(a, b))| {
            let p = dir.join(format!("piece{i}.wav"));
            write_wav(&p, &long[a..b]);
            p
        })
        .collect();

    let (ok, _, err) = transcribe(&model, &["--max-seconds", "20"], &[long_path.clone()]);
    assert!(
        !ok && err.contains("--chunk-seconds"),
        "whole 26 s file: {err}"
    );

    for beam in ["0", "4"] {
        let (ok, got, err) = transcribe(
            &model,
            &[
                "--max-seconds",
                "20",
                "--chunk-seconds",
                "5",
                "--beam",
                beam,
            ],
            &[long_path.clone()],
        );
        assert!(ok, "{err}");
        let (ok, alone, err) = transcribe(&model, &["--batch-size", "1", "--beam", beam], &pieces);
        assert!(ok, "{err}");
        assert_eq!((got.len(), alone.len()), (1, 5));
        let got = &got[0];
        let texts: Vec<&str> = alone
            .iter()
            .map(|t| t["text"].as_str().unwrap())
            .filter(|t| !t.is_empty())
            .collect();
        assert_eq!(
            got["text"].as_str().unwrap(),
            texts.join(" "),
            "beam {beam}"
        );
        let score = alone
            .iter()
            .fold(0f64, |s, t| s + t["score"].as_f64().unwrap());
        assert_eq!(bits(&got["score"]), score.to_bits(), "beam {beam}: score");
        let mut words = Vec::new();
        for (t, &(a, _)) in alone.iter().zip(&bounds) {
            let offset = a as f64 / RATE as f64;
            for w in t["words"].as_array().unwrap() {
                words.push((
                    w["word"].as_str().unwrap().to_string(),
                    (w["start"].as_f64().unwrap() + offset).to_bits(),
                    (w["end"].as_f64().unwrap() + offset).to_bits(),
                ));
            }
        }
        let got_words: Vec<_> = got["words"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| {
                (
                    w["word"].as_str().unwrap().to_string(),
                    bits(&w["start"]),
                    bits(&w["end"]),
                )
            })
            .collect();
        assert_eq!(got_words, words, "beam {beam}: words and times");
        println!(
            "beam {beam}: 26 s in 5 pieces: {} characters, {} words, score {} — equal to the pieces \
             transcribed alone (text, score and times by f64 bits)",
            got["text"].as_str().unwrap().len(),
            words.len(),
            got["score"]
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
