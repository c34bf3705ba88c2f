//! The binary on bad input: each case here once crashed (a Rust panic with a libtorch trace),
//! overwrote the user's model, trained the wrong way without a word, or blamed the wrong file.
//! Now each is refused before anything is written, with a message naming the file or setting.

mod common;

use common::golden_model;
use std::path::{Path, PathBuf};
use std::process::Command;
use tch::Tensor;

fn rnnkit(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rnnkit"))
        .args(args)
        .output()
        .expect("run rnnkit");
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!text.contains("panicked"), "{args:?}: {text}");
    assert!(!text.contains("frame #"), "libtorch trace leaked: {text}");
    (out.status.success(), text)
}

/// `rnnkit eval` of model directory `m` (the model is loaded before the data is read).
fn eval(m: &Path) -> (bool, String) {
    rnnkit(&[
        "eval",
        "--model",
        m.to_str().unwrap(),
        "--data",
        "/dev/null",
    ])
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rnnkit_cli_bad_{name}_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Rewrites `m/config.json` through `f`.
fn edit_config(m: &Path, f: impl Fn(&mut serde_json::Value)) {
    let p = m.join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&p, v.to_string()).unwrap();
}

/// Rewrites tensor `key` of `m/model.safetensors` through `f`.
fn edit_weight(m: &Path, key: &str, f: impl Fn(Tensor) -> Tensor) {
    let p = m.join("model.safetensors");
    let sd = rnnkit::checkpoint::load_state_dict(&p, None).unwrap();
    let pairs = sd
        .into_pairs()
        .into_iter()
        .map(|(k, t)| if k == key { (k.clone(), f(t)) } else { (k, t) });
    let sd = rnnkit::StateDict::from_pairs(pairs).unwrap();
    rnnkit::checkpoint::safetensors::save_state_dict(&p, &sd, &Default::default()).unwrap();
}

fn train_file(dir: &Path) -> String {
    let p = dir.join("train.jsonl");
    let lines: String = (0..16)
        .map(|i| {
            let (text, label) = if i % 2 == 0 {
                ("a fine and moving film", "positive")
            } else {
                ("dull , flat and far too long", "negative")
            };
            format!("{{\"text\": \"{text}\", \"label\": \"{label}\"}}\n")
        })
        .collect();
    std::fs::write(&p, lines).unwrap();
    p.display().to_string()
}

/// `rnnkit finetune` of `model` on `train` into `out`, two steps of batch 8 on the CPU, plus
/// `extra` flags.
fn finetune(model: &Path, train: &str, out: &Path, extra: &[&str]) -> (bool, String) {
    let (m, o) = (model.to_str().unwrap(), out.to_str().unwrap());
    let mut args = vec![
        "finetune",
        "--model",
        m,
        "--train",
        train,
        "--out",
        o,
        "--max-steps",
        "2",
        "--batch-size",
        "8",
        "--device",
        "cpu",
    ];
    args.extend_from_slice(extra);
    rnnkit(&args)
}

