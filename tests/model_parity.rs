//! Model families (every pooling, both families, tied decoder, user key prefixes) against the
//! logits PyTorch computed: directories written by `scripts/make_model_golden.py`.

use rnnkit::models::parity::{check_model_with, Tolerance};
use std::path::Path;

/// How many model directories `scripts/make_model_golden.py` writes: its 11 `CASES` and the
/// classifier with a tokenizer.
const MODEL_DIRS: usize = 12;

#[test]
fn model_directories_match_pytorch_logits() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/models");
    let regen = "regenerate with: .venv/bin/python scripts/make_model_golden.py tests/golden/models (scripts/test.sh does)";
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}; {regen}", root.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("config.json").exists())
        .collect();
    dirs.sort();
    assert_eq!(
        dirs.len(),
        MODEL_DIRS,
        "expected exactly {MODEL_DIRS} model golden dirs, found {:?}; {regen}",
        dirs.iter()
            .map(|d| d.file_name().unwrap().to_owned())
            .collect::<Vec<_>>()
    );
    let mut failed = Vec::new();
    for dir in &dirs {
        // Same kernels, same arguments: identical bits (same dtype, same bytes).
        let r = check_model_with(
            dir,
            &dir.join("reference.safetensors"),
            Tolerance::Exact,
            tch::Device::Cpu,
        )
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        assert_eq!(r.outputs.len(), 1, "{}: one output (logits)", dir.display());
        let d = &r.outputs[0];
        println!("{:<28} {d}", dir.file_name().unwrap().to_string_lossy());
        if !r.ok || !d.bitwise_equal {
            failed.push(format!("{}: {d}", dir.display()));
        }
    }
    println!(
        "{} model directories compared, {} not bitwise equal",
        dirs.len(),
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "not bitwise equal to PyTorch:\n{}\n{regen}",
        failed.join("\n")
    );
}

/// A model directory that holds only `model.pth` (as a PyTorch user saves it) loads the same
/// weights and gives PyTorch's logits.
#[test]
fn model_directory_with_only_a_pth_file() {
    let src =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/models/clf_lstm_bi_attention");
    let dir = std::env::temp_dir().join(format!("rnnkit-pth-dir-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(src.join("config.json"), dir.join("config.json")).unwrap();
    let sd =
        rnnkit::checkpoint::safetensors::load_state_dict(src.join("model.safetensors")).unwrap();
    rnnkit::checkpoint::pth::save_state_dict(dir.join("model.pth"), &sd).unwrap();
    let r = check_model_with(
        &dir,
        &src.join("reference.safetensors"),
        Tolerance::Exact,
        tch::Device::Cpu,
    )
    .unwrap();
    println!("{}", r.outputs[0]);
    assert!(r.ok && r.outputs[0].bitwise_equal);
    let _ = std::fs::remove_dir_all(&dir);
}
