//! Initialisation parity. Alone in its own test binary: libtorch's default generator is global,
//! and a test running in a parallel thread would draw from it between the seed and the layer.

mod common;

use common::{load_dir, Report};
use rnnkit::models::parity::Tolerance;
use rnnkit::nn::rnn::{Mode, RnnBase, RnnConfig};
use rnnkit::ModuleExt;
use tch::{Device, Kind};

/// With the same seed, a fresh rnnkit layer holds exactly the weights a fresh PyTorch layer holds.
#[test]
fn initialisation_draws_pytorchs_weights() {
    let mut r = Report::default();
    for g in load_dir("rnn").iter().filter(|g| g.case["kind"] == "init") {
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
        for (k, t) in rnn.named_parameters() {
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
