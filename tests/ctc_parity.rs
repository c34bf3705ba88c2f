//! The ctc family against PyTorch (`scripts/make_ctc_golden.py`, the pipeline of
//! `scripts/rnnkit_ctc.py`): WAV reading (8/16/24/32-bit integer, 32-bit float, stereo),
//! resampling and log-mel features, **bitwise**; each golden model's logits, CTC loss and every
//! parameter gradient, **bitwise**; greedy and prefix beam search (beams 1, 4, 16, n-best 3, a
//! word list) on 120 log-probability matrices, and `Transcriber` on the golden WAVs: PyTorch's
//! reference decoders' tokens, frames and words, scores to the f64 bit.

mod common;

use common::Report;
use rnnkit::models::ctc::audio::read_wav;
use rnnkit::models::ctc::decode::{greedy, prefix_beam_search, Hypothesis, WordList};
use rnnkit::models::ctc::features::{pad_features, Frontend};
use rnnkit::models::ctc::transcribe::{DecodeOptions, Transcriber};
use rnnkit::models::ctc::{CtcConfig, CtcModel};
use rnnkit::models::parity::Tolerance;
use rnnkit::ModuleExt;
use std::path::{Path, PathBuf};
use tch::{Device, Tensor};

const REGEN: &str =
    "regenerate with: .venv/bin/python scripts/make_ctc_golden.py tests/golden/ctc \
                     (scripts/test.sh does)";
/// CASES, WAVS, FEATURES and UTTERANCES of make_ctc_golden.py.
const CASES: usize = 9;
const WAVS: usize = 7;
const FEATURE_SETS: usize = 2;
const UTTERANCES: usize = 120;

fn golden() -> PathBuf {
    let dir = common::root().join("tests/golden/ctc");
    assert!(
        dir.join("decode").exists(),
        "{} missing; {REGEN}",
        dir.display()
    );
    dir
}

fn wavs() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(golden().join("wav"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    common::assert_count("golden WAV files", v.len(), WAVS, REGEN);
    v
}

fn model_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(golden())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("config.json").exists())
        .collect();
    dirs.sort();
    common::assert_count("ctc golden models", dirs.len(), CASES, REGEN);
    dirs
}

fn stem(p: &Path) -> String {
    p.file_stem().unwrap().to_string_lossy().into_owned()
}

#[test]
fn wav_resampling_and_log_mel_features_are_pytorchs_bits() {
    let want = rnnkit::StateDict::load(golden().join("features.safetensors")).unwrap();
    let mut r = Report::default();
    let mut sets = 0;
    for dir in model_dirs() {
        let cfg = CtcConfig::read(&dir.join("config.json")).unwrap();
        let set = if cfg.features.sample_rate == 16000 {
            "wide"
        } else {
            "narrow"
        };
        if !dir.ends_with("ctc_lstm_uni") && !dir.ends_with("ctc_lstm_prefixes_wide") {
            continue;
        }
        sets += 1;
        let fe = Frontend::new(&cfg.features);
        for wav in wavs() {
            let audio = read_wav(&wav, 60.0).unwrap();
            let x = rnnkit::models::ctc::audio::resample(
                &audio.samples,
                audio.sample_rate,
                cfg.features.sample_rate,
            )
            .unwrap();
            let got = fe.features(&x).unwrap();
            let key = format!("{set}.{}", stem(&wav));
            let w = want
                .get(&key)
                .unwrap_or_else(|| panic!("no {key} in features.safetensors; {REGEN}"));
            r.check(&key, "features", &got, w, Tolerance::Exact);
        }
    }
    common::assert_count("feature sets", sets, FEATURE_SETS, REGEN);
    r.finish("ctc features vs PyTorch (bitwise)");
}

