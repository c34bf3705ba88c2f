//! Streaming (`Transcriber::stream`, `rnnkit transcribe --stream`) against the whole file: the
//! two unidirectional golden ctc models without utterance normalisation (16 kHz; one GRU after
//! two stride-2 convolutions of kernel 5, one LSTM after one of kernel 3) on the seven golden
//! WAVs (8 to 48 kHz, so resampling streams too) and on a 12 s file, pushed in pieces from 7
//! samples to the whole file. Checked: the same number of steps, every log-probability within
//! `LP_TOL` of the whole file's (not bitwise: libtorch's products round a row differently with
//! the rows in the call; the max difference is printed), texts and words with their times
//! identical, scores within `SCORE_TOL`; greedy and beam 4. Models that cannot stream are
//! refused with the reason. Regenerate the golden models: scripts/make_ctc_golden.py
//! tests/golden/ctc.

use rnnkit::models::ctc::audio::read_wav;
use rnnkit::models::ctc::transcribe::{DecodeOptions, Transcriber, Transcript};
use std::path::{Path, PathBuf};
use std::process::Command;
use tch::{Device, Tensor};

const LP_TOL: f64 = 1e-5;
const SCORE_TOL: f64 = 1e-4;
const MODELS: [&str; 2] = ["ctc_gru_conv2_k5_wide", "ctc_lstm_prefixes_wide"];

/// A fresh scratch directory for one test.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rnnkit-stream-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn golden() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/ctc")
}

