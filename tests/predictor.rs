//! The embeddable Predictor: PyTorch's probabilities for raw texts (tokenizer included), batch
//! invariance, thread safety, and `rnnkit predict` agreeing with the library.

mod common;

use common::{assert_count, Report};
use rnnkit::models::parity::Tolerance;
use rnnkit::serve::predictor::{Predictor, PredictorOptions};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

fn model_dir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/models/clf_tokenizer_attention");
    assert!(
        d.join("predictions.json").exists(),
        "{} missing: run scripts/test.sh (make_model_golden.py)",
        d.display()
    );
    d
}

/// Texts in `predictions.json`: `TEXTS` of scripts/make_model_golden.py.
const REFERENCE_TEXTS: usize = 10;

/// rnnkit's probabilities against PyTorch's (`token_ids_and_probabilities_match_pytorch`): the
/// Predictor runs the fused inference kernel, not PyTorch's, so not the same bits. Measured
/// worst: 3.0e-8 (2 of the 10 texts differ in one or more bits).
const TOL_PYTORCH: Tolerance = Tolerance::Close {
    atol: 1e-5,
    rtol: 0.0,
};
/// A text alone against the same text in a batch of 64 (and reversed).
const TOL_BATCH: Tolerance = Tolerance::Exact;
/// `rnnkit predict` against the library.
const TOL_CLI: Tolerance = Tolerance::Exact;

/// f32 probabilities widened to f64 (exact), to compare with PyTorch's (f32 values that
/// Python's `tolist()` widened to f64 and `json.dump` wrote with full precision).
fn widen(p: &[f32]) -> Vec<f64> {
    p.iter().map(|&x| x as f64).collect()
}

fn reference() -> Vec<(String, Vec<i64>, Vec<f64>)> {
    let v: Value = serde_json::from_str(
        &std::fs::read_to_string(model_dir().join("predictions.json")).unwrap(),
    )
    .unwrap();
    let refs: Vec<(String, Vec<i64>, Vec<f64>)> = v["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let ids = p["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_i64().unwrap())
                .collect();
            let probs = p["probabilities"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            (p["text"].as_str().unwrap().to_string(), ids, probs)
        })
        .collect();
    assert_count(
        "texts in predictions.json",
        refs.len(),
        REFERENCE_TEXTS,
        "regenerate with scripts/make_model_golden.py",
    );
    refs
}

fn load(max_batch: usize, workers: usize) -> Predictor {
    let opts = PredictorOptions {
        max_batch,
        max_wait: Duration::from_millis(5),
        workers,
        queue_capacity: 1024,
        batch_invariant: true,
        fused_transcription: false,
    };
    Predictor::load(&model_dir(), tch::Device::Cpu, opts).unwrap()
}

#[test]
fn predictor_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<Predictor>();
}

#[test]
fn token_ids_and_probabilities_match_pytorch() {
    let refs = reference();
    let tok =
        rnnkit::models::tokenizer::Tokenizer::from_file(&model_dir().join("tokenizer.json"), 64, 0)
            .unwrap();
    for (text, ids, _) in &refs {
        assert_eq!(&tok.encode(text).unwrap(), ids, "token ids of {text:?}");
    }
    let p = load(32, 1);
    let texts: Vec<&str> = refs.iter().map(|r| r.0.as_str()).collect();
    let preds = p.predict(&texts).unwrap();
    assert_eq!(preds.len(), refs.len());
    let mut r = Report::default();
    for (i, ((text, _, want), got)) in refs.iter().zip(&preds).enumerate() {
        r.check_values(
            &format!("text {i}"),
            "probabilities",
            &widen(&got.probabilities),
            want,
            TOL_PYTORCH,
        );
        let best = want
            .iter()
            .enumerate()
            .fold((0, f64::MIN), |m, (i, &x)| if x > m.1 { (i, x) } else { m })
            .0;
        assert_eq!(got.label_id, best as i64, "{text:?}");
    }
    r.finish("probabilities, rnnkit vs PyTorch");
}