#[test]
fn logits_loss_and_gradients_are_pytorchs_bits() {
    let mut r = Report::default();
    let mut grads = 0;
    for dir in model_dirs() {
        let name = stem(&dir);
        let mut model = CtcModel::load_dir(&dir, Device::Cpu).unwrap();
        let g = rnnkit::StateDict::load(dir.join("reference.safetensors")).unwrap();
        let tr = Transcriber::new(CtcModel::load_dir(&dir, Device::Cpu).unwrap());
        let feats: Vec<Tensor> = wavs()
            .iter()
            .map(|w| tr.file_features(w, 60.0).unwrap())
            .collect();
        let (batch, lengths) = pad_features(&feats.iter().collect::<Vec<_>>());
        model.eval();
        let (logits, out_lens) = model.forward(&batch, &lengths).unwrap();
        r.check(
            &name,
            "logits",
            &logits,
            g.get("logits").unwrap(),
            Tolerance::Exact,
        );
        let want_lens = Vec::<i64>::try_from(g.get("out_lengths").unwrap()).unwrap();
        if out_lens != want_lens {
            r.fail(
                &name,
                format!("out_lengths {out_lens:?}, PyTorch {want_lens:?}"),
            );
        }
        let flat = Vec::<i64>::try_from(g.get("targets").unwrap()).unwrap();
        let tl = Vec::<i64>::try_from(g.get("target_lengths").unwrap()).unwrap();
        let mut targets = Vec::new();
        let mut at = 0;
        for &n in &tl {
            targets.push(flat[at..at + n as usize].to_vec());
            at += n as usize;
        }
        let loss = CtcModel::loss(&logits, &out_lens, &targets).unwrap();
        r.check(
            &name,
            "loss",
            &loss.reshape([1]),
            g.get("loss").unwrap(),
            Tolerance::Exact,
        );
        loss.backward();
        let params: std::collections::BTreeMap<String, Tensor> =
            model.named_parameters().into_iter().collect();
        for (key, want) in g.iter().filter(|(k, _)| k.starts_with("grad.")) {
            let key = &key["grad.".len()..];
            match params.get(key).map(Tensor::grad) {
                Some(got) if got.defined() => {
                    grads += 1;
                    r.check(&name, &format!("grad.{key}"), &got, want, Tolerance::Exact);
                }
                _ => r.fail(&name, format!("no gradient for {key}")),
            }
        }
    }
    println!("{grads} parameter gradients compared");
    r.finish("ctc logits, loss and gradients vs PyTorch (bitwise)");
}

