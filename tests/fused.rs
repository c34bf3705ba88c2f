//! The fused inference kernel (`RnnBase::set_fused_inference`, src/fused.rs) against PyTorch:
//! every recurrent golden case of `scripts/make_golden.py` that can run in eval mode (all modes,
//! bias or not, proj_size, bidirectional, up to 3 layers, batch-first or not, given states,
//! padded batches with lengths), cast to f32, within 1e-5 of the outputs PyTorch computed; and
//! random configurations against the exact path (bitwise PyTorch's, see rnn_parity.rs),
//! covering the hand-written product (≤ 4 running rows), the sgemm one and the per-unit path.

mod common;

use common::{load_dir, Report};
use rnnkit::models::parity::Tolerance;
use rnnkit::nn::rnn::{Mode, RnnBase, RnnConfig, RnnState};
use rnnkit::{Module, ModuleExt, StateDict};
use tch::{Device, Kind, Tensor};

/// Golden recurrent cases the fused kernel can run: the 54 of rnn_parity.rs less the 8 bf16/f16
/// ones (f32 and f64, the latter cast to f32; eval, or training without dropout). Exactly
/// this many must run it.
const FUSED_GOLDEN_CASES: usize = 46;

const TOL: Tolerance = Tolerance::Close {
    atol: 1e-5,
    rtol: 0.0,
};

fn f32(t: &Tensor) -> Tensor {
    t.to_kind(Kind::Float)
}

/// Runs `f` and returns its result with the number of fused-kernel passes it started on this
/// thread: `set_fused_inference(true)` falls back to the exact path silently, so every
/// comparison that claims to test the fused kernel checks this count.
fn counting_fused<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let before = rnnkit::nn::rnn::fused::forwards_on_this_thread();
    let out = f();
    (
        out,
        rnnkit::nn::rnn::fused::forwards_on_this_thread() - before,
    )
}

/// Whether a forward pass of an eval-mode f32 layer with the fused flag set takes the fused
/// kernel, restated from the rule documented at `fused::faster`: always for GRU and RNN and for
/// padded batches; unpadded LSTM up to batch 4, or with AVX-512 up to 16, or 64 with exactly
/// two threads.
fn expect_fused(mode: Mode, batch: i64, padded: bool) -> bool {
    let avx512 = std::arch::is_x86_feature_detected!("avx512f");
    let two = tch::get_num_threads() == 2;
    mode != Mode::Lstm || padded || batch <= 4 || (avx512 && (batch <= 16 || (two && batch <= 64)))
}

/// Held by the tests that switch how the input projections are computed
/// (`rnnkit::nn::rnn::fused::force_input_projection`, process-wide), so that each sees its own setting.
/// Either setting is correct for the other tests.
static INPUT_GEMM: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `f` with the input projections from rnnkit's own product (`true`, wherever AVX-512
/// is; on AMD CPUs the default) and from libtorch's sgemm (`false`).
fn with_input_gemm(own: bool, f: impl FnOnce()) {
    let _lock = INPUT_GEMM.lock().unwrap_or_else(|e| e.into_inner());
    rnnkit::nn::rnn::fused::force_input_projection(Some(own));
    f();
    rnnkit::nn::rnn::fused::force_input_projection(None);
}

