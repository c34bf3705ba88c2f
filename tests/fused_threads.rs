//! The fused kernel's per-unit path gives the same bits with one thread and with two. With two
//! threads and AVX-512, the last quarter of each thread's 16-unit blocks goes to whichever
//! thread claims it first (`SmallBatch::step_shared` in src/fused.rs); a block skipped or run
//! twice in some step (LSTM's c is updated in place) would show here as a difference. Its own
//! test binary: it changes libtorch's thread count, which is global to the process.

mod common;

use common::Report;
use rnnkit::models::parity::Tolerance;
use rnnkit::nn::rnn::{Mode, RnnBase, RnnConfig};
use rnnkit::Module;
use tch::{Device, Kind, Tensor};

#[test]
fn per_unit_path_gives_the_same_bits_with_one_or_two_threads() {
    if !std::arch::is_x86_feature_detected!("avx512f") {
        assert!(
            common::skip_allowed("RNNKIT_SKIP_AVX512"),
            "this CPU has no AVX-512, so the shared blocks this test checks cannot run; \
             set RNNKIT_SKIP_AVX512=1 to skip it (README, docs/PARITY.md)"
        );
        println!("SKIPPED (RNNKIT_SKIP_AVX512=1): no AVX-512 here, so no shared blocks");
        return;
    }
    let _guard = rnnkit::nn::inference::InferenceMode::enter();
    tch::manual_seed(5);
    let mut r = Report::default();
    // (mode, hidden, batch, padded): H=256 is 8 blocks per thread (2 shared); H=48 splits
    // 32 | 16, so one part is a single, wholly shared block; LSTM at batch 8 and GRU at 32
    // take the per-unit path at either thread count.
    let cases = [
        (Mode::Lstm, 256, 8, false),
        (Mode::Lstm, 256, 8, true),
        (Mode::Lstm, 48, 8, true),
        (Mode::Gru, 256, 32, true),
        (Mode::Gru, 48, 32, false),
    ];
    for (mode, hidden, batch, padded) in cases {
        let (input, l) = (24, 17);
        let cfg = RnnConfig::new(input, hidden)
            .num_layers(2)
            .batch_first(true);
        let mut rnn = RnnBase::new(mode, cfg, Kind::Float, Device::Cpu).unwrap();
        rnn.set_training(false);
        rnn.set_fused_inference(true);
        let x = Tensor::randn([batch, l, input], (Kind::Float, Device::Cpu));
        let lengths: Vec<i64> = (0..batch).map(|k| 1 + (k * 5 + 3) % l).collect();
        let run = |threads: i32| {
            tch::set_num_threads(threads);
            let before = rnnkit::nn::rnn::fused::forwards_on_this_thread();
            let out = if padded {
                rnn.forward_padded(&x, &lengths, None).unwrap()
            } else {
                rnn.forward(&x, None).unwrap()
            };
            let passes = rnnkit::nn::rnn::fused::forwards_on_this_thread() - before;
            assert_eq!(passes, 1, "{mode:?} B={batch}: the fused kernel ran");
            out
        };
        let (want_out, want_state) = run(1);
        let name = format!("{mode:?} H={hidden} B={batch} padded={padded}");
        // Several passes: which thread runs a shared block varies from pass to pass.
        for pass in 0..5 {
            let (out, state) = run(2);
            let name = format!("{name} pass {pass}");
            r.check(&name, "output", &out, &want_out, Tolerance::Exact);
            r.check(&name, "h_n", &state.h, &want_state.h, Tolerance::Exact);
            if let (Some(c), Some(w)) = (&state.c, &want_state.c) {
                r.check(&name, "c_n", c, w, Tolerance::Exact);
            }
        }
    }
    r.finish("per-unit path, two threads vs one (bitwise)");
}