fn decode_json() -> serde_json::Value {
    let p = golden().join("decode/decode.json");
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

fn usizes(v: &serde_json::Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

fn differs(got: &Hypothesis, want: &serde_json::Value) -> Option<String> {
    let (tokens, frames) = (usizes(&want["tokens"]), usizes(&want["frames"]));
    let bits = want["score_bits"].as_u64().unwrap();
    if got.tokens != tokens || got.frames != frames || got.score.to_bits() != bits {
        return Some(format!(
            "got {:?} at {:?} score {:e}; PyTorch {tokens:?} at {frames:?} score {:e}",
            got.tokens,
            got.frames,
            got.score,
            f64::from_bits(bits)
        ));
    }
    None
}

#[test]
fn greedy_and_prefix_beam_search_give_the_reference_decoders_outputs() {
    let j = decode_json();
    let lp = rnnkit::StateDict::load(golden().join("decode/lp.safetensors")).unwrap();
    let alphabet: Vec<String> = j["alphabet"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    let words: Vec<Vec<usize>> = j["words"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            w.as_str()
                .unwrap()
                .chars()
                .map(|c| alphabet.iter().position(|a| *a == c.to_string()).unwrap() + 1)
                .collect()
        })
        .collect();
    let list = WordList::new(&words);
    let utts = j["utterances"].as_array().unwrap();
    common::assert_count("decoder utterances", utts.len(), UTTERANCES, REGEN);
    let (mut failures, mut hyps) = (Vec::new(), 0);
    for (u, want) in utts.iter().enumerate() {
        let t = lp.get(&format!("u{u}")).unwrap().to_kind(tch::Kind::Double);
        let v = t.size()[1] as usize;
        let flat = Vec::<f64>::try_from(t.contiguous().view([-1])).unwrap();
        let rows: Vec<Vec<f64>> = flat.chunks(v).map(<[f64]>::to_vec).collect();
        let mut check = |what: String, got: &[Hypothesis], want: &serde_json::Value| {
            let want = want.as_array().unwrap();
            if got.len() != want.len() {
                failures.push(format!(
                    "u{u} {what}: {} hypotheses, PyTorch {}",
                    got.len(),
                    want.len()
                ));
                return;
            }
            for (k, (g, w)) in got.iter().zip(want).enumerate() {
                hyps += 1;
                if let Some(d) = differs(g, w) {
                    failures.push(format!("u{u} {what} #{k}: {d}"));
                }
            }
        };
        check(
            "greedy".into(),
            &[greedy(&rows)],
            &serde_json::json!([want["greedy"]]),
        );
        for b in usizes(&j["beams"]) {
            check(
                format!("beam {b}"),
                &prefix_beam_search(&rows, b, 3, None, None),
                &want[format!("beam{b}")],
            );
        }
        check(
            "beam 16, word list".into(),
            &prefix_beam_search(&rows, 16, 3, Some(&list), Some(1)),
            &want["words16"],
        );
    }
    println!("{UTTERANCES} utterances, {hyps} hypotheses compared (tokens, frames, score bits)");
    assert!(
        failures.is_empty(),
        "{} differ:\n{}\n{REGEN}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn transcriber_gives_pytorchs_texts_scores_and_word_times() {
    transcripts_against_pytorch(false);
}

/// The same transcripts with the encoder on the fused kernel: texts, words and times
/// identical, scores within `FUSED_SCORE_TOL` (not bits: the kernel's products round
/// differently from libtorch's).
#[test]
fn fused_transcriber_gives_pytorchs_texts_and_word_times() {
    transcripts_against_pytorch(true);
}

const FUSED_SCORE_TOL: f64 = 1e-4;

fn transcripts_against_pytorch(fused: bool) {
    let (mut failures, mut n, mut worst) = (Vec::new(), 0, 0f64);
    for dir in model_dirs() {
        let name = stem(&dir);
        let mut tr = Transcriber::load(&dir, Device::Cpu).unwrap();
        tr.set_fused_inference(fused);
        let want: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("transcribe.json")).unwrap())
                .unwrap();
        let feats: Vec<Tensor> = wavs()
            .iter()
            .map(|w| tr.file_features(w, 60.0).unwrap())
            .collect();
        for beam in [0usize, 8] {
            let got = tr
                .transcribe_features(&feats, &DecodeOptions { beam, words: None })
                .unwrap();
            for (i, (g, w)) in got
                .iter()
                .zip(want[format!("beam{beam}")].as_array().unwrap())
                .enumerate()
            {
                n += 1;
                let words: Vec<(String, f64, f64)> = w["words"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| {
                        (
                            x["word"].as_str().unwrap().to_string(),
                            x["start"].as_f64().unwrap(),
                            x["end"].as_f64().unwrap(),
                        )
                    })
                    .collect();
                let got_words: Vec<(String, f64, f64)> = g
                    .words
                    .iter()
                    .map(|x| (x.word.clone(), x.start, x.end))
                    .collect();
                let want_score = f64::from_bits(w["score_bits"].as_u64().unwrap());
                worst = worst.max((g.score - want_score).abs());
                let score_ok = if fused {
                    (g.score - want_score).abs() <= FUSED_SCORE_TOL
                } else {
                    g.score.to_bits() == want_score.to_bits()
                };
                if g.text != w["text"].as_str().unwrap() || !score_ok || got_words != words {
                    failures.push(format!(
                        "{name} beam {beam} file {i}: {:?} {:e}, PyTorch {} {:e}",
                        g.text,
                        g.score,
                        w["text"],
                        w["score"].as_f64().unwrap()
                    ));
                }
            }
        }
    }
    println!(
        "{n} transcripts compared (text, words and times; scores {}): max score diff {worst:e}",
        if fused {
            "within 1e-4, fused kernel"
        } else {
            "by bits"
        }
    );
    assert!(failures.is_empty(), "{}\n{REGEN}", failures.join("\n"));
}