#[test]
fn fused_kernel_matches_pytorch_goldens() {
    let mut r = Report::default();
    let mut cases = 0;
    let _no_grad = tch::no_grad_guard();
    for g in load_dir("rnn").iter().filter(|g| g.case["kind"] == "rnn") {
        let c = &g.case;
        let dtype = c["dtype"].as_str().unwrap();
        let config: RnnConfig = serde_json::from_value(c["config"].clone()).unwrap();
        // Training-mode cases with dropout have masks we cannot reproduce; half-precision goldens
        // are too coarse to bound an f32 result.
        let train = c["train"].as_bool().unwrap_or(false);
        if (train && config.dropout > 0.0) || dtype == "bf16" || dtype == "f16" {
            continue;
        }
        let mode: Mode = serde_json::from_value(c["mode"].clone()).unwrap();
        let mut rnn = RnnBase::new(mode, config, Kind::Float, Device::Cpu).unwrap();
        let sd = StateDict::from_pairs(
            g.tensors
                .iter()
                .filter_map(|(k, t)| k.strip_prefix("param.").map(|k| (k.to_string(), f32(t)))),
        )
        .unwrap();
        rnn.load_state_dict(&sd).unwrap();
        rnn.set_training(false);
        rnn.set_fused_inference(true);
        let x = f32(g.req("input"));
        let hx = g
            .get("h0")
            .map(|h| RnnState::new(f32(h), g.get("c0").map(f32)));
        let name = g.name();
        let (result, passes) = counting_fused(|| g.forward(&rnn, &x, hx.as_ref()));
        if result.is_ok() && passes != 1 {
            r.fail(
                name,
                format!("the fused kernel ran {passes} times, not once"),
            );
            continue;
        }
        let (out, state) = match result {
            Ok(v) => v,
            Err(e) => {
                r.fail(name, format!("fused forward failed: {e}"));
                continue;
            }
        };
        cases += 1;
        let want = |k: &str| f32(g.req(k));
        r.check(name, "output", &out, &want("output"), TOL);
        r.check(name, "h_n", &state.h, &want("h_n"), TOL);
        if let Some(cn) = &state.c {
            r.check(name, "c_n", cn, &want("c_n"), TOL);
        }
    }
    common::assert_count(
        "golden cases run by the fused kernel",
        cases,
        FUSED_GOLDEN_CASES,
        "f32/f64 eval or dropout-free cases of scripts/make_golden.py; regenerate with scripts/make_golden.py",
    );
    r.finish("fused kernel vs PyTorch goldens (f32, atol 1e-5)");
}

#[test]
fn fused_kernel_matches_exact_path_on_random_configurations() {
    let mut r = Report::default();
    let _guard = rnnkit::nn::inference::InferenceMode::enter();
    tch::manual_seed(7);
    let modes = [Mode::Lstm, Mode::Gru, Mode::RnnTanh, Mode::RnnRelu];
    let mut case = 0;
    let mut fused_cases = 0;
    for (own, &mode) in [false, true]
        .into_iter()
        .flat_map(|o| modes.iter().map(move |m| (o, m)))
    {
        for &(batch, layers, bi, proj, bias, batch_first) in &[
            (1, 1, false, false, true, true),
            (3, 2, true, false, true, false),
            (4, 1, false, true, false, true),
            (9, 2, true, true, true, true),
            (32, 1, false, false, true, false),
            // With two threads (and AVX-512), 64 is the per-unit path's widest batch, 72
            // takes sgemm per step (and LSTM oneDNN).
            (64, 2, false, true, true, true),
            (72, 1, false, false, true, true),
        ] {
            for padded in [false, true] {
                case += 1;
                let proj_size = if proj && mode == Mode::Lstm { 7 } else { 0 };
                let cfg = RnnConfig::new(13, 24)
                    .num_layers(layers)
                    .bidirectional(bi)
                    .proj_size(proj_size)
                    .bias(bias)
                    .batch_first(batch_first);
                let mut rnn = RnnBase::new(mode, cfg, Kind::Float, Device::Cpu).unwrap();
                rnn.set_training(false);
                let l = 11;
                let x = if batch_first {
                    Tensor::randn([batch, l, 13], (Kind::Float, Device::Cpu))
                } else {
                    Tensor::randn([l, batch, 13], (Kind::Float, Device::Cpu))
                };
                let lengths: Vec<i64> = (0..batch).map(|k| 1 + (k * 5 + 3) % l).collect();
                let d = if bi { 2 } else { 1 };
                let h_out = if proj_size > 0 { proj_size } else { 24 };
                let h0 = Tensor::randn([d * layers, batch, h_out], (Kind::Float, Device::Cpu));
                let c0 = (mode == Mode::Lstm)
                    .then(|| Tensor::randn([d * layers, batch, 24], (Kind::Float, Device::Cpu)));
                let hx = RnnState::new(h0, c0);
                let run = |rnn: &RnnBase| {
                    if padded {
                        rnn.forward_padded(&x, &lengths, Some(&hx)).unwrap()
                    } else {
                        rnn.forward(&x, Some(&hx)).unwrap()
                    }
                };
                let (want_out, want_state) = run(&rnn);
                rnn.set_fused_inference(true);
                let mut got = None;
                with_input_gemm(own, || got = Some(counting_fused(|| run(&rnn))));
                let ((out, state), passes) = got.unwrap();
                let fused = expect_fused(mode, batch, padded);
                assert_eq!(
                    passes,
                    u64::from(fused),
                    "{mode:?} B={batch} padded={padded}: fused passes"
                );
                fused_cases += usize::from(fused);
                let name = format!(
                    "{mode:?} B={batch} layers={layers} bi={bi} proj={proj_size} bias={bias} bf={batch_first} padded={padded} own_input_gemm={own}"
                );
                r.check(&name, "output", &out, &want_out, TOL);
                r.check(&name, "h_n", &state.h, &want_state.h, TOL);
                if let (Some(c), Some(w)) = (&state.c, &want_state.c) {
                    r.check(&name, "c_n", c, w, TOL);
                }
            }
        }
    }
    assert_eq!(case, 112);
    // Unpadded LSTM above the fused batch limit runs the exact path (compared with itself);
    // every other case ran the fused kernel, as its pass count checked.
    println!("{fused_cases} of {case} cases ran the fused kernel");
    r.finish("fused kernel vs exact path (f32, atol 1e-5)");
}

