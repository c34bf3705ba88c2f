//! Peak memory of loading a large checkpoint: storages are read record by record into their own
//! buffers and released as soon as their last tensor is converted, so loading a 1 GB file must
//! peak well below 2.5 GB RSS. Ignored by default (it needs a big file):
//!
//! ```text
//! .venv/bin/python -c "import torch; torch.save({f'l{i}': torch.full((4096, 4096), float(i)) for i in range(16)}, '/tmp/big.pth')"
//! RNNKIT_BIG_PTH=/tmp/big.pth cargo test --release --test pth_memory -- --ignored --nocapture
//! ```

fn vm_hwm_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
#[ignore = "needs RNNKIT_BIG_PTH pointing at a ~1 GB checkpoint"]
fn loading_a_big_checkpoint_stays_below_2_5_gb() {
    let path = std::env::var("RNNKIT_BIG_PTH").expect("set RNNKIT_BIG_PTH");
    let size = std::fs::metadata(&path).unwrap().len();
    // libtorch itself is resident before we read anything; report it separately.
    let _warm = tch::Tensor::zeros([1], tch::kind::FLOAT_CPU);
    let base = vm_hwm_kb();
    let start = std::time::Instant::now();
    let sd = rnnkit::checkpoint::pth::load_state_dict(&path, None).unwrap();
    let peak = vm_hwm_kb();
    let bytes: i64 = sd
        .iter()
        .map(|(_, t)| t.numel() as i64 * t.kind().elt_size_in_bytes() as i64)
        .sum();
    println!(
        "{path}: {} MB file, {} tensors ({} MB) loaded in {:.1}s; peak RSS {} MB (libtorch baseline {} MB)",
        size >> 20,
        sd.len(),
        bytes >> 20,
        start.elapsed().as_secs_f64(),
        peak >> 10,
        base >> 10
    );
    assert!(peak < 2_500 * 1024, "peak RSS {} MB", peak >> 10);
}
