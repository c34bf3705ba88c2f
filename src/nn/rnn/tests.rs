//! Unit tests of the recurrent layers: state_dict keys, initialisation, shapes, config errors.

use super::*;
use crate::nn::module::ModuleExt;

#[test]
fn state_dict_keys_are_pytorchs() {
    let lstm = Lstm::new(
        RnnConfig::new(3, 5)
            .num_layers(2)
            .bidirectional(true)
            .proj_size(2),
    )
    .unwrap();
    let keys: Vec<_> = lstm
        .named_parameters()
        .into_iter()
        .map(|(k, t)| (k, t.size()))
        .collect();
    let expect: Vec<(String, Vec<i64>)> = vec![
        ("weight_ih_l0".into(), vec![20, 3]),
        ("weight_hh_l0".into(), vec![20, 2]),
        ("bias_ih_l0".into(), vec![20]),
        ("bias_hh_l0".into(), vec![20]),
        ("weight_hr_l0".into(), vec![2, 5]),
        ("weight_ih_l0_reverse".into(), vec![20, 3]),
        ("weight_hh_l0_reverse".into(), vec![20, 2]),
        ("bias_ih_l0_reverse".into(), vec![20]),
        ("bias_hh_l0_reverse".into(), vec![20]),
        ("weight_hr_l0_reverse".into(), vec![2, 5]),
        ("weight_ih_l1".into(), vec![20, 4]),
        ("weight_hh_l1".into(), vec![20, 2]),
        ("bias_ih_l1".into(), vec![20]),
        ("bias_hh_l1".into(), vec![20]),
        ("weight_hr_l1".into(), vec![2, 5]),
        ("weight_ih_l1_reverse".into(), vec![20, 4]),
        ("weight_hh_l1_reverse".into(), vec![20, 2]),
        ("bias_ih_l1_reverse".into(), vec![20]),
        ("bias_hh_l1_reverse".into(), vec![20]),
        ("weight_hr_l1_reverse".into(), vec![2, 5]),
    ];
    assert_eq!(keys, expect);
}

#[test]
fn gru_multi_layer_keys_carry_the_layer_index() {
    // candle's GRU once ignored the layer index in its key names.
    let gru = Gru::new(RnnConfig::new(3, 4).num_layers(3).bias(false)).unwrap();
    let keys: Vec<_> = gru.named_parameters().into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        keys,
        [
            "weight_ih_l0",
            "weight_hh_l0",
            "weight_ih_l1",
            "weight_hh_l1",
            "weight_ih_l2",
            "weight_hh_l2"
        ]
    );
}

#[test]
fn init_is_uniform_within_one_over_sqrt_hidden() {
    // Every tensor stays inside the bound; all 1,088 values together come
    // close to it (P(max |w| < 0.245) = 0.98^1088 < 1e-9 for U(-0.25, 0.25)).
    // A per-tensor lower bound would fail by chance: a 16-value bias has
    // max |w| < 0.2 with probability 0.8^16 = 2.8 %.
    let rnn = Rnn::new(RnnConfig::new(50, 16)).unwrap();
    let mut overall: f64 = 0.0;
    for (k, t) in rnn.named_parameters() {
        let m = t.abs().max().double_value(&[]);
        assert!(m <= 0.25, "{k}: max |w| = {m}, bound 1/sqrt(16) = 0.25");
        overall = overall.max(m);
    }
    assert!(
        overall > 0.245,
        "max |w| over all parameters = {overall}, expected close to 0.25"
    );
}