fn wavs() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(golden().join("wav"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wav"))
        .collect();
    v.sort();
    assert_eq!(v.len(), 7, "the golden WAVs: scripts/make_ctc_golden.py");
    v
}

/// A 12 s file: the golden 16 kHz recording 24 times, each copy at another gain.
fn long_wav(dir: &Path) -> PathBuf {
    let src = read_wav(&golden().join("wav/b_16k_16bit.wav"), 60.0).unwrap();
    let x = Vec::<f32>::try_from(&src.samples).unwrap();
    let path = dir.join("long_16k.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&path, spec).unwrap();
    for k in 0..24 {
        let gain = 0.4 + 0.05 * k as f32;
        for &s in &x {
            w.write_sample((s * gain * 32767.0).round() as i16).unwrap();
        }
    }
    w.finalize().unwrap();
    path
}

fn assert_same(stream: &Transcript, whole: &Transcript, what: &str) {
    assert_eq!(stream.text, whole.text, "{what}: text");
    assert_eq!(stream.words, whole.words, "{what}: words and times");
    let d = (stream.score - whole.score).abs();
    assert!(
        d <= SCORE_TOL,
        "{what}: score {} vs {} (diff {d:e})",
        stream.score,
        whole.score
    );
}

#[test]
fn a_stream_gives_the_whole_file_result() {
    let dir = scratch("whole");
    let mut files = wavs();
    files.push(long_wav(&dir));
    let mut max_diff = 0f64;
    let mut checked = 0;
    for m in MODELS {
        let tr = Transcriber::load(&golden().join(m), Device::Cpu).unwrap();
        for path in &files {
            let audio = read_wav(path, 60.0).unwrap();
            let (rate, samples) = (audio.sample_rate, audio.samples.shallow_clone());
            let len = samples.size()[0];
            let feats = tr.audio_features(audio, path).unwrap();
            let whole_lp = tr.log_probs(&[feats]).unwrap().swap_remove(0);
            for beam in [0, 4] {
                let opts = DecodeOptions { beam, words: None };
                let whole = tr.decode(&whole_lp, &opts);
                for piece in [7, 160, 1001, rate / 2, len] {
                    let mut s = tr.stream(rate, &opts).unwrap();
                    let mut rows = Vec::new();
                    let mut start = 0;
                    while start < len {
                        let n = piece.min(len - start);
                        rows.extend(s.push(&samples.narrow(0, start, n)).unwrap());
                        start += n;
                    }
                    rows.extend(s.end().unwrap());
                    let what = format!("{m} {} beam {beam} pieces of {piece}", path.display());
                    assert_eq!(rows.len(), whole_lp.len(), "{what}: steps");
                    for (a, b) in rows.iter().zip(&whole_lp) {
                        for (x, y) in a.iter().zip(b) {
                            max_diff = max_diff.max((x - y).abs());
                        }
                    }
                    assert!(
                        max_diff <= LP_TOL,
                        "{what}: log-probabilities differ by {max_diff:e}"
                    );
                    assert_same(&s.transcript(), &whole, &what);
                    checked += 1;
                }
            }
        }
    }
    println!(
        "{checked} streams: log-probabilities max abs diff {max_diff:e} (tolerance {LP_TOL:e}); \
         texts, words and times identical"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn pushing_after_the_end_and_too_little_audio_are_errors() {
    let tr = Transcriber::load(&golden().join(MODELS[0]), Device::Cpu).unwrap();
    let opts = DecodeOptions::default();
    let mut s = tr.stream(16_000, &opts).unwrap();
    s.push(&Tensor::zeros([100], (tch::Kind::Float, Device::Cpu)))
        .unwrap();
    let e = s.end().unwrap_err().to_string();
    assert!(e.contains("100 samples is too short"), "{e}");
    let e = s.push(&Tensor::zeros([10], (tch::Kind::Float, Device::Cpu)));
    assert!(e.unwrap_err().to_string().contains("after its end"));
}

fn transcribe(model: &Path, args: &[&str], file: &Path) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rnnkit"))
        .args(["transcribe", "--model", model.to_str().unwrap()])
        .args(["--device", "cpu"])
        .args(args)
        .arg(file)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_command_streams_and_refuses_models_that_cannot() {
    let dir = scratch("command");
    let file = long_wav(&dir);
    let model = golden().join(MODELS[1]);
    let (ok, whole, err) = transcribe(&model, &["--beam", "4"], &file);
    assert!(ok, "{err}");
    let (ok, streamed, err) = transcribe(
        &model,
        &["--beam", "4", "--stream", "--chunk-seconds", "0.05"],
        &file,
    );
    assert!(ok, "{err}");
    let (w, s): (serde_json::Value, serde_json::Value) = (
        serde_json::from_str(&whole).unwrap(),
        serde_json::from_str(&streamed).unwrap(),
    );
    assert_eq!(s["text"], w["text"]);
    assert_eq!(s["words"], w["words"]);
    let d = (s["score"].as_f64().unwrap() - w["score"].as_f64().unwrap()).abs();
    assert!(d <= SCORE_TOL, "score differs by {d:e}");
    // A bidirectional model (its normalisation switched off, so that is not the reason).
    let bi = dir.join("bi");
    std::fs::create_dir(&bi).unwrap();
    let src = golden().join("ctc_lstm_bi_l2_conv1");
    let cfg = std::fs::read_to_string(src.join("config.json")).unwrap();
    let cfg = cfg.replace("\"normalize\": \"utterance\"", "\"normalize\": \"none\"");
    assert!(cfg.contains("\"normalize\": \"none\""), "{cfg}");
    std::fs::write(bi.join("config.json"), cfg).unwrap();
    std::fs::copy(src.join("model.safetensors"), bi.join("model.safetensors")).unwrap();
    for (m, reason) in [
        (bi, "streaming needs a unidirectional encoder"),
        (golden().join("ctc_lstm_uni"), "utterance normalisation"),
    ] {
        let (ok, _, err) = transcribe(&m, &["--stream"], &file);
        assert!(!ok && err.contains(reason), "{}: {err}", m.display());
    }
    let (ok, _, err) = transcribe(
        &model,
        &["--stream", "--beam", "2", "--max-seconds", "10"],
        &file,
    );
    assert!(
        !ok && err.contains("12.0 s is over --max-seconds 10"),
        "{err}"
    );
    let (ok, _, err) = transcribe(&model, &["--stream", "--chunk-seconds", "0.001"], &file);
    assert!(
        !ok && err.contains("between 0.01 and 3600 with --stream"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
