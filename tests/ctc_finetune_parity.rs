//! `rnnkit finetune-ctc` against `scripts/ctc_finetune_reference.py` (plain PyTorch): 50 steps
//! on each of 4 golden ctc models; with the same weights, WAV features, data order, per-step
//! seeds (dropout on), SpecAugment masks, frozen parameters, layer groups (gradual unfreezing,
//! discriminative rates), Adam, schedule and clipping, the per-step losses, the final weights and
//! the validation loss, WER and CER have identical bits (`Tolerance::Exact`). Also: a run killed
//! with SIGKILL and continued with `--resume` writes the same model bytes and log lines.

mod common;

use common::{losses, root, Report};
use rnnkit::models::parity::Tolerance;
use rnnkit::train::ctc_finetune::{run, CtcFinetuneConfig};
use serde_json::json;
use std::path::Path;
use std::process::Command;

const STEPS: usize = 50;

fn golden(name: &str) -> std::path::PathBuf {
    let p = root().join("tests/golden/ctc").join(name);
    assert!(
        p.join("config.json").exists(),
        "{} missing; run .venv/bin/python scripts/make_ctc_golden.py tests/golden/ctc",
        p.display()
    );
    p
}

fn valid_lines(p: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v.get("valid_loss").is_some())
        .collect()
}

