//! Behaviour that golden files cannot pin down: random inter-layer dropout (a statistical
//! check), switching train/eval at any time, and the streaming API's limits.

use rnnkit::nn::rnn::{RnnConfig, RnnState};
use rnnkit::{Gru, Lstm, ModuleExt, Nonlinearity, Rnn, StateDict};
use tch::{Device, Kind, Tensor};

/// A 2-layer ReLU RNN whose first layer outputs exactly 1 everywhere and whose second layer
/// passes its (dropped-out) input through: the output is 0 where dropout struck and 1/(1-p)
/// elsewhere.
fn dropout_probe(p: f64, hidden: i64) -> Rnn {
    let cfg = RnnConfig::new(1, hidden)
        .num_layers(2)
        .dropout(p)
        .nonlinearity(Nonlinearity::Relu);
    let mut rnn = Rnn::new(cfg).unwrap();
    let f = (Kind::Float, Device::Cpu);
    let sd = StateDict::from_pairs([
        ("weight_ih_l0".to_string(), Tensor::ones([hidden, 1], f)),
        (
            "weight_hh_l0".to_string(),
            Tensor::zeros([hidden, hidden], f),
        ),
        ("bias_ih_l0".to_string(), Tensor::zeros([hidden], f)),
        ("bias_hh_l0".to_string(), Tensor::zeros([hidden], f)),
        ("weight_ih_l1".to_string(), Tensor::eye(hidden, f)),
        (
            "weight_hh_l1".to_string(),
            Tensor::zeros([hidden, hidden], f),
        ),
        ("bias_ih_l1".to_string(), Tensor::zeros([hidden], f)),
        ("bias_hh_l1".to_string(), Tensor::zeros([hidden], f)),
    ])
    .unwrap();
    rnn.load_state_dict(&sd).unwrap();
    rnn
}

#[test]
fn inter_layer_dropout_zeroes_a_fraction_p_in_train_mode_only() {
    tch::manual_seed(7);
    let (p, hidden) = (0.3, 1000);
    let mut rnn = dropout_probe(p, hidden);
    let x = Tensor::ones([4, 8, 1], (Kind::Float, Device::Cpu));
    let _g = tch::no_grad_guard();

    rnn.train();
    let (out, _) = rnn.forward(&x, None).unwrap();
    let n = out.numel() as f64;
    let zeros = out.eq(0.0).sum(Kind::Float).double_value(&[]) / n;
    let sigma = (p * (1.0 - p) / n).sqrt();
    println!(
        "train: fraction zeroed {zeros:.4} (p = {p}, 6 sigma = {:.4})",
        6.0 * sigma
    );
    assert!(
        // 6 sigma: a correct dropout fails with P = 2e-9 (4 sigma: 6e-5, too often for CI);
        // a wrong p (0.25 or 0.35) is still 20 sigma away.
        (zeros - p).abs() < 6.0 * sigma,
        "fraction zeroed {zeros} is not p={p} within 6 sigma"
    );
    let kept = out.masked_select(&out.ne(0.0));
    let scale = 1.0 / (1.0 - p);
    assert!(
        (kept - scale).abs().max().double_value(&[]) < 1e-6,
        "kept values must be scaled by 1/(1-p)"
    );

    rnn.eval();
    let (out, _) = rnn.forward(&x, None).unwrap();
    assert!(
        out.eq(1.0).all().int64_value(&[]) == 1,
        "eval mode must not drop anything"
    );

    rnn.train(); // switching back at any time, as PyTorch's .train()
    let (out, _) = rnn.forward(&x, None).unwrap();
    assert!(
        out.eq(0.0).any().int64_value(&[]) == 1,
        "train mode again must drop"
    );
}

#[test]
fn dropout_never_touches_the_last_layer_output() {
    // With one layer PyTorch applies no dropout at all (it is inter-layer only).
    tch::manual_seed(1);
    let mut rnn = Gru::new(RnnConfig::new(3, 16).dropout(0.9)).unwrap();
    let x = Tensor::randn([5, 2, 3], (Kind::Float, Device::Cpu));
    let _g = tch::no_grad_guard();
    rnn.train();
    let (a, _) = rnn.forward(&x, None).unwrap();
    rnn.eval();
    let (b, _) = rnn.forward(&x, None).unwrap();
    assert!(a.equal(&b));
}

#[test]
fn streaming_a_bidirectional_layer_is_an_error() {
    let lstm = Lstm::new(RnnConfig::new(3, 4).bidirectional(true)).unwrap();
    let e = lstm.stream(None).err().expect("must refuse").to_string();
    assert!(e.contains("unidirectional"), "{e}");
}

#[test]
fn streaming_state_can_be_saved_and_restored() {
    tch::manual_seed(3);
    let lstm = Lstm::new(RnnConfig::new(3, 4).num_layers(2)).unwrap();
    let x = Tensor::randn([6, 2, 3], (Kind::Float, Device::Cpu));
    let _g = tch::no_grad_guard();
    let mut s = lstm.stream(None).unwrap();
    let _ = s.feed(&x.narrow(0, 0, 3)).unwrap();
    let saved = s.state().unwrap().detach();
    let (h, c) = (saved.h.copy(), saved.c.as_ref().unwrap().copy());
    let a = s.feed(&x.narrow(0, 3, 3)).unwrap();
    // A second stream resumed from the saved copy continues identically.
    let mut resumed = lstm.stream(Some(RnnState::new(h, Some(c)))).unwrap();
    let b = resumed.feed(&x.narrow(0, 3, 3)).unwrap();
    assert!(a.equal(&b));
}
