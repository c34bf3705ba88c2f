//! The seq2seq family against PyTorch (`scripts/make_seq2seq_golden.py`, the model of
//! `scripts/rnnkit_seq2seq.py`): for each golden model directory, loaded by
//! `Model::load_dir`, teacher-forced logits, the label-smoothed loss and the gradient of every
//! parameter are **bitwise** PyTorch's; greedy decoding, beam search (beams 1, 4 and 8, with and
//! without the length penalty, n-best lists) and seeded sampling give PyTorch's reference
//! decoders' tokens, and their scores to the bit; on rnnkit's fused kernels, the same tokens
//! with scores within 1e-4.

mod common;

use common::Report;
use rnnkit::models::parity::Tolerance;
use rnnkit::models::seq2seq::decode::{Hypothesis, MaxLength};
use rnnkit::models::{Model, Seq2Seq};
use rnnkit::{Module, ModuleExt};
use std::path::{Path, PathBuf};
use tch::{Device, Tensor};

const REGEN: &str = "regenerate with: .venv/bin/python scripts/make_seq2seq_golden.py \
                     tests/golden/seq2seq (scripts/test.sh does)";

/// The cases `make_seq2seq_golden.py` writes (CASES there).
const CASES: usize = 13;
/// Sentences per case (SENTENCES there).
const SENTENCES: usize = 17;
/// (beam, alpha) pairs per case (BEAMS there).
const BEAMS: usize = 6;

fn golden_dirs() -> Vec<PathBuf> {
    let dir = common::root().join("tests/golden/seq2seq");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}; {REGEN}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("config.json").exists())
        .collect();
    dirs.sort();
    common::assert_count("seq2seq golden directories", dirs.len(), CASES, REGEN);
    dirs
}

fn load(dir: &Path) -> (Seq2Seq, rnnkit::StateDict) {
    let model = match Model::load_dir(dir, Device::Cpu).unwrap() {
        Model::Seq2Seq(m) => m,
        other => panic!("{}: family {:?}", dir.display(), other.config().family),
    };
    let reference = rnnkit::StateDict::load(dir.join("reference.safetensors")).unwrap();
    (model, reference)
}

fn ids(t: &Tensor) -> Vec<i64> {
    Vec::<i64>::try_from(t).unwrap()
}

fn decode_json(dir: &Path) -> serde_json::Value {
    let p = dir.join("decode.json");
    let text =
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}; {REGEN}", p.display()));
    serde_json::from_str(&text).unwrap()
}