#[test]
fn ctc_finetuning_matches_pytorch() {
    let sa = json!({"freq_masks": 2, "freq_width": 8, "time_masks": 2, "time_width": 6});
    // (golden model, freeze, gradual unfreezing, discriminative factor, SpecAugment)
    let cases = [
        (
            "ctc_lstm_bi_l2_conv1",
            vec!["subsampling.*"],
            false,
            None,
            Some(sa.clone()),
        ),
        ("ctc_gru_bi_l2", vec![], true, Some(2.6), None),
        (
            "ctc_lstm_prefixes_wide",
            vec!["rnn.*_l0*"],
            false,
            Some(2.0),
            Some(sa.clone()),
        ),
        ("ctc_rnn_relu_conv_s3", vec![], false, None, None),
    ];
    let data = root().join("tests/golden/ctc/train.jsonl");
    for (name, freeze, gradual, factor, spec) in cases {
        let model = golden(name);
        let dir = std::env::temp_dir().join(format!("rnnkit-ctcft-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = json!({
            "model": model, "train": data, "valid": data, "out": dir.join("rust"), "epochs": 13,
            "max_steps": STEPS, "batch_size": 2, "lr": 3e-3, "dropout": 0.2,
            "schedule": {"name": "slanted_triangular", "cut_frac": 0.1, "ratio": 32},
            "clip_grad_norm": 0.3, "freeze": freeze, "seed": 5, "device": "cpu", "save_pth": false,
            "gradual_unfreezing": gradual, "discriminative_factor": factor, "spec_augment": spec,
        });
        let cfg_path = dir.join("config.json");
        std::fs::write(&cfg_path, cfg.to_string()).unwrap();
        let rcfg: CtcFinetuneConfig = serde_json::from_value(cfg).unwrap();
        let report = run(&rcfg).unwrap();
        assert_eq!(report.steps, STEPS as u64);
        let out = Command::new(root().join(".venv/bin/python"))
            .arg(root().join("scripts/ctc_finetune_reference.py"))
            .args(["--config".as_ref(), cfg_path.as_os_str()])
            .args(["--out".as_ref(), dir.join("py").as_os_str()])
            .output()
            .expect("run the PyTorch reference (scripts/setup.sh makes .venv)");
        assert!(
            out.status.success(),
            "ctc_finetune_reference.py failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let py: serde_json::Value =
            serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
        assert_eq!(
            py["frozen"].as_u64().unwrap() as usize,
            report.frozen.len(),
            "{name}: frozen"
        );
        assert_eq!(
            py["trained"].as_u64().unwrap() as usize,
            report.trained.len(),
            "{name}: trained"
        );
        let (r, p) = (
            losses(&dir.join("rust/metrics.jsonl")),
            losses(&dir.join("py/metrics.jsonl")),
        );
        assert_eq!(
            (r.len(), p.len()),
            (STEPS, STEPS),
            "{name}: logged step losses"
        );
        let mut rep = Report::default();
        rep.check_values(name, "losses", &r, &p, Tolerance::Exact);
        let (rv, pv) = (
            valid_lines(&dir.join("rust/metrics.jsonl")),
            valid_lines(&dir.join("py/metrics.jsonl")),
        );
        assert_eq!(rv.len(), pv.len(), "{name}: validation lines");
        assert!(
            rv.len() >= 2,
            "{name}: validation before and after an epoch"
        );
        for key in ["valid_loss", "valid_wer", "valid_cer"] {
            let get = |v: &[serde_json::Value]| -> Vec<f64> {
                v.iter().map(|x| x[key].as_f64().unwrap()).collect()
            };
            rep.check_values(name, key, &get(&rv), &get(&pv), Tolerance::Exact);
        }
        let load = |f: &str| rnnkit::StateDict::load(dir.join(f)).unwrap();
        let (rw, pw, before) = (
            load("rust/model.safetensors"),
            load("py/model.safetensors"),
            rnnkit::StateDict::load(model.join("model.safetensors")).unwrap(),
        );
        assert_eq!(rw.len(), pw.len(), "{name}: keys");
        for (k, t) in pw.iter() {
            let got = rw
                .get(k)
                .unwrap_or_else(|| panic!("{name}: rnnkit wrote no {k}"));
            rep.check(name, k, got, t, Tolerance::Exact);
        }
        for k in &report.frozen {
            rep.check(
                name,
                &format!("{k} (frozen)"),
                rw.get(k).unwrap(),
                before.get(k).unwrap(),
                Tolerance::Exact,
            );
        }
        println!(
            "{name}: {STEPS} steps, losses {:.4} -> {:.4}; {} trained, {} frozen; valid (loss, WER) {:?}",
            r[0],
            r[STEPS - 1],
            report.trained.len(),
            report.frozen.len(),
            report.valid.iter().map(|v| (v.1, v.2)).collect::<Vec<_>>()
        );
        rep.finish(name);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// A `finetune-ctc` run killed with SIGKILL mid-run and continued with `--resume` writes the
/// same weights (bytes of model.safetensors) and log lines as an uninterrupted run (SpecAugment,
/// dropout, gradual unfreezing and checkpoints every 3 steps on); a second run into the same
/// directory without `--resume` is refused, naming the flag.
#[test]
fn ctc_sigkill_then_resume_is_bit_identical() {
    let dir = std::env::temp_dir().join(format!("rnnkit-ctc-resume-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let data = root().join("tests/golden/ctc/train.jsonl");
    let cfg = json!({"model": golden("ctc_lstm_bi_l2_conv1"), "train": data, "valid": data,
                     "out": dir.join("unused"), "epochs": 40, "batch_size": 2, "dropout": 0.3,
                     "checkpoint_every": 3, "seed": 9, "gradual_unfreezing": true,
                     "spec_augment": {"freq_masks": 1, "freq_width": 5, "time_masks": 1, "time_width": 4},
                     "clip_grad_norm": 1.0, "device": "cpu", "save_pth": false});
    let cfg_path = dir.join("cfg.json");
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let (a, b) = (dir.join("uninterrupted"), dir.join("killed"));
    let run = |out: &Path, extra: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_rnnkit"));
        c.args(["finetune-ctc", "--config"])
            .arg(&cfg_path)
            .arg("--out")
            .arg(out)
            .args(extra);
        c
    };
    let done = run(&a, &[]).output().unwrap();
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let lines = |p: &Path| -> Vec<String> {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    };
    let total = lines(&a.join("metrics.jsonl")).len();
    let mut child = run(&b, &[])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let log = b.join("metrics.jsonl");
    let start = std::time::Instant::now();
    while lines(&log).len() < total / 2 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed"
        );
        assert!(
            start.elapsed() < std::time::Duration::from_secs(120),
            "no progress"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let logged = lines(&log).len();
    assert!(
        logged < total,
        "killed after {logged} of {total} lines: the run had finished"
    );
    println!("killed after {logged} of {total} log lines");
    let again = run(&b, &[]).output().unwrap();
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        !again.status.success() && err.contains("--resume"),
        "a second run: {err}"
    );
    let resumed = run(&b, &["--resume"]).output().unwrap();
    assert!(
        resumed.status.success(),
        "resume failed: {}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert!(
        std::fs::read(a.join("model.safetensors")).unwrap()
            == std::fs::read(b.join("model.safetensors")).unwrap(),
        "resumed weights differ from the uninterrupted run"
    );
    assert_eq!(
        lines(&a.join("metrics.jsonl")),
        lines(&log),
        "log lines differ"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