/// The per-unit path at widths the AVX-512 product blocks unevenly: H = 40 is two full blocks
/// of 16 units and a partial one, split 16 | 24 between two threads at batch 8 (one thread per
/// direction when bidirectional); batches 5 and 8 make uneven row blocks. LSTM also with
/// proj_size 20 (projected columns split 16 | 4 at batch 16). Without AVX-512 the same cases
/// run the AVX2 product or, with a projection, sgemm per step.
#[test]
fn per_unit_path_matches_exact_path_at_uneven_widths() {
    let mut r = Report::default();
    let _guard = rnnkit::nn::inference::InferenceMode::enter();
    tch::manual_seed(11);
    let (input, hidden, l) = (7, 40, 9);
    // (batch, bidirectional, padded)
    let cases = [
        (8, false, false),
        (8, true, true),
        (5, true, false),
        (5, false, true),
    ];
    let proj_cases = [
        (16, false, true),
        (16, true, true),
        (5, false, true),
        (8, false, false),
    ];
    let runs = [Mode::Lstm, Mode::Gru, Mode::RnnTanh, Mode::RnnRelu]
        .into_iter()
        .flat_map(|m| cases.map(|c| (m, 0, c)))
        .chain(proj_cases.map(|c| (Mode::Lstm, 20, c)));
    let mut fused_cases = 0;
    for (mode, proj_size, (batch, bi, padded)) in runs {
        let cfg = RnnConfig::new(input, hidden)
            .num_layers(2)
            .bidirectional(bi)
            .proj_size(proj_size)
            .batch_first(true);
        let mut rnn = RnnBase::new(mode, cfg, Kind::Float, Device::Cpu).unwrap();
        rnn.set_training(false);
        let x = Tensor::randn([batch, l, input], (Kind::Float, Device::Cpu));
        let lengths: Vec<i64> = (0..batch).map(|k| 1 + (k * 4 + 2) % l).collect();
        let run = |rnn: &RnnBase| {
            if padded {
                rnn.forward_padded(&x, &lengths, None).unwrap()
            } else {
                rnn.forward(&x, None).unwrap()
            }
        };
        let (want_out, want_state) = run(&rnn);
        rnn.set_fused_inference(true);
        let ((out, state), passes) = counting_fused(|| run(&rnn));
        let name =
            format!("{mode:?} H={hidden} proj={proj_size} B={batch} bi={bi} padded={padded}");
        let fused = expect_fused(mode, batch, padded);
        assert_eq!(passes, u64::from(fused), "{name}: fused passes");
        fused_cases += usize::from(fused);
        r.check(&name, "output", &out, &want_out, TOL);
        r.check(&name, "h_n", &state.h, &want_state.h, TOL);
        if let (Some(c), Some(w)) = (&state.c, &want_state.c) {
            r.check(&name, "c_n", c, w, TOL);
        }
    }
    println!("{fused_cases} of 20 cases ran the fused kernel");
    r.finish("per-unit path vs exact path (f32, atol 1e-5)");
}

