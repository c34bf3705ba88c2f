//! `rnnkit::nn::rnn::packed::forward` (the packed recurrence written with libtorch's operators, used for
//! packed sequences on CPU) against libtorch's own packed kernel (`at::lstm(data, batch_sizes,
//! …)`, what `torch.nn.LSTM` calls): outputs, final states and the gradients of every input and
//! parameter must be bitwise equal, for every mode, stacked, bidirectional, with projection,
//! without bias and with dropout between layers (same seed, same mask). PyTorch's own numbers
//! for these paths are checked in rnn_parity.rs (goldens from scripts/make_golden.py).

mod common;

use common::{assert_count, Report};
use rnnkit::models::parity::Tolerance;
use rnnkit::nn::rnn::{Mode, RnnBase, RnnConfig, RnnState};
use rnnkit::{Module, ModuleExt};
use tch::{Device, Kind, Tensor};

/// The tests of this file draw from libtorch's global generator, and the dropout cases need the
/// same mask on both sides (seeded just before each run): a test drawing random numbers in
/// another thread between the seed and the dropout made them differ, now and then. Every test
/// here holds this lock.
static GLOBAL_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
    GLOBAL_RNG.lock().unwrap_or_else(|e| e.into_inner())
}

/// Everything one run produces: outputs and states, then gradients, by name.
fn run(
    mode: Mode,
    config: &RnnConfig,
    params: &[Tensor],
    (data, h0, c0): (&Tensor, &Tensor, Option<&Tensor>),
    batch_sizes: &[i64],
    ours: bool,
    train: bool,
) -> Vec<(String, Tensor)> {
    let _no_grad = (!train).then(tch::no_grad_guard);
    let leaf = |t: &Tensor| t.detach().copy().set_requires_grad(train);
    let flat: Vec<Tensor> = params.iter().map(leaf).collect();
    let (data, h0, c0) = (leaf(data), leaf(h0), c0.map(leaf));
    tch::manual_seed(7); // the dropout mask
    let (out, h, c) = if ours {
        let hx = RnnState::new(h0.shallow_clone(), c0.as_ref().map(Tensor::shallow_clone));
        let (out, s) =
            rnnkit::nn::rnn::packed::forward(mode, config, &flat, &data, batch_sizes, &hx, train)
                .unwrap();
        (out, s.h, s.c)
    } else {
        let bs = Tensor::from_slice(batch_sizes);
        let w: Vec<&Tensor> = flat.iter().collect();
        let (bias, n, p, bi, t) = (
            config.bias,
            config.num_layers,
            config.dropout,
            config.bidirectional,
            train,
        );
        match mode {
            Mode::Lstm => {
                let hc = [&h0, c0.as_ref().unwrap()];
                let (o, h, c) = Tensor::lstm_data(&data, &bs, &hc, &w, bias, n, p, t, bi);
                (o, h, Some(c))
            }
            Mode::Gru => {
                let (o, h) = Tensor::gru_data(&data, &bs, &h0, &w, bias, n, p, t, bi);
                (o, h, None)
            }
            Mode::RnnTanh => {
                let (o, h) = Tensor::rnn_tanh_data(&data, &bs, &h0, &w, bias, n, p, t, bi);
                (o, h, None)
            }
            Mode::RnnRelu => {
                let (o, h) = Tensor::rnn_relu_data(&data, &bs, &h0, &w, bias, n, p, t, bi);
                (o, h, None)
            }
        }
    };
    let mut got = vec![
        ("output".to_string(), out.detach()),
        ("h_n".into(), h.detach()),
    ];
    got.extend(c.as_ref().map(|c| ("c_n".to_string(), c.detach())));
    if !train {
        return got;
    }
    // A fixed upstream gradient for each result, from its own seed.
    let weight = |t: &Tensor, seed: i64| {
        tch::manual_seed(seed);
        (t * Tensor::randn_like(t)).sum(None)
    };
    let mut loss = weight(&out, 1) + weight(&h, 2);
    if let Some(c) = &c {
        loss += weight(c, 3);
    }
    loss.backward();
    got.push(("grad.data".into(), data.grad()));
    got.push(("grad.h0".into(), h0.grad()));
    got.extend(c0.map(|c| ("grad.c0".to_string(), c.grad())));
    for (i, p) in flat.iter().enumerate() {
        got.push((format!("grad.flat[{i}]"), p.grad()));
    }
    got
}

/// `batch_sizes` of a packed batch with these lengths (sorted, longest first).
fn batch_sizes(lengths: &[i64]) -> Vec<i64> {
    (0..lengths[0])
        .map(|t| lengths.iter().filter(|&&l| l > t).count() as i64)
        .collect()
}