fn tokens(v: &serde_json::Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

fn bits(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap()
}

/// Each sentence's maximum length under decode.json's `max_len` rule.
fn golden_max_len(d: &serde_json::Value, src_len: &[i64]) -> Vec<usize> {
    let ml = &d["max_len"];
    MaxLength {
        a: ml["a"].as_f64().unwrap(),
        b: ml["b"].as_f64().unwrap(),
        cap: ml["cap"].as_u64().unwrap() as usize,
    }
    .of(src_len)
}

/// Greedy decoding and each of decode.json's beam searches on `model`, paired with PyTorch's
/// outputs: `check(failures, what, hypothesis, want, beam)` per pair (`beam`: a beam-search
/// output, which also has a raw score). A search with another number of sentences or
/// hypotheses than PyTorch's is a failure.
#[allow(clippy::too_many_arguments)]
fn compare_searches(
    model: &Seq2Seq,
    name: &str,
    d: &serde_json::Value,
    src: &Tensor,
    src_len: &[i64],
    max_len: &[usize],
    failures: &mut Vec<String>,
    mut check: impl FnMut(&mut Vec<String>, String, &Hypothesis, &serde_json::Value, bool),
) {
    let greedy = model.greedy(src, src_len, max_len).unwrap();
    let want = d["greedy"].as_array().unwrap();
    if greedy.len() != want.len() {
        failures.push(format!(
            "{name} greedy: {} outputs, PyTorch {}",
            greedy.len(),
            want.len()
        ));
    }
    for (i, (h, w)) in greedy.iter().zip(want).enumerate() {
        check(failures, format!("greedy {i}"), h, w, false);
    }
    let searches = d["beam_search"].as_array().unwrap();
    assert_eq!(searches.len(), BEAMS, "{name}: beam searches; {REGEN}");
    for search in searches {
        let (beam, alpha, n_best) = (
            search["beam"].as_u64().unwrap() as usize,
            search["alpha"].as_f64().unwrap(),
            search["n_best"].as_u64().unwrap() as usize,
        );
        let beams = model
            .beam_search(src, src_len, max_len, beam, alpha, n_best)
            .unwrap();
        let want_beams = search["outputs"].as_array().unwrap();
        assert_eq!(beams.len(), want_beams.len(), "{name}: sentences");
        for (i, (got, want)) in beams.iter().zip(want_beams).enumerate() {
            let want = want.as_array().unwrap();
            let tag = format!("beam {beam} alpha {alpha} sentence {i}");
            if got.len() != want.len() {
                failures.push(format!(
                    "{name} {tag}: {} hypotheses, PyTorch {}",
                    got.len(),
                    want.len()
                ));
                continue;
            }
            for (j, (h, w)) in got.iter().zip(want).enumerate() {
                check(failures, format!("{tag}.{j}"), h, w, true);
            }
        }
    }
}

/// On rnnkit's fused kernels (`Seq2Seq::set_fused_inference`), greedy decoding and every beam
/// search give PyTorch's tokens, with scores within 1e-4 of its (not its bits: the products
/// sum in another order).
#[test]
fn fused_decoding_gives_pytorchs_tokens() {
    const TOL: f64 = 1e-4;
    let (mut failures, mut compared, mut max_diff) = (Vec::new(), 0, 0f64);
    for dir in golden_dirs() {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let (mut model, g) = load(&dir);
        model.set_training(false);
        model.set_fused_inference(true).unwrap();
        let d = decode_json(&dir);
        let (src, src_len) = (g.get("src").unwrap(), ids(g.get("src_len").unwrap()));
        let max_len = golden_max_len(&d, &src_len);
        let check = |failures: &mut Vec<String>,
                     what: String,
                     h: &Hypothesis,
                     want: &serde_json::Value,
                     _beam: bool| {
            compared += 1;
            let (want_tokens, want_score) = (
                tokens(&want["tokens"]),
                f64::from_bits(bits(&want["score_bits"])),
            );
            let diff = (h.score - want_score).abs();
            max_diff = max_diff.max(diff);
            if h.tokens != want_tokens || diff > TOL {
                failures.push(format!(
                    "{name} {what}: tokens {:?} score {:e}, PyTorch {want_tokens:?} {want_score:e}",
                    h.tokens, h.score
                ));
            }
        };
        compare_searches(
            &model,
            &name,
            &d,
            src,
            &src_len,
            &max_len,
            &mut failures,
            check,
        );
    }
    println!("fused: {compared} outputs compared; max score difference {max_diff:e} (tolerance {TOL:e}); {} differ", failures.len());
    assert!(failures.is_empty(), "{}\n{REGEN}", failures.join("\n"));
    assert!(
        max_diff > 0.0,
        "the fused kernels did not run: every score is PyTorch's bits"
    );
}

#[test]
fn teacher_forcing_logits_loss_and_gradients_are_pytorchs_bits() {
    let mut r = Report::default();
    let mut grads = 0;
    for dir in golden_dirs() {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let (mut model, g) = load(&dir);
        model.set_training(false);
        let src_len = ids(g.get("src_len").unwrap());
        let (src, tgt_in, tgt_out) = (
            g.get("src").unwrap(),
            g.get("tgt_in").unwrap(),
            g.get("tgt_out").unwrap(),
        );
        let logits = model.forward(src, &src_len, tgt_in).unwrap();
        r.check(
            &name,
            "logits",
            &logits,
            g.get("logits").unwrap(),
            Tolerance::Exact,
        );
        let loss = model.loss(&logits, tgt_out, 0.1).unwrap();
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
    r.finish("seq2seq teacher forcing vs PyTorch (bitwise)");
}

/// What differs between rnnkit's output (tokens, score) and PyTorch's (`tokens`, and the f64
/// bits of the score under `score_key`), if anything.
fn differs(
    got: (&[i64], Option<f64>),
    want: &serde_json::Value,
    score_key: &str,
) -> Option<String> {
    let want_tokens = tokens(&want["tokens"]);
    if got.0 != want_tokens.as_slice() {
        return Some(format!("tokens {:?}, PyTorch {want_tokens:?}", got.0));
    }
    let s = got.1?;
    let want_bits = bits(&want[score_key]);
    (s.to_bits() != want_bits)
        .then(|| format!("score {s:e}, PyTorch {:e}", f64::from_bits(want_bits)))
}

#[test]
fn greedy_beam_and_sampling_give_pytorchs_outputs() {
    let mut failures = Vec::new();
    let (mut sentences, mut hyps) = (0, 0);
    for dir in golden_dirs() {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let (mut model, g) = load(&dir);
        model.set_training(false);
        let d = decode_json(&dir);
        let src_len = ids(g.get("src_len").unwrap());
        let src = g.get("src").unwrap();
        let max_len = golden_max_len(&d, &src_len);
        let want_max: Vec<usize> = d["max_lengths"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(max_len, want_max, "{name}: maximum lengths");
        let mut check = |failures: &mut Vec<String>,
                         what: String,
                         got: (&[i64], Option<f64>),
                         want: &serde_json::Value,
                         score_key: &str| {
            hyps += 1;
            if let Some(f) = differs(got, want, score_key) {
                failures.push(format!("{name} {what}: {f}"));
            }
        };
        compare_searches(
            &model,
            &name,
            &d,
            src,
            &src_len,
            &max_len,
            &mut failures,
            |failures, what, h, w, beam| {
                check(
                    failures,
                    what.clone(),
                    (&h.tokens, Some(h.score)),
                    w,
                    "score_bits",
                );
                if beam {
                    let raw = (&h.tokens[..], Some(h.raw_score));
                    check(failures, format!("{what} raw"), raw, w, "raw_score_bits");
                }
            },
        );
        let s = &d["sample"];
        let samples = model
            .sample(
                src,
                &src_len,
                &max_len,
                s["seed"].as_u64().unwrap(),
                s["temperature"].as_f64().unwrap(),
                s["top_k"].as_i64().unwrap(),
                s["top_p"].as_f64().unwrap(),
            )
            .unwrap();
        for (i, (h, w)) in samples
            .iter()
            .zip(d["sampling"].as_array().unwrap())
            .enumerate()
        {
            let w = serde_json::json!({ "tokens": w });
            check(
                &mut failures,
                format!("sample {i}"),
                (&h.tokens, None),
                &w,
                "",
            );
        }
        sentences += src_len.len();
        println!(
            "{name}: greedy, beam and sampling outputs of {} sentences compared",
            src_len.len()
        );
    }
    println!(
        "{sentences} sentences, {hyps} outputs compared; {} differ",
        failures.len()
    );
    assert!(failures.is_empty(), "{}\n{REGEN}", failures.join("\n"));
    common::assert_count("sentences decoded", sentences, SENTENCES * CASES, REGEN);
}

/// Shared embeddings and a tied output are one tensor in rnnkit as in PyTorch: a file whose
/// two keys differ is refused, naming both; a file that stores the tied matrix once loads.
#[test]
fn tied_weights_load_when_stored_once_and_are_refused_when_they_differ() {
    let src = golden_dirs()
        .into_iter()
        .find(|d| d.ends_with("s2s_shared_tied_gru_dec"))
        .expect("the shared/tied case");
    let tmp = std::env::temp_dir().join(format!("rnnkit-s2s-tied-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    for f in ["config.json", "reference.safetensors"] {
        std::fs::copy(src.join(f), tmp.join(f)).unwrap();
    }
    let sd = rnnkit::StateDict::load(src.join("model.safetensors")).unwrap();
    let pairs: Vec<(String, Tensor)> = sd
        .iter()
        .map(|(k, t)| {
            let t = if k == "output.weight" {
                t + 1.0
            } else {
                t.shallow_clone()
            };
            (k.clone(), t)
        })
        .collect();
    rnnkit::StateDict::from_pairs(pairs)
        .unwrap()
        .save(tmp.join("model.safetensors"))
        .unwrap();
    let e = Model::load_dir(&tmp, Device::Cpu)
        .map(|_| ())
        .unwrap_err()
        .to_string();
    // Stored once (the target embedding and output weight keys left out), the tied matrix
    // loads under all three keys and gives the same logits.
    let once: Vec<(String, Tensor)> = sd
        .iter()
        .filter(|(k, _)| *k != "tgt_embedding.weight" && *k != "output.weight")
        .map(|(k, t)| (k.clone(), t.shallow_clone()))
        .collect();
    rnnkit::StateDict::from_pairs(once)
        .unwrap()
        .save(tmp.join("model.safetensors"))
        .unwrap();
    let (mut full, g) = load(&src);
    let (mut stored_once, _) = load(&tmp);
    full.set_training(false);
    stored_once.set_training(false);
    let src_len = ids(g.get("src_len").unwrap());
    let (s, t) = (g.get("src").unwrap(), g.get("tgt_in").unwrap());
    assert!(full
        .forward(s, &src_len, t)
        .unwrap()
        .equal(&stored_once.forward(s, &src_len, t).unwrap()));
    std::fs::remove_dir_all(&tmp).unwrap();
    assert!(
        e.contains("tie_output")
            && e.contains("tgt_embedding.weight")
            && e.contains("output.weight"),
        "{e}"
    );
}