#[test]
fn shapes_match_pytorch_docs() {
    let cfg = RnnConfig::new(3, 5)
        .num_layers(2)
        .bidirectional(true)
        .proj_size(2);
    let lstm = Lstm::new(cfg.clone()).unwrap();
    let (out, s) = lstm
        .forward(&Tensor::zeros([7, 4, 3], (Kind::Float, Device::Cpu)), None)
        .unwrap();
    assert_eq!(out.size(), [7, 4, 4]);
    assert_eq!(s.h.size(), [4, 4, 2]);
    assert_eq!(s.c.unwrap().size(), [4, 4, 5]);
    let lstm = Lstm::new(cfg.batch_first(true)).unwrap();
    let (out, _) = lstm
        .forward(&Tensor::zeros([4, 7, 3], (Kind::Float, Device::Cpu)), None)
        .unwrap();
    assert_eq!(out.size(), [4, 7, 4]);
    let (out, s) = lstm
        .forward(&Tensor::zeros([7, 3], (Kind::Float, Device::Cpu)), None)
        .unwrap();
    assert_eq!(out.size(), [7, 4]);
    assert_eq!(s.h.size(), [4, 2]);
}

#[test]
fn bad_input_is_an_error_naming_shapes() {
    let gru = Gru::new(RnnConfig::new(3, 5)).unwrap();
    let f = (Kind::Float, Device::Cpu);
    let e = gru
        .forward(&Tensor::zeros([7, 4, 2], f), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("[7, 4, 2]") && e.contains("3"), "{e}");
    let e = gru
        .forward(&Tensor::zeros([7], f), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("[7]"), "{e}");
    let bad_h = RnnState::new(Tensor::zeros([1, 3, 5], f), None);
    let e = gru
        .forward(&Tensor::zeros([7, 4, 3], f), Some(&bad_h))
        .unwrap_err()
        .to_string();
    assert!(e.contains("[1, 4, 5]") && e.contains("[1, 3, 5]"), "{e}");
    let e = gru
        .forward(&Tensor::zeros([7, 4, 3], (Kind::Double, Device::Cpu)), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("Double") && e.contains("Float"), "{e}");
    let e = gru
        .forward_padded(&Tensor::zeros([7, 2, 3], f), &[3, 8], None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("lengths[1] = 8"), "{e}");
    let e = gru
        .forward_padded(&Tensor::zeros([7, 2, 3], f), &[3], None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("1 lengths") && e.contains("2 sequences"), "{e}");
    let e = gru
        .forward_padded(&Tensor::zeros([7, 2, 3], f), &[3, 0], None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("lengths[1] = 0"), "{e}");
}

#[test]
fn rnn_relu_mode_means_relu_whatever_the_config_default() {
    // Regression: a model config saying mode RNN_RELU without "nonlinearity" ran tanh.
    let cfg = RnnConfig::new(3, 4);
    let relu = RnnBase::new(Mode::RnnRelu, cfg.clone(), Kind::Float, Device::Cpu).unwrap();
    assert_eq!(
        (relu.mode(), relu.config().nonlinearity),
        (Mode::RnnRelu, Nonlinearity::Relu)
    );
    let via_config = Rnn::new(cfg.nonlinearity(Nonlinearity::Relu)).unwrap();
    assert_eq!(via_config.mode(), Mode::RnnRelu);
}

#[test]
fn bad_config_is_an_error() {
    assert!(Gru::new(RnnConfig::new(3, 5).proj_size(2)).is_err());
    assert!(Lstm::new(RnnConfig::new(3, 5).proj_size(5)).is_err());
    assert!(Lstm::new(RnnConfig::new(3, 5).dropout(1.5)).is_err());
    assert!(Lstm::new(RnnConfig::new(3, 0)).is_err());
    assert!(Lstm::new(RnnConfig::new(3, 4).num_layers(0)).is_err());
}

#[test]
fn config_json_uses_pytorch_names_and_defaults() {
    let cfg: RnnConfig = serde_json::from_str(r#"{"input_size": 3, "hidden_size": 5}"#).unwrap();
    assert_eq!(cfg, RnnConfig::new(3, 5));
    assert!(!cfg.batch_first, "PyTorch's default is batch_first=False");
    let json = serde_json::to_string(&cfg).unwrap();
    assert!(
        json.contains("\"batch_first\":false") && json.contains("\"num_layers\":1"),
        "{json}"
    );
}
