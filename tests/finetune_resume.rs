//! A fine-tuning run killed with SIGKILL mid-epoch and resumed with `--resume` ends
//! bit-identical (weights and per-step losses) to an uninterrupted run; and the fine-tuned
//! `.pth` loads in PyTorch with `weights_only=True` and `load_state_dict(strict=True)`.

use rnnkit::train::data::SplitMix64;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn write_data(path: &Path, n: usize, seed: u64) {
    let mut rng = SplitMix64(seed);
    let mut out = String::new();
    for _ in 0..n {
        let len = 2 + rng.next_u64() % 20;
        let ids: Vec<u64> = (0..len).map(|_| 1 + rng.next_u64() % 39).collect();
        let label = ids.iter().filter(|&&t| t < 13).count() % 3;
        out += &format!("{}\n", json!({"ids": ids, "label": label}));
    }
    std::fs::write(path, out).unwrap();
}

fn finetune(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rnnkit"));
    c.arg("finetune").args(args);
    c
}

fn step_losses(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| l.contains("\"loss\""))
        .map(str::to_string)
        .collect()
}

#[test]
fn sigkill_mid_epoch_then_resume_is_bit_identical() {
    let dir = std::env::temp_dir().join(format!("rnnkit-resume-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    write_data(&dir.join("train.jsonl"), 1600, 21);
    write_data(&dir.join("valid.jsonl"), 200, 22);
    let model = root().join("tests/golden/models/clf_lstm_bi_last_l2");
    let cfg = json!({"model": model, "train": dir.join("train.jsonl"), "valid": dir.join("valid.jsonl"),
                     "epochs": 2, "batch_size": 16, "dropout": 0.3, "checkpoint_every": 7, "seed": 9,
                     "optimizer": {"name": "adamw"}, "gradual_unfreezing": true, "device": "cpu"});
    let cfg_path = dir.join("cfg.json");
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let (a, b) = (dir.join("uninterrupted"), dir.join("killed"));
    let run = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "--config",
            cfg_path.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        finetune(&args)
    };

    assert!(run(&a, &[]).output().unwrap().status.success());

    let mut child = run(&b, &[])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let log = b.join("metrics.jsonl");
    let start = Instant::now();
    loop {
        let n = std::fs::read_to_string(&log)
            .map(|t| t.lines().count())
            .unwrap_or(0);
        if n >= 60 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed"
        );
        assert!(start.elapsed() < Duration::from_secs(120), "no progress");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let (logged, total) = (
        step_losses(&log).len(),
        step_losses(&a.join("metrics.jsonl")).len(),
    );
    // Any step before the last is a kill mid-run (checkpoints every 7 steps, 100 steps an epoch);
    // requiring the first epoch left only 40 steps of slack for a starved polling thread.
    assert!(
        logged < total,
        "killed after {logged} of {total} steps: the run had finished, move the kill earlier"
    );
    println!("killed after {logged} logged steps");

    let out = run(&b, &["--resume"]).output().unwrap();
    assert!(
        out.status.success(),
        "resume failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (wa, wb) = (
        std::fs::read(a.join("model.safetensors")).unwrap(),
        std::fs::read(b.join("model.safetensors")).unwrap(),
    );
    assert!(
        wa == wb,
        "resumed weights differ from the uninterrupted run"
    );
    let (la, lb) = (step_losses(&a.join("metrics.jsonl")), step_losses(&log));
    assert_eq!(la.len(), lb.len(), "different numbers of logged steps");
    if let Some((x, y)) = la.iter().zip(&lb).find(|(x, y)| x != y) {
        panic!("per-step logs differ:\n  uninterrupted: {x}\n  resumed:       {y}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn finetuned_pth_loads_in_pytorch_strictly() {
    let dir = std::env::temp_dir().join(format!("rnnkit-pth-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    write_data(&dir.join("train.jsonl"), 64, 5);
    let model = root().join("tests/golden/models/clf_user_prefixes");
    let out = dir.join("out");
    let st = finetune(&[
        "--model",
        model.to_str().unwrap(),
        "--train",
        dir.join("train.jsonl").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--epochs",
        "1",
        "--device",
        "cpu",
    ])
    .output()
    .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let check = r#"
import sys, torch
sys.path.insert(0, sys.argv[1] + "/scripts")
import rnnkit_models, json
from safetensors.torch import load_file
d = sys.argv[2]
sd = torch.load(d + "/model.pth", weights_only=True)
st = load_file(d + "/model.safetensors")
assert list(sd) == list(st) or sorted(sd) == sorted(st), (list(sd), list(st))
for k in st:
    assert torch.equal(sd[k], st[k]), k
cfg = json.load(open(d + "/config.json"))
m = rnnkit_models.build(cfg)
inv = {v: k + "." for k, v in m.cfg["prefixes"].items()}
renamed = {next(inv[p] + k[len(p):] for p in inv if k.startswith(p)): v for k, v in sd.items()}
m.load_state_dict(renamed, strict=True)
print("ok", len(sd), "tensors")
"#;
    let py = root().join(".venv/bin/python");
    let o = Command::new(py)
        .args(["-c", check, root().to_str().unwrap(), out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "PyTorch could not load rnnkit's .pth: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    println!("{}", String::from_utf8_lossy(&o.stdout));
    let _ = std::fs::remove_dir_all(&dir);
}