#[test]
fn a_texts_result_does_not_depend_on_its_batch() {
    let refs = reference();
    let texts: Vec<&str> = refs.iter().map(|r| r.0.as_str()).collect();
    let alone = load(1, 1);
    let together = load(64, 1);
    let singles: Vec<_> = texts
        .iter()
        .map(|t| alone.predict(&[t]).unwrap().remove(0))
        .collect();
    let batched = together.predict(&texts).unwrap();
    // And reversed, so each text sits at another position next to other neighbours.
    let mut rev = texts.clone();
    rev.reverse();
    let mut reversed = together.predict(&rev).unwrap();
    reversed.reverse();
    assert_eq!((batched.len(), reversed.len()), (texts.len(), texts.len()));
    let mut rep = Report::default();
    for (i, ((s, b), r)) in singles.iter().zip(&batched).zip(&reversed).enumerate() {
        let (alone, case) = (widen(&s.probabilities), format!("text {i}"));
        rep.check_values(
            &case,
            "batched",
            &widen(&b.probabilities),
            &alone,
            TOL_BATCH,
        );
        rep.check_values(
            &case,
            "reversed",
            &widen(&r.probabilities),
            &alone,
            TOL_BATCH,
        );
        assert_eq!((s.label_id, s.label_id), (b.label_id, r.label_id));
    }
    rep.finish("alone vs batched");
}

#[test]
fn many_threads_share_one_predictor() {
    let p = load(16, 2);
    let refs = reference();
    let want: Vec<_> = refs
        .iter()
        .map(|r| p.predict(&[r.0.as_str()]).unwrap().remove(0).label_id)
        .collect();
    std::thread::scope(|s| {
        for t in 0..8 {
            let (p, refs, want) = (p.clone(), &refs, &want);
            s.spawn(move || {
                for i in 0..20 {
                    let k = (t * 7 + i) % refs.len();
                    assert_eq!(
                        p.predict(&[refs[k].0.as_str()]).unwrap()[0].label_id,
                        want[k]
                    );
                }
            });
        }
    });
    assert!(
        p.stats()
            .sequences
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 160
    );
}

#[test]
fn cli_predict_matches_the_library() {
    let refs = reference();
    let dir = std::env::temp_dir().join(format!("rnnkit-predict-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("in.txt");
    // Plain lines and JSONL lines mixed, after a byte-order mark; a blank line is an empty
    // text (the references include "" and "   "), so outputs stay aligned with inputs.
    let mut lines = String::from("\u{feff}");
    let kept: Vec<&str> = refs.iter().map(|r| r.0.as_str()).collect();
    assert!(kept[2].is_empty(), "the references' third text is empty");
    for (i, t) in kept.iter().enumerate() {
        if i % 2 == 0 {
            lines += &format!("{t}\n");
        } else {
            lines += &format!("{}\n", serde_json::json!({"text": t}));
        }
    }
    std::fs::write(&input, lines).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rnnkit"))
        .args([
            "predict",
            "--model",
            model_dir().to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--device",
            "cpu",
            "--batch-size",
            "4",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(got.len(), kept.len());
    let p = load(64, 1);
    let lib = p.predict(&kept).unwrap();
    let mut rep = Report::default();
    for (i, (g, l)) in got.iter().zip(&lib).enumerate() {
        assert_eq!(g["label"], l.label.as_str());
        let probs = g["probabilities"].as_object().unwrap();
        assert_eq!(
            probs.keys().cloned().collect::<Vec<_>>(),
            ["negative", "neutral", "positive"]
        );
        // The CLI prints f32 values: rounding the parsed f64 back to f32 recovers them exactly.
        let cli: Vec<f64> = probs
            .values()
            .map(|v| v.as_f64().unwrap() as f32 as f64)
            .collect();
        rep.check_values(
            &format!("line {i}"),
            "probabilities",
            &cli,
            &widen(&l.probabilities),
            TOL_CLI,
        );
    }
    rep.finish("rnnkit predict vs the library");
    let _ = std::fs::remove_dir_all(&dir);
}
