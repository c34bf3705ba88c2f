//! Bad sizes and shapes given to the library's constructors and forwards are errors that name
//! what failed, never a panic or a libtorch abort (each case here panicked, or silently
//! accepted what PyTorch refuses, before it was checked).

use rnnkit::models::tokenizer::Tokenizer;
use rnnkit::models::{ModelConfig, SequenceClassifier};
use rnnkit::nn::attention::AdditiveAttention;
use rnnkit::serve::predictor::{Predictor, PredictorOptions};
use rnnkit::{Embedding, GruCell, Linear, Lstm, LstmCell, RnnConfig, RnnState};
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

const CPU: (Kind, Device) = (Kind::Float, Device::Cpu);

fn err<T>(r: rnnkit::Result<T>) -> String {
    match r {
        Ok(_) => panic!("should be an error"),
        Err(e) => e.to_string(),
    }
}

fn classifier_config(vocab_size: i64) -> ModelConfig {
    serde_json::from_value(serde_json::json!({
        "family": "classifier", "vocab_size": vocab_size, "embedding_dim": 8,
        "encoder": {"mode": "LSTM", "input_size": 8, "hidden_size": 6},
        "pooling": "concat", "num_classes": 2
    }))
    .unwrap()
}

#[test]
fn impossible_sizes_are_errors_not_panics() {
    let e = err(Embedding::new(-5, 4, None, Kind::Float, Device::Cpu));
    assert!(e.contains("Embedding(-5, 4)"), "{e}");
    // 2^60 floats cannot be allocated: libtorch's error comes back as ours, naming the shape.
    let e = err(Linear::new(
        1 << 20,
        1 << 40,
        true,
        Kind::Float,
        Device::Cpu,
    ));
    assert!(e.contains("[1099511627776, 1048576]"), "{e}");
    let e = err(Lstm::new(RnnConfig::new(4, 1 << 61)));
    assert!(e.contains("too large"), "{e}");
    let e = err(Lstm::new(RnnConfig::new(1 << 30, 1 << 30)));
    assert!(
        e.contains("weight_ih_l0") && e.contains("cannot be allocated"),
        "{e}"
    );
    let mut cfg = classifier_config(-5);
    let e = err(cfg.validate());
    assert!(e.contains("vocab_size (-5)"), "{e}");
    cfg.vocab_size = 10;
    cfg.embedding_dim = -4;
    cfg.encoder.rnn.input_size = -4;
    let e = err(SequenceClassifier::new(cfg, Kind::Float, Device::Cpu));
    assert!(e.contains("non-negative"), "{e}");
}

#[test]
fn a_tokenizer_larger_than_the_embedding_is_refused_at_load() {
    let model = SequenceClassifier::new(classifier_config(100), Kind::Float, Device::Cpu).unwrap();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("weights/sentiment/tokenizer.json");
    let tok = Tokenizer::from_file(&path, 64, 0).unwrap();
    let e = err(Predictor::from_parts(
        model,
        tok,
        Device::Cpu,
        PredictorOptions::default(),
    ));
    assert!(
        e.contains("8000 pieces") && e.contains("vocab_size is 100"),
        "{e}"
    );
}

#[test]
fn a_predictor_needs_room_for_one_sequence() {
    let model = SequenceClassifier::new(classifier_config(8000), Kind::Float, Device::Cpu).unwrap();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("weights/sentiment/tokenizer.json");
    let tok = Tokenizer::from_file(&path, 64, 0).unwrap();
    let opts = PredictorOptions {
        queue_capacity: 0,
        ..Default::default()
    };
    let e = err(Predictor::from_parts(model, tok, Device::Cpu, opts));
    assert!(e.contains("queue_capacity (0)"), "{e}");
}

#[test]
fn classify_checks_lengths_against_the_encoder_outputs() {
    let mut model =
        SequenceClassifier::new(classifier_config(20), Kind::Float, Device::Cpu).unwrap();
    rnnkit::Module::set_training(&mut model, false);
    let ids = Tensor::from_slice(&[1i64, 2, 3, 4, 5, 0]).view([2, 3]);
    let e = model.backbone.encode(&ids, &[3, 2]).unwrap();
    assert_eq!(model.classify(&e, &[3, 2]).unwrap().size(), [2, 2]);
    // One length for two rows would broadcast; a zero length gives NaN means: both refused.
    for bad in [&[3][..], &[3, 0], &[3, 4], &[3, 2, 1]] {
        let msg = err(model.classify(&e, bad));
        assert!(msg.contains("[2, 3, 6]"), "{bad:?}: {msg}");
    }
}

#[test]
fn attention_needs_a_bool_mask_of_the_outputs_shape() {
    let att = AdditiveAttention::new(4, 3, Kind::Float, Device::Cpu).unwrap();
    let out = Tensor::zeros([2, 5, 4], CPU);
    let ok = Tensor::ones([2, 5], (Kind::Bool, Device::Cpu));
    assert_eq!(att.forward(&out, &ok).unwrap().size(), [2, 4]);
    for mask in [
        Tensor::ones([2, 4], (Kind::Bool, Device::Cpu)),
        Tensor::ones([2, 5], CPU),
    ] {
        let e = err(att.forward(&out, &mask));
        assert!(e.contains("[2, 5, 4]"), "{e}");
    }
}

#[test]
fn an_empty_sequence_is_refused_as_pytorch_does() {
    let lstm = Lstm::new(RnnConfig::new(3, 4).batch_first(true)).unwrap();
    let e = err(lstm.forward(&Tensor::zeros([2, 0, 3], CPU), None));
    assert!(
        e.contains("sequence length") && e.contains("[2, 0, 3]"),
        "{e}"
    );
    // An empty batch is fine, as in PyTorch.
    let (out, _) = lstm.forward(&Tensor::zeros([0, 5, 3], CPU), None).unwrap();
    assert_eq!(out.size(), [0, 5, 4]);
}

#[test]
fn cells_take_a_state_of_the_inputs_rank_and_only_lstm_takes_c() {
    // PyTorch: LSTMCell(3, 5)(x of shape (3,), (h, c) of shape (1, 5)) is an error.
    let lstm = LstmCell::new(3, 5, true, Kind::Float, Device::Cpu).unwrap();
    let batched = RnnState::new(Tensor::zeros([1, 5], CPU), Some(Tensor::zeros([1, 5], CPU)));
    let e = err(lstm.forward(&Tensor::zeros([3], CPU), Some(&batched)));
    assert!(e.contains("[1, 5]"), "{e}");
    let unbatched = RnnState::new(Tensor::zeros([5], CPU), Some(Tensor::zeros([5], CPU)));
    let e = err(lstm.forward(&Tensor::zeros([1, 3], CPU), Some(&unbatched)));
    assert!(e.contains("[5]"), "{e}");
    let gru = GruCell::new(3, 5, true, Kind::Float, Device::Cpu).unwrap();
    let e = err(gru.forward(&Tensor::zeros([1, 3], CPU), Some(&batched)));
    assert!(e.contains("only LSTMCell"), "{e}");
}
