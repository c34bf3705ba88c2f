//! `rnnkit inspect` and `rnnkit convert`, run as a user would (the real binary), on the golden
//! checkpoints from `.venv/bin/python scripts/make_pth_cases.py tests/golden/pth`.

use rnnkit::checkpoint::pth;
use std::path::{Path, PathBuf};
use std::process::Command;

fn golden(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/pth")
        .join(name);
    assert!(
        p.exists(),
        "missing {}: run `.venv/bin/python scripts/make_pth_cases.py tests/golden/pth`",
        p.display()
    );
    p
}

fn tmp(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pth-cli");
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn rnnkit(args: &[&std::ffi::OsStr]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rnnkit"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

macro_rules! args {
    ($($a:expr),*) => { &[$(std::ffi::OsStr::new(&$a)),*] };
}

#[test]
fn inspect_recognises_recurrent_layers() {
    let f = golden("recurrent_modules.pth");
    let (ok, out, err) = rnnkit(args!["inspect", f, "--json", "--key", "model_state_dict"]);
    assert!(ok, "{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    let layers = r["recurrent_layers"].as_array().unwrap();
    let find = |p: &str| {
        layers
            .iter()
            .find(|l| l["prefix"] == p)
            .unwrap_or_else(|| panic!("{p} not found in {layers:?}"))
    };
    let lstm = find("module.lstm.");
    assert_eq!(
        (
            &lstm["mode"],
            &lstm["input_size"],
            &lstm["hidden_size"],
            &lstm["num_layers"],
            &lstm["bidirectional"],
            &lstm["proj_size"],
            &lstm["bias"]
        ),
        (
            &"LSTM".into(),
            &10.into(),
            &20.into(),
            &2.into(),
            &true.into(),
            &5.into(),
            &true.into()
        )
    );
    assert_eq!(
        (
            &find("module.gru.")["mode"],
            &find("module.gru.")["hidden_size"]
        ),
        (&"GRU".into(), &7.into())
    );
    let rnn = find("module.rnn.");
    assert_eq!(
        (&rnn["mode"], &rnn["num_layers"], &rnn["bias"]),
        (&"RNN".into(), &3.into(), &false.into())
    );
    assert_eq!(find("module.cell.")["mode"], "LSTMCell");
    assert!(
        layers.iter().all(|l| l.get("problems").is_none()),
        "{layers:?}"
    );
    // Parameter count equals the sum of numels.
    let numel: u64 = r["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["numel"].as_u64().unwrap())
        .sum();
    assert_eq!(r["parameters"].as_u64(), Some(numel));
}

#[test]
fn inspect_shows_the_tree_and_storage_sharing() {
    let (ok, out, err) = rnnkit(args!["inspect", golden("c05_views_of_one_storage.pth")]);
    assert!(ok, "{err}");
    assert!(out.contains("3 tensors in 1 storages"), "{out}");
    assert!(
        out.contains("tail: Tensor float32 [8] storage \"0\" offset 4"),
        "{out}"
    );
    assert!(
        out.contains("storage \"0\" (48 bytes): full, mat, tail"),
        "{out}"
    );
    let (ok, out, _) = rnnkit(args!["inspect", golden("c15_training_checkpoint.pth")]);
    assert!(ok);
    assert!(
        out.contains("eps: 1e-08") && out.contains("[0]: dict (3 items)"),
        "{out}"
    );
    assert!(
        out.contains("OrderedDict (2 items, attributes [\"_metadata\"])"),
        "{out}"
    );
    // The memo bomb prints each shared list once.
    let (ok, out, _) = rnnkit(args!["inspect", golden("memo_bomb.pth")]);
    assert!(ok);
    assert!(
        out.lines().count() < 200 && out.contains("(same list as"),
        "{out}"
    );
}

#[test]
fn inspect_and_convert_fail_cleanly_on_bad_files() {
    for name in [
        "c24_truncated.pth",
        "empty_file.pth",
        "c22_os_system.pth",
        "legacy_tar.pth",
        "torchscript.pth",
    ] {
        let f = golden(name);
        let (ok, out, err) = rnnkit(args!["inspect", f]);
        assert!(!ok && out.is_empty(), "{name}: {out}");
        assert!(
            err.starts_with("error: ") && err.contains(name) && !err.contains("panicked"),
            "{name}: {err}"
        );
        let (ok, _, err) = rnnkit(args!["convert", f, tmp("never.safetensors")]);
        assert!(
            !ok && err.contains(name) && !err.contains("panicked"),
            "{name}: {err}"
        );
    }
    assert!(!tmp("never.safetensors").exists());
}

#[test]
fn convert_pth_to_safetensors_and_back() {
    let src = golden("c15_training_checkpoint.pth");
    let st = tmp("c15.safetensors");
    let (ok, out, err) = rnnkit(args!["convert", src, st, "--key", "model_state_dict"]);
    assert!(ok, "{err}");
    assert!(out.contains("wrote 2 tensors"), "{out}");
    let read = rnnkit::checkpoint::safetensors::read(&st).unwrap();
    let want = pth::load_tensors(&src, Some("model_state_dict")).unwrap();
    let mut got = read.tensors.clone();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    let mut want_sorted = want.clone();
    want_sorted.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got, want_sorted);
    assert_eq!(read.metadata.get("format").map(String::as_str), Some("pt"));

    // Back to .pth (input format sniffed from content, whatever the name).
    let back = tmp("c15_back.pth");
    let (ok, _, err) = rnnkit(args!["convert", st, back]);
    assert!(ok, "{err}");
    let mut again = pth::load_tensors(&back, None).unwrap();
    again.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(again, want_sorted);
}

#[test]
fn convert_strips_prefixes_renames_and_casts() {
    let out_path = tmp("dp.safetensors");
    let (ok, _, err) = rnnkit(args![
        "convert",
        golden("c02_data_parallel.pth"),
        out_path,
        "--strip-prefix",
        "module.",
        "--dtype",
        "float16"
    ]);
    assert!(ok, "{err}");
    let st = rnnkit::checkpoint::safetensors::read(&out_path).unwrap();
    let mut names: Vec<_> = st
        .tensors
        .iter()
        .map(|(n, t)| (n.clone(), t.dtype))
        .collect();
    names.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        names,
        [
            ("bias".to_string(), rnnkit::checkpoint::raw::DType::F16),
            ("weight".to_string(), rnnkit::checkpoint::raw::DType::F16)
        ]
    );

    let out_path = tmp("compiled.pth");
    let (ok, _, err) = rnnkit(args![
        "convert",
        golden("c03_compiled.pth"),
        out_path,
        "--strip-prefix",
        "auto",
        "--rename",
        "weight=w"
    ]);
    assert!(ok, "{err}");
    let names: Vec<String> = pth::load_tensors(&out_path, None)
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, ["w", "bias"]);

    // A prefix or rename matching nothing, or one that empties a name, is refused.
    for extra in [
        ["--strip-prefix", "nomatch."],
        ["--rename", "nomatch.=x."],
        ["--strip-prefix", "weight"],
    ] {
        let out_path = tmp("refused.pth");
        let (ok, _, err) = rnnkit(args![
            "convert",
            golden("c01_linear_state_dict.pth"),
            out_path,
            extra[0],
            extra[1]
        ]);
        assert!(
            !ok && (err.contains("matches no tensor name") || err.contains("empty")),
            "{extra:?}: {err}"
        );
        assert!(!out_path.exists(), "{extra:?} wrote {}", out_path.display());
    }

    let (ok, _, err) = rnnkit(args![
        "convert",
        golden("c01_linear_state_dict.pth"),
        tmp("x.txt")
    ]);
    assert!(!ok && err.contains("extension"), "{err}");
}

#[test]
fn inspect_reads_safetensors_too() {
    let st = tmp("rec.safetensors");
    let (ok, _, err) = rnnkit(args![
        "convert",
        golden("recurrent_modules.pth"),
        st,
        "--key",
        "model_state_dict",
        "--strip-prefix",
        "auto"
    ]);
    assert!(ok, "{err}");
    let (ok, out, err) = rnnkit(args!["inspect", st]);
    assert!(ok, "{err}");
    assert!(out.contains("safetensors") && out.contains("lstm: LSTM input_size=10 hidden_size=20 num_layers=2 bidirectional=true proj_size=5"), "{out}");
}