/// The packed copies of W_hh (and W_ih, for rnnkit's own input projection) are kept between
/// passes; changing the weights, in place or by replacing them, must not leave a stale copy in
/// use.
#[test]
fn fused_kernel_sees_weight_changes() {
    tch::manual_seed(12);
    let cfg = RnnConfig::new(6, 32).batch_first(true);
    let mut rnn = RnnBase::new(Mode::Lstm, cfg, Kind::Float, Device::Cpu).unwrap();
    rnn.set_training(false);
    rnn.set_fused_inference(true);
    let x = Tensor::randn([3, 5, 6], (Kind::Float, Device::Cpu));
    let fused_vs_exact = |rnn: &mut RnnBase, what: &str| {
        let _guard = rnnkit::nn::inference::InferenceMode::enter();
        let ((fused, _), passes) = counting_fused(|| rnn.forward(&x, None).unwrap());
        assert_eq!(passes, 1, "{what}: the fused kernel ran");
        rnn.set_fused_inference(false);
        let (exact, _) = rnn.forward(&x, None).unwrap();
        rnn.set_fused_inference(true);
        let d = (&fused - &exact).abs().max().double_value(&[]);
        println!("{what}: fused vs exact max diff {d:.3e}");
        assert!(d < 1e-5, "{what}: fused differs from exact by {d}");
        fused
    };
    let before = fused_vs_exact(&mut rnn, "initial weights");
    // In place, as an optimizer step does (bumps the version counter).
    tch::no_grad(|| {
        let mut w = rnn.param("weight_hh_l0").unwrap().shallow_clone();
        let _ = w.g_mul_scalar_(-1.5);
    });
    let after = fused_vs_exact(&mut rnn, "weight_hh_l0 scaled in place");
    assert!((&after - &before).abs().max().double_value(&[]) > 1e-3);
    // Replaced through visit_mut, as loading a state_dict may do.
    rnn.visit_mut("", &mut |name, t| {
        if name == "weight_hh_l0" {
            *t = Tensor::randn(t.size(), (Kind::Float, Device::Cpu));
        }
    });
    let _ = fused_vs_exact(&mut rnn, "weight_hh_l0 replaced");
    // The packed W_ih of rnnkit's own input projection is cached the same way.
    with_input_gemm(true, || {
        let before = fused_vs_exact(&mut rnn, "own input projection");
        tch::no_grad(|| {
            let mut w = rnn.param("weight_ih_l0").unwrap().shallow_clone();
            let _ = w.g_mul_scalar_(0.5);
        });
        let after = fused_vs_exact(&mut rnn, "weight_ih_l0 halved in place");
        assert!((&after - &before).abs().max().double_value(&[]) > 1e-3);
        rnn.visit_mut("", &mut |name, t| {
            if name == "weight_ih_l0" {
                *t = Tensor::randn(t.size(), (Kind::Float, Device::Cpu));
            }
        });
        let _ = fused_vs_exact(&mut rnn, "weight_ih_l0 replaced");
    });
}

#[test]
fn fused_flag_is_ignored_where_it_cannot_apply() {
    // Autograd on, or training mode, or f64: the exact kernel runs and results are bitwise.
    let mut rnn = RnnBase::new(Mode::Gru, RnnConfig::new(5, 6), Kind::Float, Device::Cpu).unwrap();
    rnn.set_training(false);
    let x = Tensor::randn([4, 2, 5], (Kind::Float, Device::Cpu));
    let (exact, _) = rnn.forward(&x, None).unwrap();
    rnn.set_fused_inference(true);
    let ((with_grad, _), passes) = counting_fused(|| rnn.forward(&x, None).unwrap());
    assert_eq!(passes, 0, "autograd on: no fused pass");
    assert!(with_grad.equal(&exact), "autograd on: the exact kernel");
    assert!(with_grad.requires_grad(), "autograd on: the graph is kept");
    let ((fused, _), passes) = counting_fused(|| tch::no_grad(|| rnn.forward(&x, None)).unwrap());
    assert_eq!(passes, 1, "no_grad, eval: the fused kernel ran");
    assert!(fused.allclose(&exact, 0.0, 1e-5, false));
    rnn.set_training(true);
    let ((train, _), passes) = counting_fused(|| tch::no_grad(|| rnn.forward(&x, None)).unwrap());
    assert_eq!(passes, 0, "training mode: no fused pass");
    assert!(train.equal(&exact), "training mode: the exact kernel");
}