/// `finetune` on the golden classifier with `extra` flags: must fail before creating `out`.
fn refused(name: &str, extra: &[&str], expect: &str) {
    let dir = scratch(name);
    let model = golden_model("clf_tokenizer_attention");
    let out = dir.join("out");
    let train = train_file(&dir);
    let (ok, err) = finetune(&model, &train, &out, extra);
    assert!(!ok && err.contains(expect), "{extra:?}: {err}");
    assert!(!out.exists(), "{extra:?} created {}", out.display());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn finetune_settings_are_checked_before_anything_is_written() {
    refused("freeze_all", &["--freeze", "*"], "nothing to train");
    refused(
        "freeze_head",
        // The top group is the attention pooling and the head.
        &[
            "--freeze",
            "head.*",
            "--freeze",
            "attention.*",
            "--gradual-unfreezing",
        ],
        "nothing to train in epoch 1",
    );
    refused(
        "smoothing",
        &["--label-smoothing", "2"],
        "label_smoothing must be in [0, 1], got 2",
    );
    refused(
        "clip",
        &["--clip-grad-norm=-1"],
        "clip_grad_norm must be positive",
    );
    refused("weights", &["--class-weights", "0,0"], "class_weights");
    refused(
        "labels",
        &["--labels", "a,a,b", "--new-head"],
        "appears twice",
    );
}

#[test]
fn config_values_of_the_wrong_type_are_named_by_their_key_path() {
    let dir = scratch("config_types");
    let (model, out) = (golden_model("clf_tokenizer_attention"), dir.join("out"));
    // Inside the tagged schedule too (read by hand: serde would buffer it and lose the path).
    for (json, expect) in [
        (
            r#"{"epochs": "5"}"#,
            "at epochs: invalid type: string \"5\"",
        ),
        (
            r#"{"schedule": {"name": "slanted_triangular", "cut_frac": "0.1"}}"#,
            "at schedule.cut_frac: invalid type: string \"0.1\", expected f64",
        ),
        (
            r#"{"schedule": {"name": "cosine_annealing"}}"#,
            "at schedule: unknown variant `cosine_annealing`, expected one of",
        ),
    ] {
        let config = dir.join("finetune.json");
        std::fs::write(&config, json).unwrap();
        let config = config.to_str().unwrap().to_string();
        let (ok, err) = finetune(&model, &train_file(&dir), &out, &["--config", &config]);
        assert!(
            !ok && err.contains(&config) && err.contains(expect),
            "{err}"
        );
        assert!(!out.exists());
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn finetune_never_writes_over_its_own_model() {
    let dir = scratch("same_out");
    let model = dir.join("model");
    copy_dir(&golden_model("clf_tokenizer_attention"), &model);
    let before = std::fs::read(model.join("model.safetensors")).unwrap();
    let train = train_file(&dir);
    let (ok, err) = finetune(&model, &train, &model, &[]);
    assert!(!ok && err.contains("is the --model directory"), "{err}");
    assert_eq!(
        std::fs::read(model.join("model.safetensors")).unwrap(),
        before
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn broken_model_directories_name_the_file_and_the_problem() {
    let dir = scratch("broken");
    type Corrupt = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, Corrupt, &str)> = vec![
        (
            "truncated safetensors",
            Box::new(|m: &Path| {
                let p = m.join("model.safetensors");
                let bytes = std::fs::read(&p).unwrap();
                std::fs::write(&p, &bytes[..20]).unwrap();
            }),
            "truncated?",
        ),
        (
            "NaN weights",
            Box::new(|m: &Path| edit_weight(m, "head.weight", |t| t.fill(f64::NAN))),
            "head.weight [3, 32] holds 96 NaN",
        ),
        (
            "a misspelt config field",
            Box::new(|m: &Path| edit_config(m, |v| v["max_lenght"] = 2.into())),
            "unknown field `max_lenght`",
        ),
        (
            "an encoder setting only the layer checks",
            Box::new(|m: &Path| edit_config(m, |v| v["encoder"]["num_layers"] = 0.into())),
            "config.json: LSTM: num_layers must be positive",
        ),
        (
            "a misspelt encoder field",
            Box::new(|m: &Path| edit_config(m, |v| v["encoder"]["num_layer"] = 2.into())),
            "unknown field `encoder.num_layer`",
        ),
        (
            "an encoder value of the wrong type",
            Box::new(|m: &Path| edit_config(m, |v| v["encoder"]["hidden_size"] = "32".into())),
            "at encoder.hidden_size: invalid type: string \"32\"",
        ),
        (
            "a value of the wrong type",
            Box::new(|m: &Path| edit_config(m, |v| v["max_length"] = (-3).into())),
            "at max_length: invalid value: integer `-3`",
        ),
        (
            "a prefix for a submodule that does not exist",
            Box::new(|m: &Path| {
                edit_config(m, |v| v["prefixes"] = serde_json::json!({"bogus": "x."}))
            }),
            "unknown submodule \"bogus\"",
        ),
    ];
    for (i, (what, corrupt, expect)) in cases.iter().enumerate() {
        let m = dir.join(format!("m{i}"));
        copy_dir(&golden_model("clf_tokenizer_attention"), &m);
        corrupt(&m);
        let (ok, err) = eval(&m);
        assert!(!ok && err.contains(expect), "{what}: {err}");
        assert!(
            err.contains(m.to_str().unwrap()),
            "{what} names no file: {err}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn tied_weights_that_differ_are_refused() {
    let dir = scratch("tied");
    let m = dir.join("lm");
    copy_dir(&golden_model("lm_lstm_tied"), &m);
    edit_weight(&m, "decoder.weight", |t| t + 1.0);
    let (ok, err) = eval(&m);
    assert!(
        !ok && err.contains("tie_weights, but embedding.weight and decoder.weight differ"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_new_run_never_replaces_an_earlier_one() {
    let dir = scratch("earlier");
    let model = golden_model("clf_tokenizer_attention");
    let out = dir.join("out");
    let train = train_file(&dir);
    let run = |extra: &[&str]| finetune(&model, &train, &out, extra);
    let (ok, err) = run(&[]);
    assert!(ok, "{err}");
    let files = [
        "checkpoint.safetensors",
        "metrics.jsonl",
        "model.safetensors",
    ];
    let before: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(out.join(f)).unwrap())
        .collect();
    let (ok, err) = run(&["--lr", "0.5"]);
    assert!(
        !ok && err.contains("already holds a run") && err.contains("--resume"),
        "{err}"
    );
    for (f, b) in files.iter().zip(&before) {
        assert_eq!(&std::fs::read(out.join(f)).unwrap(), b, "{f} changed");
    }
    // Resuming with other settings names what changed.
    let (ok, err) = run(&["--resume", "--lr", "0.5"]);
    assert!(!ok && err.contains("lr: 0.001 then, 0.5 now"), "{err}");
    // A model file is not a trainer checkpoint.
    std::fs::copy(
        model.join("model.safetensors"),
        out.join("checkpoint.safetensors"),
    )
    .unwrap();
    let (ok, err) = run(&["--resume"]);
    assert!(
        !ok && err.contains("not an rnnkit fine-tuning checkpoint"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn parity_references_are_checked_and_named() {
    let dir = scratch("parity");
    let model = golden_model("clf_lstm_last");
    let m = model.to_str().unwrap();
    // No sequences: libtorch's "Cannot pack empty tensors" with its C++ trace, before.
    let empty = dir.join("empty.safetensors");
    let sd = rnnkit::StateDict::from_pairs([
        (
            "ids".to_string(),
            Tensor::zeros([0, 9], (tch::Kind::Int64, tch::Device::Cpu)),
        ),
        (
            "lengths".to_string(),
            Tensor::zeros([0], (tch::Kind::Int64, tch::Device::Cpu)),
        ),
        (
            "logits".to_string(),
            Tensor::zeros([0, 3], (tch::Kind::Float, tch::Device::Cpu)),
        ),
    ])
    .unwrap();
    rnnkit::checkpoint::safetensors::save_state_dict(&empty, &sd, &Default::default()).unwrap();
    let pth = dir.join("ref.pth");
    std::fs::copy(common::root().join("weights/sentiment/model.pth"), &pth).unwrap();
    for (reference, expect) in [(&empty, "N ≥ 1"), (&pth, "not one (a torch.save file?")] {
        let r = reference.to_str().unwrap();
        let (ok, err) = rnnkit(&["parity", "--model", m, "--reference", r, "--device", "cpu"]);
        assert!(!ok && err.contains(r) && err.contains(expect), "{err}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_failed_write_names_the_file_asked_for() {
    let model = golden_model("clf_lstm_last").join("model.safetensors");
    let target = "/nonexistent-rnnkit-dir/x.safetensors";
    let (ok, err) = rnnkit(&["convert", model.to_str().unwrap(), target]);
    assert!(
        !ok && err.contains(&format!("{target}:")) && !err.contains(".tmp-"),
        "{err}"
    );
}

#[test]
fn finetune_lm_never_writes_over_its_model_or_an_earlier_run() {
    let dir = scratch("lm_out");
    let (model, earlier) = (dir.join("lm"), dir.join("earlier"));
    copy_dir(&golden_model("lm_lstm_tied"), &model);
    std::fs::create_dir_all(&earlier).unwrap();
    std::fs::write(earlier.join("metrics.jsonl"), "{}\n").unwrap();
    let before = std::fs::read(model.join("model.safetensors")).unwrap();
    let train = dir.join("t.jsonl");
    std::fs::write(&train, "{\"ids\": [1, 2, 3, 4]}\n").unwrap();
    let config = dir.join("c.json");
    for (out, expect) in [
        (&model, "is the --model directory"),
        (&earlier, "already holds a run"),
    ] {
        let cfg = serde_json::json!({"model": model, "train": train, "out": out, "max_steps": 1});
        std::fs::write(&config, cfg.to_string()).unwrap();
        let (ok, err) = rnnkit(&["finetune-lm", "--config", config.to_str().unwrap()]);
        assert!(!ok && err.contains(expect), "{err}");
    }
    assert_eq!(
        std::fs::read(model.join("model.safetensors")).unwrap(),
        before
    );
    assert_eq!(
        std::fs::read(earlier.join("metrics.jsonl")).unwrap(),
        b"{}\n"
    );
    let _ = std::fs::remove_dir_all(dir);
}
