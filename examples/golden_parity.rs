//! Runs one recurrent layer that PyTorch built and ran (a file from scripts/make_golden.py) in
//! rnnkit, on the chosen device, and prints how far rnnkit's output is from PyTorch's.
//!
//! cargo run --release --example golden_parity -- tests/golden/rnn/lstm_big_b32_t64_h256.safetensors [--device auto]

use anyhow::{bail, Context, Result};
use rnnkit::models::parity::{compare, Tolerance};
use rnnkit::nn::rnn::{Mode, RnnBase, RnnConfig, RnnState};
use rnnkit::{Module, ModuleExt};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args.first() else {
        bail!("usage: golden_parity FILE.safetensors [--device auto|cpu|cuda[:N]]")
    };
    let device = match args.iter().position(|a| a == "--device") {
        Some(i) => args.get(i + 1).context("--device needs a value")?.as_str(),
        None => "auto",
    };
    let device = rnnkit::device::parse_device(device)?;
    let file = rnnkit::checkpoint::safetensors::read(path)?;
    let case: serde_json::Value =
        serde_json::from_str(file.metadata.get("case").context("no case metadata")?)?;
    if case["kind"] != "rnn" || case["packed"] == true {
        bail!("{path}: this example runs dense recurrent-layer cases only");
    }
    let get = |k: &str| -> Result<tch::Tensor> {
        let raw = file
            .tensors
            .iter()
            .find(|(n, _)| n == k)
            .with_context(|| format!("{path}: no tensor {k}"))?;
        Ok(raw.1.to_tch(k)?.to_device(device))
    };
    let mode: Mode = serde_json::from_value(case["mode"].clone())?;
    let config: RnnConfig = serde_json::from_value(case["config"].clone())?;
    let kind = get("input")?.kind();
    let mut rnn = RnnBase::new(mode, config, kind, device)?;
    let params = rnnkit::checkpoint::safetensors::load_state_dict(path)?.select("param.");
    rnn.load_state_dict(&params)?;
    rnn.set_training(case["train"] == true);
    let hx = match get("h0") {
        Ok(h) => Some(RnnState::new(h, get("c0").ok())),
        Err(_) => None,
    };
    let _guard = tch::no_grad_guard();
    let start = std::time::Instant::now();
    let (out, _) = rnn.forward(&get("input")?, hx.as_ref())?;
    let elapsed = start.elapsed();
    let tol = if device == tch::Device::Cpu {
        Tolerance::Exact
    } else {
        Tolerance::Close {
            atol: 1e-5,
            rtol: 1e-4,
        }
    };
    let d = compare("output", &out, &get("output")?, tol)?;
    println!(
        "{} {:?} on {}: {:?} in {:.2?}",
        case["name"],
        mode,
        rnnkit::device::device_name(device),
        out.size(),
        elapsed
    );
    println!("{d}");
    println!(
        "reference computed by PyTorch {}",
        file.metadata.get("torch_version").map_or("?", |s| s)
    );
    if !d.ok {
        bail!("rnnkit and PyTorch disagree beyond {tol:?}");
    }
    Ok(())
}