#[test]
fn input_table_path_matches_embedding_then_exact_path() {
    let mut r = Report::default();
    let _guard = rnnkit::nn::inference::InferenceMode::enter();
    tch::manual_seed(11);
    for (mode, bi, layers, proj) in [
        (Mode::Lstm, false, 1, 5),
        (Mode::Lstm, true, 2, 0),
        (Mode::Gru, true, 1, 0),
        (Mode::RnnTanh, false, 2, 0),
    ] {
        let (vocab, emb_dim, batch, l) = (50, 9, 6, 7);
        let cfg = RnnConfig::new(emb_dim, 16)
            .num_layers(layers)
            .bidirectional(bi)
            .proj_size(proj)
            .batch_first(true);
        let mut rnn = RnnBase::new(mode, cfg, Kind::Float, Device::Cpu).unwrap();
        rnn.set_training(false);
        let emb =
            rnnkit::Embedding::new(vocab, emb_dim, Some(0), Kind::Float, Device::Cpu).unwrap();
        let lengths: Vec<i64> = vec![7, 3, 5, 1, 7, 2];
        let ids: Vec<i64> = (0..batch * l)
            .map(|k| {
                let (row, t) = (k / l, k % l);
                if t < lengths[row as usize] {
                    1 + (k * 17 + 3) % (vocab - 1)
                } else {
                    0
                }
            })
            .collect();
        let ids_t = Tensor::from_slice(&ids).view([batch, l]);
        let x = emb.forward(&ids_t).unwrap();
        let (want_out, want_state) = rnn.forward_padded(&x, &lengths, None).unwrap();
        let tables = rnn.input_table(&emb.weight).unwrap().expect("f32 CPU");
        let ((out, state), passes) = counting_fused(|| {
            rnn.forward_table(&tables, &ids, (batch, l), &lengths)
                .unwrap()
        });
        assert_eq!(passes, 1, "forward_table runs the fused kernel");
        let name = format!("{mode:?} bi={bi} layers={layers} proj={proj}");
        r.check(&name, "output", &out, &want_out, TOL);
        r.check(&name, "h_n", &state.h, &want_state.h, TOL);
        if let (Some(c), Some(w)) = (&state.c, &want_state.c) {
            r.check(&name, "c_n", c, w, TOL);
        }
        let mut bad = ids.clone();
        bad[3] = vocab;
        let err = rnn
            .forward_table(&tables, &bad, (batch, l), &lengths)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("token id 50") && err.contains("0..50"),
            "{err}"
        );
    }
    r.finish("embedding table path vs embedding + exact path (f32, atol 1e-5)");
}

#[test]
fn fused_kernel_handles_edge_shapes_like_the_exact_path() {
    let _guard = rnnkit::nn::inference::InferenceMode::enter();
    // (mode, input_size, hidden, batch, steps, bidirectional, proj)
    let cases = [
        (Mode::Lstm, 3, 1, 2, 5, false, 0),
        (Mode::Gru, 3, 5, 1, 1, true, 0),
        (Mode::RnnTanh, 0, 4, 3, 2, false, 0),
        (Mode::Lstm, 4, 6, 0, 3, false, 0),
        (Mode::Gru, 4, 6, 3, 0, false, 0),
        (Mode::Lstm, 2, 9, 6, 4, true, 2),
    ];
    for (mode, input, hidden, batch, steps, bi, proj) in cases {
        let cfg = RnnConfig::new(input, hidden)
            .bidirectional(bi)
            .proj_size(proj)
            .batch_first(true);
        let mut rnn = RnnBase::new(mode, cfg, Kind::Float, Device::Cpu).unwrap();
        rnn.set_training(false);
        let x = Tensor::randn([batch, steps, input], (Kind::Float, Device::Cpu));
        let exact = rnn.forward(&x, None);
        rnn.set_fused_inference(true);
        let fused = rnn.forward(&x, None);
        let name = format!("{mode:?} I={input} H={hidden} B={batch} T={steps} bi={bi} proj={proj}");
        match (exact, fused) {
            (Ok((eo, es)), Ok((fo, fs))) => {
                assert_eq!(eo.size(), fo.size(), "{name}: output shape");
                assert_eq!(es.h.size(), fs.h.size(), "{name}: h_n shape");
                if eo.numel() > 0 {
                    let d = (&eo - &fo).abs().max().double_value(&[]);
                    assert!(d < 1e-5, "{name}: output differs by {d}");
                }
                println!("{name}: same shapes and values");
            }
            (Err(e), Err(f)) => println!("{name}: both refuse ({e} / {f})"),
            (e, f) => panic!(
                "{name}: exact {:?} but fused {:?}",
                e.map(|_| ()),
                f.map(|_| ())
            ),
        }
    }
}
