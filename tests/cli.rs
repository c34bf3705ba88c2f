//! The real binary, run as a user runs it: from a plain environment (no venv activated, no
//! LD_LIBRARY_PATH).

use std::process::Command;

fn rnnkit(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rnnkit"))
        .args(args)
        .env_remove("LD_LIBRARY_PATH")
        .env_remove("VIRTUAL_ENV")
        .env_remove("LIBTORCH")
        .output()
        .expect("run rnnkit")
}

#[test]
fn doctor_runs_from_a_plain_shell_and_finds_torch_2_13() {
    let out = rnnkit(&["doctor"]);
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(
        out.status.success(),
        "doctor failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("torch             2.13.0"), "{text}");
    assert!(text.contains("LSTM smoke test   ok"), "{text}");
}

#[test]
fn doctor_json_is_machine_readable() {
    let out = rnnkit(&["doctor", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert!(v["num_threads"].as_i64().unwrap() >= 1);
    assert!(v["libtorch_loaded_from"]
        .as_str()
        .unwrap()
        .ends_with("torch/lib"));
}

#[test]
fn unknown_subcommand_fails_with_usage() {
    let out = rnnkit(&["frobnicate"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Usage"));
}

#[test]
fn parity_reports_json_and_fails_on_a_wrong_reference() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/models");
    let (good, other) = (root.join("clf_gru_mean"), root.join("clf_lstm_last"));
    let good_s = good.to_str().unwrap();
    let out = rnnkit(&["parity", "--model", good_s, "--device", "cpu", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["ok"], true);
    assert_eq!(v["outputs"][0]["max_abs"], 0.0);
    // Another model's reference (same shapes of inputs and logits): must fail, non-zero exit.
    let wrong = other.join("reference.safetensors");
    let out = rnnkit(&[
        "parity",
        "--model",
        good_s,
        "--reference",
        wrong.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAIL"));
}

/// ULMFiT's two stages from the command line: `finetune-lm` adapts a language model to
/// unlabelled text, `finetune` turns the result into a classifier, `eval` scores it; and a
/// classifier given to `finetune-lm` is refused by name.
#[test]
fn finetune_lm_then_finetune_then_eval() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::temp_dir().join(format!("rnnkit-cli-lmft-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let data: String = (0..64)
        .map(|i| {
            let ids: Vec<u64> = (0..(3 + i % 7)).map(|k| 1 + (i * 7 + k * 3) % 39).collect();
            format!("{{\"ids\": {ids:?}, \"label\": {}}}\n", i % 2)
        })
        .collect();
    let train = dir.join("train.jsonl");
    std::fs::write(&train, data).unwrap();
    let lm = root.join("tests/golden/models/lm_lstm_tied");
    let cfg = dir.join("lm.json");
    let lm_out = dir.join("lm");
    std::fs::write(
        &cfg,
        serde_json::json!({"model": lm, "train": train, "valid": train, "out": lm_out,
                           "max_steps": 4, "batch_size": 16, "device": "cpu", "save_pth": false})
        .to_string(),
    )
    .unwrap();
    let o = rnnkit(&["finetune-lm", "--config", cfg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["steps"], 4);
    let lm_cfg = std::fs::read_to_string(lm_out.join("config.json")).unwrap();
    assert!(lm_cfg.contains("language_model"), "{lm_cfg}");

    let clf = dir.join("clf");
    let o = rnnkit(&[
        "finetune",
        "--model",
        lm_out.to_str().unwrap(),
        "--train",
        train.to_str().unwrap(),
        "--out",
        clf.to_str().unwrap(),
        "--labels",
        "a,b",
        "--max-steps",
        "3",
        "--device",
        "cpu",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = rnnkit(&[
        "eval",
        "--model",
        clf.to_str().unwrap(),
        "--data",
        train.to_str().unwrap(),
        "--json",
        "--device",
        "cpu",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let m: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(m["examples"], 64);

    let bad = dir.join("bad.json");
    let classifier = root.join("tests/golden/models/clf_lstm_last");
    std::fs::write(
        &bad,
        serde_json::json!({"model": classifier, "train": train, "out": dir.join("x"), "device": "cpu"})
            .to_string(),
    )
    .unwrap();
    let o = rnnkit(&["finetune-lm", "--config", bad.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("needs a language model") && err.contains("clf_lstm_last"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
