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
