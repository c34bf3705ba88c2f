//! `rnnkit finetune-seq2seq` against `scripts/seq2seq_finetune_reference.py` (plain PyTorch):
//! 50 steps on each of 6 golden models; with the same pretrained seq2seq model, pairs, data
//! order, per-step seeds (dropout on, between decoder layers too), frozen parameters, layer
//! groups (gradual unfreezing, discriminative learning rates), Adam, schedule, norm clipping
//! and label smoothing, the per-step losses and the final weights have identical bits
//! (`Tolerance::Exact`).

mod common;

use common::{losses, root, Report};
use rnnkit::models::parity::Tolerance;
use rnnkit::rng::SplitMix64;
use rnnkit::train::seq2seq_finetune::{run, Seq2SeqFinetuneConfig};
use serde_json::json;
use std::path::Path;
use std::process::Command;

/// Pairs of the golden models' toy task (reverse the source; token x becomes x mod 22 + 3),
/// as ids, with one pair in five corrupted so the loss has somewhere to go.
fn write_pairs(path: &Path, n: usize, src_vocab: u64, seed: u64) {
    let mut rng = SplitMix64(seed);
    let mut out = String::new();
    for k in 0..n {
        let len = 1 + rng.next_u64() % 9;
        let src: Vec<u64> = (0..len)
            .map(|_| 3 + rng.next_u64() % (src_vocab - 3))
            .collect();
        let mut tgt: Vec<u64> = src.iter().rev().map(|x| x % 22 + 3).collect();
        if k % 5 == 0 {
            tgt.push(3 + rng.next_u64() % 22);
        }
        out += &format!("{}\n", json!({"src_ids": src, "tgt_ids": tgt}));
    }
    std::fs::write(path, out).unwrap();
}

/// Steps per model: 8 epochs of 7 batches, cut at 50.
const STEPS: usize = 50;

