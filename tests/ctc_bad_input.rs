//! `rnnkit transcribe` on bad audio: each case exits non-zero with a message that names the file
//! and what is wrong — never a panic or a libtorch abort — and a 2-hour file is refused from its
//! header, before any sample is read (in pieces, `--chunk-seconds`, it is read a piece at a time
//! until its data ends). Formats rnnkit reads (8-bit, 24-bit, 32-bit float, stereo)
//! are covered by tests/ctc_parity.rs.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn model() -> PathBuf {
    let p = common::root().join("tests/golden/ctc/ctc_lstm_uni");
    assert!(
        p.join("config.json").exists(),
        "{} missing; run .venv/bin/python scripts/make_ctc_golden.py tests/golden/ctc",
        p.display()
    );
    p
}

/// A RIFF/WAVE header (PCM) whose data chunk claims `data_bytes`, followed by `body`.
fn wav(rate: u32, channels: u16, bits: u16, data_bytes: u32, body: &[u8]) -> Vec<u8> {
    let block = channels * bits.div_ceil(8);
    let mut v = b"RIFF".to_vec();
    v.extend((36 + data_bytes).to_le_bytes());
    v.extend(b"WAVEfmt ");
    v.extend(16u32.to_le_bytes());
    v.extend(1u16.to_le_bytes());
    v.extend(channels.to_le_bytes());
    v.extend(rate.to_le_bytes());
    v.extend((rate * block as u32).to_le_bytes());
    v.extend(block.to_le_bytes());
    v.extend(bits.to_le_bytes());
    v.extend(b"data");
    v.extend(data_bytes.to_le_bytes());
    v.extend(body);
    v
}

fn transcribe(file: &Path) -> (bool, String) {
    transcribe_with(file, &[])
}

fn transcribe_with(file: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rnnkit"))
        .args(["transcribe", "--device", "cpu", "--model"])
        .arg(model())
        .args(args)
        .arg(file)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_audio_gets_a_clear_error_naming_the_file() {
    let dir = std::env::temp_dir().join(format!("rnnkit-ctc-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let second: Vec<u8> = (0..8000i16)
        .flat_map(|i| ((i % 100) * 50).to_le_bytes())
        .collect();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "text.wav",
            b"this is not audio at all\n".to_vec(),
            "not a WAV file",
        ),
        ("empty.wav", vec![], "not a WAV file"),
        (
            "no_samples.wav",
            wav(8000, 1, 16, 0, &[]),
            "holds no samples",
        ),
        (
            "two_hours.wav",
            wav(8000, 1, 16, 2 * 3600 * 8000 * 2, &second),
            "over the limit of 600 s",
        ),
        (
            "truncated.wav",
            wav(8000, 1, 16, 4000, &second[..100]),
            "reading samples",
        ),
        (
            "odd_rate.wav",
            wav(44101, 1, 16, second.len() as u32, &second),
            "cannot resample from 44101 Hz",
        ),
        (
            "short.wav",
            wav(8000, 1, 16, 40, &second[..40]),
            "too short",
        ),
    ];
    for (name, bytes, want) in &cases {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        let (ok, err) = transcribe(&path);
        assert!(!ok, "{name}: accepted");
        assert!(!err.contains("panicked"), "{name}: panicked:\n{err}");
        assert!(
            err.contains(name),
            "{name}: the error does not name the file:\n{err}"
        );
        assert!(err.contains(want), "{name}: expected {want:?} in:\n{err}");
        println!("{name}: {}", err.trim());
    }
    let missing = dir.join("missing.wav");
    let (ok, err) = transcribe(&missing);
    assert!(!ok && err.contains("missing.wav"), "{err}");
    // In pieces (--chunk-seconds) the 2-hour header is not refused: the file is read piece by
    // piece and ends after one second, which is an error naming it (nothing is allocated for
    // the two hours the header claims).
    let (ok, err) = transcribe_with(&dir.join("two_hours.wav"), &["--chunk-seconds", "30"]);
    assert!(!ok && !err.contains("panicked"), "{err}");
    assert!(
        err.contains("two_hours.wav") && err.contains("reading samples"),
        "{err}"
    );
    println!("two_hours.wav in pieces: {}", err.trim());
    let _ = std::fs::remove_dir_all(&dir);
}
