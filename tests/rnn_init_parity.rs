//! Initialisation parity. Alone in its own test binary: libtorch's default generator is global,
//! and a test running in a parallel thread would draw from it between the seed and the layer.

mod common;

use common::{assert_count, load_dir, Report, REGENERATE};
use rnnkit::models::parity::Tolerance;
use rnnkit::nn::rnn::{Mode, RnnBase, RnnConfig};
use rnnkit::ModuleExt;
use tch::{Device, Kind};

/// With the same seed, a fresh rnnkit layer holds exactly the weights a fresh PyTorch layer holds.
#[test]
fn initialisation_draws_pytorchs_weights() {
    let mut r = Report::default();
    let goldens = load_dir("rnn");
    let inits: Vec<_> = goldens
        .iter()
        .filter(|g| g.case["kind"] == "init")
        .collect();
    // scripts/make_golden.py writes 2: LSTM (2 layers, bidirectional, proj_size 3, seed 0) and
    // GRU (2 layers, seed 1).
    assert_count("initialisation golden cases", inits.len(), 2, REGENERATE);
    for g in inits {
        let c = &g.case;
        let config: RnnConfig = serde_json::from_value(c["config"].clone()).unwrap();
        tch::manual_seed(c["seed"].as_i64().unwrap());
        let rnn = RnnBase::new(
            serde_json::from_value::<Mode>(c["mode"].clone()).unwrap(),
            config,
            Kind::Float,
            Device::Cpu,
        )
        .unwrap();
        let params = rnn.named_parameters();
        let mut ours: Vec<&str> = params.iter().map(|(k, _)| k.as_str()).collect();
        let mut theirs: Vec<&str> = g
            .tensors
            .keys()
            .filter_map(|k| k.strip_prefix("param."))
            .collect();
        ours.sort();
        theirs.sort();
        assert_eq!(ours, theirs, "{}: parameter names", g.name());
        for (k, t) in params {
            r.check(
                g.name(),
                &k,
                &t,
                g.req(&format!("param.{k}")),
                Tolerance::Exact,
            );
        }
    }
    r.finish("initialisation parity");
}