#[test]
fn seq2seq_finetuning_matches_pytorch() {
    // (golden directory, freeze patterns, gradual unfreezing, discriminative factor), STEPS
    // steps each; with gradual unfreezing, 8 epochs open every group of these models.
    let cases = [
        (
            "s2s_lstm_bi_general_feed",
            vec!["encoder.*", "embedding.*"],
            false,
            None,
        ),
        ("s2s_shared_tied_gru_dec", vec![], true, Some(2.6)),
        ("s2s_rnn_enc_lstm_dec_prefixes", vec!["enc.*"], false, None),
        ("s2s_lstm_l2_dec_dropout_dot", vec!["bridge.*"], false, None),
        ("s2s_lstm_l2_bi_additive_feed", vec![], true, Some(2.6)),
        (
            "s2s_lstm_tied_output",
            vec!["embedding.*"],
            false,
            Some(2.0),
        ),
    ];
    for (name, freeze, gradual, factor) in cases {
        let model = root().join("tests/golden/seq2seq").join(name);
        assert!(
            model.join("config.json").exists(),
            "{} missing; run .venv/bin/python scripts/make_seq2seq_golden.py tests/golden/seq2seq",
            model.display()
        );
        let dir = std::env::temp_dir().join(format!("rnnkit-s2sft-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        write_pairs(&dir.join("train.jsonl"), 100, 30, 31);
        write_pairs(&dir.join("valid.jsonl"), 30, 30, 32);
        let cfg = json!({
            "model": model, "train": dir.join("train.jsonl"), "valid": dir.join("valid.jsonl"),
            "out": dir.join("rust"), "epochs": 8, "max_steps": STEPS, "batch_size": 16, "lr": 3e-3,
            "schedule": {"name": "slanted_triangular", "cut_frac": 0.1, "ratio": 32},
            "clip_grad_norm": 0.3, "label_smoothing": 0.1, "freeze": freeze, "seed": 5,
            "device": "cpu", "save_pth": false, "gradual_unfreezing": gradual,
            "discriminative_factor": factor,
        });
        let cfg_path = dir.join("config.json");
        std::fs::write(&cfg_path, cfg.to_string()).unwrap();
        let rcfg: Seq2SeqFinetuneConfig = serde_json::from_value(cfg).unwrap();
        let report = run(&rcfg).unwrap();
        assert_eq!(report.steps, STEPS as u64);
        let out = Command::new(root().join(".venv/bin/python"))
            .arg(root().join("scripts/seq2seq_finetune_reference.py"))
            .args(["--config".as_ref(), cfg_path.as_os_str()])
            .args(["--out".as_ref(), dir.join("py").as_os_str()])
            .output()
            .expect("run the PyTorch reference (scripts/setup.sh makes .venv)");
        assert!(
            out.status.success(),
            "seq2seq_finetune_reference.py failed:\n{}",
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
            "{name}: {STEPS} steps, losses {:.4} -> {:.4}; {} trained, {} frozen; valid loss {:?}",
            r[0],
            r[STEPS - 1],
            report.trained.len(),
            report.frozen.len(),
            report.valid.iter().map(|v| v.1).collect::<Vec<_>>()
        );
        rep.finish(name);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// A `finetune-seq2seq` run killed with SIGKILL mid-run and continued with `--resume` writes
/// the same weights (bytes of model.safetensors) and per-step log lines as an uninterrupted run
/// (gradual unfreezing, discriminative rates, dropout and checkpoints every 7 steps on).
#[test]
fn seq2seq_sigkill_then_resume_is_bit_identical() {
    let dir = std::env::temp_dir().join(format!("rnnkit-s2s-resume-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    write_pairs(&dir.join("train.jsonl"), 800, 30, 41);
    write_pairs(&dir.join("valid.jsonl"), 50, 30, 42);
    let model = root().join("tests/golden/seq2seq/s2s_lstm_l2_bi_additive_feed");
    let cfg = json!({"model": model, "train": dir.join("train.jsonl"), "valid": dir.join("valid.jsonl"),
                     "out": dir.join("unused"), "epochs": 3, "batch_size": 16, "dropout": 0.3,
                     "checkpoint_every": 7, "seed": 9, "gradual_unfreezing": true,
                     "discriminative_factor": 2.6, "clip_grad_norm": 1.0, "device": "cpu",
                     "save_pth": false});
    let cfg_path = dir.join("cfg.json");
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let (a, b) = (dir.join("uninterrupted"), dir.join("killed"));
    let run = |out: &Path, extra: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_rnnkit"));
        c.args(["finetune-seq2seq", "--config"])
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
    let step_lines = |p: &Path| -> Vec<String> {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    };
    let total = step_lines(&a.join("metrics.jsonl")).len();

    let mut child = run(&b, &[])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let log = b.join("metrics.jsonl");
    let start = std::time::Instant::now();
    // 50 steps an epoch: past 60 lines the run is into its second epoch (group `encoder.l1` open).
    while step_lines(&log).len() < 60 {
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
    let logged = step_lines(&log).len();
    assert!(
        logged < total,
        "killed after {logged} of {total} log lines: the run had finished, move the kill earlier"
    );
    println!("killed after {logged} of {total} log lines");
    // Without --resume the directory is refused, naming the flag.
    let again = run(&b, &[]).output().unwrap();
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        !again.status.success() && err.contains("--resume"),
        "a second run into the same --out: {err}"
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
    let (la, lb) = (step_lines(&a.join("metrics.jsonl")), step_lines(&log));
    assert_eq!(la.len(), lb.len(), "different numbers of log lines");
    if let Some((x, y)) = la.iter().zip(&lb).find(|(x, y)| x != y) {
        panic!("logs differ:\n  uninterrupted: {x}\n  resumed:       {y}");
    }
    // A changed setting is refused, naming it.
    let mut changed = cfg.clone();
    changed["lr"] = json!(0.5);
    std::fs::write(&cfg_path, changed.to_string()).unwrap();
    let refused = run(&b, &["--resume"]).output().unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && err.contains("lr: 0.001 then, 0.5 now"),
        "resume with another lr: {err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
