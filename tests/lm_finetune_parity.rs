//! `rnnkit finetune-lm` (ULMFiT's second stage) against `scripts/lm_finetune_reference.py`
//! (plain PyTorch): with the same pretrained language model, data order, per-step seeds, AdamW,
//! slanted triangular schedule and norm clipping, the per-step losses and the final weights
//! have identical bits (compared with `parity::compare`, `Tolerance::Exact`).

mod common;

use common::{golden_model, losses, root, Report};
use rnnkit::models::parity::Tolerance;
use rnnkit::train::data::SplitMix64;
use serde_json::json;
use std::path::Path;
use std::process::Command;

/// Token-id sequences with a learnable pattern (each id tends to follow its predecessor + 1).
fn write_text(path: &Path, n: usize, vocab: u64, seed: u64) {
    let mut rng = SplitMix64(seed);
    let mut out = String::new();
    for _ in 0..n {
        let len = 1 + rng.next_u64() % 14;
        let mut id = 1 + rng.next_u64() % (vocab - 1);
        let mut ids = vec![];
        for _ in 0..len {
            ids.push(id);
            id = if rng.next_u64().is_multiple_of(4) {
                1 + rng.next_u64() % (vocab - 1)
            } else {
                1 + id % (vocab - 1)
            };
        }
        out += &format!("{}\n", json!({"ids": ids, "label": "ignored"}));
    }
    std::fs::write(path, out).unwrap();
}

/// Losses and weights: identical bits.
const TOL: Tolerance = Tolerance::Exact;

#[test]
fn language_model_finetuning_matches_pytorch() {
    for model in ["lm_lstm_tied", "lm_gru_l2"] {
        let dir = std::env::temp_dir().join(format!("rnnkit-lmft-{}-{model}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        write_text(&dir.join("train.jsonl"), 200, 40, 21);
        write_text(&dir.join("valid.jsonl"), 60, 40, 22);
        let cfg = json!({
            "model": golden_model(model), "train": dir.join("train.jsonl"),
            "valid": dir.join("valid.jsonl"), "out": dir.join("rust"), "dropout": 0.0, "epochs": 3,
            "max_steps": 30, "batch_size": 16, "lr": 3e-3,
            "optimizer": {"name": "adamw", "weight_decay": 0.01},
            "schedule": {"name": "slanted_triangular", "cut_frac": 0.1, "ratio": 32},
            "clip_grad_norm": 0.3, "seed": 5, "device": "cpu", "save_pth": false,
        });
        let cfg_path = dir.join("config.json");
        std::fs::write(&cfg_path, cfg.to_string()).unwrap();
        let rcfg: rnnkit::train::lm_finetune::LmFinetuneConfig =
            serde_json::from_value(cfg).unwrap();
        let report = rnnkit::train::lm_finetune::run(&rcfg).unwrap();
        assert_eq!(report.steps, 30);
        let status = Command::new(root().join(".venv/bin/python"))
            .arg(root().join("scripts/lm_finetune_reference.py"))
            .args(["--config".as_ref(), cfg_path.as_os_str()])
            .args(["--out".as_ref(), dir.join("py").as_os_str()])
            .status()
            .expect("run the PyTorch reference (scripts/setup.sh makes .venv)");
        assert!(status.success(), "lm_finetune_reference.py failed");
        let (r, p) = (
            losses(&dir.join("rust/metrics.jsonl")),
            losses(&dir.join("py/metrics.jsonl")),
        );
        assert_eq!(r.len(), 30, "rnnkit logged {} step losses", r.len());
        assert_eq!(p.len(), 30, "the reference logged {} step losses", p.len());
        // Logged as f32 values widened to f64 on both sides: identical bits in the log are
        // identical f32 losses.
        let mut rep = Report::default();
        rep.check_values(model, "losses", &r, &p, TOL);
        let rw =
            rnnkit::checkpoint::safetensors::load_state_dict(dir.join("rust/model.safetensors"))
                .unwrap();
        let pw = rnnkit::checkpoint::safetensors::load_state_dict(dir.join("py/model.safetensors"))
            .unwrap();
        let mut tensors = 0;
        for (k, t) in pw.iter() {
            let got = rw
                .get(k)
                .unwrap_or_else(|| panic!("{model}: rnnkit wrote no {k}"));
            rep.check(model, k, got, t, TOL);
            tensors += 1;
        }
        assert!(tensors > 0, "{model}: the reference wrote no weights");
        println!(
            "{model}: 30 steps, losses {:.4} -> {:.4}; {tensors} weight tensors; valid perplexity {:?}",
            r[0],
            r[29],
            report.valid.iter().map(|v| v.2).collect::<Vec<_>>()
        );
        rep.finish(model);
        let ppl: Vec<f64> = report.valid.iter().map(|v| v.2).collect();
        assert!(
            ppl.len() == 3 && ppl[2] < ppl[0],
            "{model}: validation perplexity {ppl:?} did not fall"
        );
        if model == "lm_lstm_tied" {
            let (e, d) = (
                rw.get("embedding.weight").unwrap(),
                rw.get("decoder.weight").unwrap(),
            );
            assert!(e.equal(d), "the tied decoder left the embedding");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
