//! Model families (every pooling, both families, tied decoder, user key prefixes) against the
//! logits PyTorch computed: directories written by `scripts/make_model_golden.py`.

use std::path::Path;

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
    assert!(
        dirs.len() >= 11,
        "only {} model golden dirs; {regen}",
        dirs.len()
    );
    let mut failed = Vec::new();
    for dir in &dirs {
        // Same kernels, same arguments: expect identical bits; the tolerance only bounds the report.
        let r = rnnkit::models::parity::check_model(
            dir,
            &dir.join("reference.safetensors"),
            1e-6,
            0.0,
            tch::Device::Cpu,
        )
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let d = &r.outputs[0];
        println!("{:<28} {d}", dir.file_name().unwrap().to_string_lossy());
        if !r.ok || !d.bitwise_equal {
            failed.push(format!("{}: {d}", dir.display()));
        }
    }
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
    let sd = rnnkit::checkpoint::safetensors::load_state_dict(src.join("model.safetensors")).unwrap();
    rnnkit::checkpoint::pth::save_state_dict(dir.join("model.pth"), &sd).unwrap();
    let r = rnnkit::models::parity::check_model(
        &dir,
        &src.join("reference.safetensors"),
        0.0,
        0.0,
        tch::Device::Cpu,
    )
    .unwrap();
    println!("{}", r.outputs[0]);
    assert!(r.ok && r.outputs[0].bitwise_equal);
    let _ = std::fs::remove_dir_all(&dir);
}
