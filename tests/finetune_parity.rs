//! Fine-tuning against `scripts/finetune_reference.py` (plain PyTorch): with the same initial
//! weights, data order and per-step seeds and dropout 0, the per-step losses and the final
//! weights have identical bits — for Adam and AdamW, with and without clipping, with a frozen
//! encoder and with gradual unfreezing, with soft targets ("probs"); SGD with Nesterov agrees
//! within 1e-5 relative (losses) and 1e-5 absolute (weights). Plus freezing guarantees.

mod common;

use common::{golden_model, losses, rng_lock, root, Report};
use rnnkit::models::parity::{compare, Tolerance};
use rnnkit::train::data::SplitMix64;
use rnnkit::train::finetune::FinetuneConfig;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rnnkit-ft-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Deterministic token-id data whose label depends on the tokens (learnable).
fn write_data(path: &Path, n: usize, vocab: u64, classes: u64, seed: u64) {
    write_data_with(path, n, vocab, classes, seed, false)
}

/// `write_data`; with `soft`, every second row also has "probs": its label's class gets
/// 0.5-0.9, the rest shared equally.
fn write_data_with(path: &Path, n: usize, vocab: u64, classes: u64, seed: u64, soft: bool) {
    let mut rng = SplitMix64(seed);
    let mut out = String::new();
    for i in 0..n {
        let len = 2 + rng.next_u64() % 12;
        let ids: Vec<u64> = (0..len).map(|_| 1 + rng.next_u64() % (vocab - 1)).collect();
        let label = ids.iter().filter(|&&t| t < vocab / 3).count() as u64 % classes;
        let mut row = json!({"ids": ids, "label": label});
        if soft && i % 2 == 0 {
            let top = 0.5 + 0.1 * (rng.next_u64() % 5) as f64;
            let rest = (1.0 - top) / (classes - 1) as f64;
            let probs: Vec<f64> = (0..classes)
                .map(|c| if c == label { top } else { rest })
                .collect();
            row["probs"] = json!(probs);
        }
        out += &format!("{row}\n");
    }
    std::fs::write(path, out).unwrap();
}

fn python() -> PathBuf {
    let py = root().join(".venv/bin/python");
    assert!(
        py.exists(),
        "{} missing: run scripts/setup.sh",
        py.display()
    );
    py
}

fn weights(path: &Path) -> rnnkit::StateDict {
    rnnkit::checkpoint::safetensors::load_state_dict(path).unwrap()
}

/// What one configuration must meet: the per-step losses and every final weight.
#[derive(Clone, Copy)]
struct Tolerances {
    losses: Tolerance,
    weights: Tolerance,
}

const EXACT: Tolerances = Tolerances {
    losses: Tolerance::Exact,
    weights: Tolerance::Exact,
};