#[test]
fn packed_forward_and_backward_are_libtorchs_bit_for_bit() {
    let _rng = rng_lock();
    let lstm = RnnConfig::new(8, 12);
    let cases: Vec<(&str, Mode, RnnConfig)> = vec![
        ("LSTM", Mode::Lstm, lstm.clone()),
        (
            "LSTM 2 layers bidirectional",
            Mode::Lstm,
            lstm.clone().num_layers(2).bidirectional(true),
        ),
        (
            "LSTM proj_size 3, 2 layers",
            Mode::Lstm,
            lstm.clone().proj_size(3).num_layers(2),
        ),
        (
            "LSTM no bias, bidirectional",
            Mode::Lstm,
            lstm.clone().bias(false).bidirectional(true),
        ),
        (
            "LSTM 3 layers dropout 0.4",
            Mode::Lstm,
            lstm.clone().num_layers(3).dropout(0.4),
        ),
        (
            "GRU 2 layers bidirectional",
            Mode::Gru,
            lstm.clone().num_layers(2).bidirectional(true),
        ),
        ("GRU no bias", Mode::Gru, lstm.clone().bias(false)),
        (
            "RNN_TANH 2 layers",
            Mode::RnnTanh,
            lstm.clone().num_layers(2),
        ),
        (
            "RNN_RELU bidirectional",
            Mode::RnnRelu,
            lstm.clone().bidirectional(true),
        ),
    ];
    // Ragged lengths (ending at different steps, one of length 1), and one length for all
    // (libtorch sends that to its dense kernel for LSTM only: `packed::applies`).
    let length_sets: [&[i64]; 2] = [&[9, 9, 7, 4, 4, 2, 1], &[6; 5]];
    let mut r = Report::default();
    let (mut runs, mut left_to_libtorch) = (0, 0);
    for (name, mode, config) in cases {
        for lengths in length_sets {
            let bs = batch_sizes(lengths);
            tch::manual_seed(0);
            let rnn = RnnBase::new(mode, config.clone(), Kind::Float, Device::Cpu).unwrap();
            let params: Vec<Tensor> = rnn.named_parameters().into_iter().map(|(_, t)| t).collect();
            let total: i64 = bs.iter().sum();
            let data = Tensor::randn([total, config.input_size], (Kind::Float, Device::Cpu));
            let (layers, n) = (
                config.num_layers * config.num_directions(),
                lengths.len() as i64,
            );
            let h0 = Tensor::randn(
                [layers, n, config.output_hidden_size()],
                (Kind::Float, Device::Cpu),
            );
            let c0 = (mode == Mode::Lstm).then(|| {
                Tensor::randn([layers, n, config.hidden_size], (Kind::Float, Device::Cpu))
            });
            if !rnnkit::nn::rnn::packed::applies(mode, &data, &bs) {
                assert!(mode == Mode::Lstm && bs[0] == bs[bs.len() - 1], "{name}");
                left_to_libtorch += 1;
                continue;
            }
            for train in [true, false] {
                let inputs = (&data, &h0, c0.as_ref());
                let want = run(mode, &config, &params, inputs, &bs, false, train);
                let got = run(mode, &config, &params, inputs, &bs, true, train);
                assert_eq!(want.len(), got.len(), "{name}");
                let case = format!("{name}, lengths {lengths:?}, train={train}");
                for ((key, w), (kg, g)) in want.iter().zip(&got) {
                    assert_eq!(key, kg, "{case}");
                    r.check(&case, key, g, w, Tolerance::Exact);
                }
                runs += 1;
            }
        }
    }
    // 9 configurations × 2 length sets; the 5 LSTM ones with equal lengths go to libtorch's
    // dense kernel: 13 pairs, each in training and eval mode. 207 comparisons: outputs and
    // states of all 26 runs, and the gradients of the 13 training runs.
    assert_count(
        "configurations left to libtorch",
        left_to_libtorch,
        5,
        "see packed::applies",
    );
    assert_count(
        "runs compared",
        runs,
        26,
        "9 configurations × 2 length sets × train/eval",
    );
    assert_count(
        "comparisons",
        r.compared,
        207,
        "outputs, states and gradients of every run",
    );
    r.finish("packed recurrence vs libtorch's packed kernel (bitwise)");
}

/// A batch of LSTM sequences that all have the same length: torch 2.13's packed kernel gives
/// exactly what its dense kernel gives (oneDNN for f32, `packed::applies` leaves the call to
/// libtorch), so the padded path must equal the dense forward bit for bit, in training mode.
#[test]
fn uniform_length_lstm_batch_equals_the_dense_kernel() {
    let _rng = rng_lock();
    tch::manual_seed(4);
    let config = RnnConfig::new(8, 12).batch_first(true).bidirectional(true);
    let rnn = RnnBase::new(Mode::Lstm, config, Kind::Float, Device::Cpu).unwrap();
    assert!(rnn.is_training());
    let x = Tensor::randn([16, 9, 8], (Kind::Float, Device::Cpu));
    let (padded, sp) = rnn.forward_padded(&x, &[9; 16], None).unwrap();
    let (dense, sd) = rnn.forward(&x, None).unwrap();
    let mut r = Report::default();
    for (what, a, b) in [
        ("output", &padded, &dense),
        ("h_n", &sp.h, &sd.h),
        ("c_n", sp.c.as_ref().unwrap(), sd.c.as_ref().unwrap()),
    ] {
        r.check("LSTM lengths [9; 16]", what, a, b, Tolerance::Exact);
    }
    r.finish("uniform-length LSTM batch, padded vs dense (bitwise)");
}

/// The layer's packed path (forward_padded in training mode, which sorts, packs, runs
/// `rnnkit::nn::rnn::packed` and unpacks) gives each sequence what it gives alone: a batch does not leak
/// between rows, and rows past their length are zero.
#[test]
fn padded_training_forward_matches_one_sequence_at_a_time() {
    let _rng = rng_lock();
    tch::manual_seed(3);
    let config = RnnConfig::new(4, 6).batch_first(true).bidirectional(true);
    let rnn = RnnBase::new(Mode::Lstm, config, Kind::Float, Device::Cpu).unwrap();
    assert!(rnn.is_training());
    let lengths = [3i64, 6, 1, 6, 4];
    let x = Tensor::randn([5, 6, 4], (Kind::Float, Device::Cpu));
    let (out, state) = rnn.forward_padded(&x, &lengths, None).unwrap();
    let mut r = Report::default();
    for (i, &len) in lengths.iter().enumerate() {
        let case = format!("row {i} (length {len})");
        let xi = x.narrow(0, i as i64, 1).narrow(1, 0, len);
        let (oi, si) = rnn.forward(&xi, None).unwrap();
        let got = out.narrow(0, i as i64, 1);
        r.check(&case, "output", &got.narrow(1, 0, len), &oi, ROW_TOL);
        // Steps past a row's length are +0.0 (identical bits to zeros).
        let pad = got.narrow(1, len, 6 - len);
        r.check(&case, "padding", &pad, &pad.zeros_like(), Tolerance::Exact);
        r.check(
            &case,
            "h_n",
            &state.h.narrow(1, i as i64, 1),
            &si.h,
            ROW_TOL,
        );
    }
    assert_count(
        "comparisons",
        r.compared,
        15,
        "5 rows × output, padding, h_n",
    );
    r.finish("padded batch vs one sequence at a time");
}

/// A row of a packed batch against the same sequence run alone (the packed recurrence against
/// the dense kernel: not the same operations, not the same bits). Measured worst: 6.0e-8.
const ROW_TOL: Tolerance = Tolerance::Close {
    atol: 1e-6,
    rtol: 0.0,
};

/// Parameters or states that do not fit the configuration are an error that names them, not a
/// panic inside the layer loop.
#[test]
fn mismatched_parameters_or_state_are_errors() {
    let _rng = rng_lock();
    let config = RnnConfig::new(4, 6).num_layers(2);
    let rnn = RnnBase::new(Mode::Lstm, config.clone(), Kind::Float, Device::Cpu).unwrap();
    let flat: Vec<Tensor> = rnn.named_parameters().into_iter().map(|(_, t)| t).collect();
    let data = Tensor::randn([5, 4], (Kind::Float, Device::Cpu));
    let bs = [3i64, 2];
    let zeros = |l: i64| Tensor::zeros([l, 3, 6], (Kind::Float, Device::Cpu));
    let one_layer = RnnState::new(zeros(1), Some(zeros(1)));
    let err =
        rnnkit::nn::rnn::packed::forward(Mode::Lstm, &config, &flat, &data, &bs, &one_layer, true)
            .unwrap_err()
            .to_string();
    assert!(
        err.contains("initial state h [1, 3, 6]") && err.contains("need 2"),
        "{err}"
    );
    let no_c = RnnState::new(zeros(2), None);
    let err = rnnkit::nn::rnn::packed::forward(Mode::Lstm, &config, &flat, &data, &bs, &no_c, true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("c None"), "{err}");
    let both = RnnState::new(zeros(2), Some(zeros(2)));
    let err =
        rnnkit::nn::rnn::packed::forward(Mode::Lstm, &config, &flat[..4], &data, &bs, &both, true)
            .unwrap_err()
            .to_string();
    assert!(err.contains("4 parameter tensors for 2 layer(s)"), "{err}");
}

#[test]
fn a_cell_state_for_gru_is_an_error() {
    let _rng = rng_lock();
    let config = RnnConfig::new(4, 6);
    let rnn = RnnBase::new(Mode::Gru, config.clone(), Kind::Float, Device::Cpu).unwrap();
    let flat: Vec<Tensor> = rnn.named_parameters().into_iter().map(|(_, t)| t).collect();
    let data = Tensor::randn([3, 4], (Kind::Float, Device::Cpu));
    let z = Tensor::zeros([1, 2, 6], (Kind::Float, Device::Cpu));
    let state = RnnState::new(z.copy(), Some(z));
    let err =
        rnnkit::nn::rnn::packed::forward(Mode::Gru, &config, &flat, &data, &[2, 1], &state, true)
            .unwrap_err()
            .to_string();
    assert!(err.contains("and no c"), "{err}");
}