/// Runs rnnkit and the PyTorch reference on one configuration and compares, through
/// `parity::compare`, the 50 per-step losses (as logged: f32 values widened to f64 on both
/// sides, so identical bits in the log are identical f32 losses) and every final weight.
fn trajectory(name: &str, model: &str, extra: Value, soft: bool, tol: Tolerances) {
    let dir = scratch(name);
    write_data_with(&dir.join("train.jsonl"), 180, 40, 3, 11, soft);
    write_data(&dir.join("valid.jsonl"), 40, 40, 3, 12);
    let mut cfg = json!({
        "model": golden_model(model), "train": dir.join("train.jsonl"), "valid": dir.join("valid.jsonl"),
        "out": dir.join("rust"), "dropout": 0.0, "epochs": 10, "max_steps": 50, "batch_size": 16, "lr": 3e-3,
        "seed": 5, "device": "cpu", "save_pth": false,
    });
    for (k, v) in extra.as_object().unwrap() {
        cfg[k] = v.clone();
    }
    let cfg_path = dir.join("finetune.json");
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let parsed: FinetuneConfig = serde_json::from_value(cfg.clone()).unwrap();
    // Seeds, then draws a new head and dropout masks: no other test may draw in between.
    let report = {
        let _rng = rng_lock();
        rnnkit::train::finetune::run(&parsed).unwrap()
    };
    assert_eq!(report.steps, 50);
    let st = Command::new(python())
        .arg(root().join("scripts/finetune_reference.py"))
        .args([
            "--config",
            cfg_path.to_str().unwrap(),
            "--out",
            dir.join("py").to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(st.success(), "finetune_reference.py failed");
    let (lr, lp) = (
        losses(&dir.join("rust/metrics.jsonl")),
        losses(&dir.join("py/metrics.jsonl")),
    );
    assert_eq!(lr.len(), 50, "rnnkit logged {} step losses", lr.len());
    assert_eq!(lp.len(), 50, "reference logged {} step losses", lp.len());
    let mut r = Report::default();
    r.check_values(name, "losses", &lr, &lp, tol.losses);
    let (wr, wp) = (
        weights(&dir.join("rust/model.safetensors")),
        weights(&dir.join("py/model.safetensors")),
    );
    let (mut kr, mut kp): (Vec<&String>, Vec<&String>) = (wr.keys().collect(), wp.keys().collect());
    kr.sort();
    kp.sort();
    assert_eq!(
        kr, kp,
        "{name}: rnnkit and PyTorch wrote different weight names"
    );
    for (k, t) in wr.iter() {
        r.check(name, k, t, wp.require(k).unwrap(), tol.weights);
    }
    println!(
        "{name:<36} losses: first {:.6} last {:.6}; tolerance: losses {}, weights {}",
        lr[0], lr[49], tol.losses, tol.weights
    );
    let _ = std::fs::remove_dir_all(&dir);
    r.finish(name);
}

fn assert_parity(name: &str, model: &str, extra: Value) {
    trajectory(name, model, extra, false, EXACT)
}

#[test]
fn adam_frozen_encoder_matches_pytorch() {
    assert_parity(
        "adam_frozen_encoder",
        "clf_lstm_bi_last_l2",
        json!({"freeze": ["embedding.*", "encoder.*"]}),
    );
}

#[test]
fn adam_with_clipping_and_attention_matches_pytorch() {
    assert_parity(
        "adam_clip_norm_attention",
        "clf_lstm_bi_attention",
        json!({"clip_grad_norm": 0.5}),
    );
}

#[test]
fn adamw_gradual_unfreezing_stlr_matches_pytorch() {
    assert_parity(
        "adamw_gradual_unfreezing_stlr",
        "clf_lstm_concat_l2",
        json!({"optimizer": {"name": "adamw"}, "gradual_unfreezing": true, "discriminative_factor": 2.6,
               "schedule": {"name": "slanted_triangular"}, "clip_grad_value": 0.1}),
    );
}

#[test]
fn adamw_new_head_from_language_model_matches_pytorch() {
    assert_parity(
        "adamw_new_head_from_lm",
        "lm_gru_l2",
        json!({"optimizer": {"name": "adamw", "weight_decay": 0.05}, "labels": ["a", "b", "c"], "pooling": "concat",
               "clip_grad_norm": 0.3, "schedule": {"name": "cosine"}}),
    );
}

/// SGD with Nesterov momentum: not the same bits as PyTorch. Losses within 1e-5 relative,
/// weights within 1e-5 absolute; measured worst: 1.2e-7 relative (losses), 3.0e-8 (weights).
const SGD_TOL: Tolerances = Tolerances {
    losses: Tolerance::Close {
        atol: 0.0,
        rtol: 1e-5,
    },
    weights: Tolerance::Close {
        atol: 1e-5,
        rtol: 0.0,
    },
};

#[test]
fn sgd_nesterov_and_label_smoothing_match_pytorch() {
    trajectory(
        "sgd_nesterov_smoothing",
        "clf_gru_mean",
        json!({"optimizer": {"name": "sgd", "momentum": 0.9, "nesterov": true}, "lr": 0.05, "label_smoothing": 0.1,
               "class_weights": [1.0, 2.0, 0.5], "schedule": {"name": "linear_warmup", "warmup_steps": 10}}),
        false,
        SGD_TOL,
    );
}

#[test]
fn soft_targets_with_class_weights_and_smoothing_match_pytorch() {
    // Half the rows carry "probs": those batches take CrossEntropyLoss's probability form.
    trajectory(
        "soft_targets",
        "clf_lstm_concat_l2",
        json!({"optimizer": {"name": "adamw"}, "label_smoothing": 0.1, "class_weights": [1.0, 2.0, 0.5],
               "clip_grad_norm": 1.0}),
        true,
        EXACT,
    );
}

#[test]
fn frozen_parameters_stay_bit_identical_and_get_no_optimizer_state() {
    let _rng = rng_lock(); // builds models and seeds: see rng_lock
    let dir = scratch("frozen");
    write_data(&dir.join("train.jsonl"), 64, 40, 3, 3);
    let model = golden_model("clf_gru_bi_max");
    let cfg: FinetuneConfig = serde_json::from_value(json!({
        "model": model, "train": dir.join("train.jsonl"), "out": dir.join("out"), "epochs": 2, "batch_size": 16,
        "freeze": ["encoder.*"], "device": "cpu", "save_pth": false,
    }))
    .unwrap();
    rnnkit::train::finetune::run(&cfg).unwrap();
    let (before, after) = (
        weights(&model.join("model.safetensors")),
        weights(&dir.join("out/model.safetensors")),
    );
    assert_eq!(before.len(), after.len());
    for (k, t) in before.iter() {
        let d = compare(k, after.require(k).unwrap(), t, Tolerance::Exact).unwrap();
        assert_eq!(
            d.bitwise_equal,
            k.starts_with("encoder."),
            "{k}: frozen={} but identical bits={}: {d}",
            k.starts_with("encoder."),
            d.bitwise_equal
        );
    }
    let ckpt = weights(&dir.join("out/checkpoint.safetensors"));
    let stateful: Vec<_> = ckpt.keys().filter(|k| k.starts_with("optim.")).collect();
    assert!(
        !stateful.is_empty() && stateful.iter().all(|k| !k.starts_with("optim.encoder.")),
        "{stateful:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_input_fails_before_training() {
    let _rng = rng_lock(); // builds models and seeds: see rng_lock
    let dir = scratch("bad");
    let model = golden_model("clf_lstm_last");
    write_data(&dir.join("ok.jsonl"), 8, 40, 3, 1);
    std::fs::write(
        dir.join("badlabel.jsonl"),
        "{\"ids\": [1, 2], \"label\": 7}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("badtoken.jsonl"),
        "{\"ids\": [1, 99], \"label\": 0}\n",
    )
    .unwrap();
    std::fs::write(dir.join("empty.jsonl"), "").unwrap();
    let base = json!({"model": model, "train": dir.join("ok.jsonl"), "out": dir.join("out"), "device": "cpu"});
    let cases = [
        (
            json!({"train": dir.join("badlabel.jsonl")}),
            "label 7 out of range",
        ),
        (
            json!({"train": dir.join("badtoken.jsonl")}),
            "token id 99 outside the vocabulary",
        ),
        (json!({"train": dir.join("empty.jsonl")}), "no examples"),
        (json!({"train": dir.join("missing.jsonl")}), "missing.jsonl"),
        (json!({"freeze": ["encdr.*"]}), "matches no parameter"),
        (
            json!({"model": golden_model("lm_lstm_tied"), "labels": null}),
            "needs labels",
        ),
        (
            json!({"class_weights": [1.0]}),
            "1 class weights for 3 classes",
        ),
    ];
    for (patch, want) in cases {
        let mut v = base.clone();
        for (k, x) in patch.as_object().unwrap() {
            v[k] = x.clone();
        }
        let cfg: FinetuneConfig = serde_json::from_value(v).unwrap();
        let e = rnnkit::train::finetune::run(&cfg)
            .expect_err(want)
            .to_string();
        assert!(e.contains(want), "want {want:?} in: {e}");
        assert!(
            !dir.join("out/checkpoint.safetensors").exists(),
            "{want}: training started"
        );
    }
    // A config that does not match the weights.
    let bad_model = dir.join("mismatch");
    std::fs::create_dir_all(&bad_model).unwrap();
    let mut c: Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("config.json")).unwrap()).unwrap();
    c["encoder"]["hidden_size"] = json!(13);
    std::fs::write(bad_model.join("config.json"), c.to_string()).unwrap();
    std::fs::copy(
        model.join("model.safetensors"),
        bad_model.join("model.safetensors"),
    )
    .unwrap();
    let mut v = base.clone();
    v["model"] = json!(bad_model);
    let e = rnnkit::train::finetune::run(&serde_json::from_value(v).unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("size mismatch for encoder.weight_hh_l0"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn non_finite_loss_stops_with_a_clear_error_and_keeps_the_last_checkpoint() {
    let _rng = rng_lock(); // builds models and seeds: see rng_lock
    let dir = scratch("nan");
    write_data(&dir.join("train.jsonl"), 64, 40, 3, 4);
    let cfg: FinetuneConfig = serde_json::from_value(json!({
        "model": golden_model("clf_lstm_last"), "train": dir.join("train.jsonl"), "out": dir.join("out"),
        "epochs": 3, "batch_size": 8, "optimizer": {"name": "sgd"}, "lr": 1e300, "checkpoint_every": 1,
        "device": "cpu", "save_pth": false,
    }))
    .unwrap();
    let e = rnnkit::train::finetune::run(&cfg).unwrap_err().to_string();
    println!("{e}");
    assert!(
        (e.contains("loss became") || e.contains("became NaN or infinite"))
            && e.contains("checkpoint.safetensors"),
        "{e}"
    );
    let ckpt = weights(&dir.join("out/checkpoint.safetensors"));
    for (k, t) in ckpt.iter() {
        if t.is_floating_point() {
            assert!(
                t.isfinite().all().int64_value(&[]) == 1,
                "{k} in the kept checkpoint is not finite"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
