//! `rnnkit bench`: times one configuration in this process and prints JSON, so that
//! `scripts/bench.sh` can interleave it with `scripts/bench_pytorch.py` (same specs, same JSON)
//! and report ratios. Timings live here and in the benchmark scripts, never in tests.
//!
//! Specs (JSON):
//! - `{"kind": "rnn", "mode": "LSTM"|"GRU"|"RNN_TANH", "B", "T", "I", "H", "layers", "bidirectional"}`:
//!   eval-mode inference under inference mode, batch_first, f32, on the fused kernel
//!   (`"exact": true`: on libtorch's own kernels, as PyTorch runs them).
//! - `{"kind": "train_step", "B", "T", "V", "E", "H", "layers"}`: classifier forward + backward
//!   + Adam step (padded batch with lengths, cross-entropy).
//! - `{"kind": "sgemm", "N"}`: an N×N×N f32 matrix product, to measure the machine's peak.
//! - `{"kind": "fma"}`: multiply-adds on registers only (twelve independent chains per thread,
//!   on every thread of the pool; AVX-512, else AVX2): the cores' arithmetic peak, which no
//!   product reaches and libtorch's sgemm need not approach (on AMD CPUs MKL runs a generic
//!   path).
//! - `{"kind": "bandwidth", "N"}`: reading a working set of N bytes, each thread of the pool its
//!   own share, over and over: the bytes/s the level of the cache (or memory) that holds N
//!   bytes delivers (`gbytes_per_s`).
//! - `{"kind": "barrier", "N"}`: two threads crossing the fused kernel's per-step barrier N
//!   times, nothing else: the cost of one step's synchronisation (`barrier_ns`).
//!   (Both in [`super::probes`], with `fma`.)
//! - `{"kind": "predict", "model": DIR, "input": FILE}`: end-to-end texts → probabilities for
//!   every line of FILE (model loading excluded).
//! - `{"kind": "translate", "model": DIR, "input": FILE, "B", "beam"}`: end-to-end texts →
//!   translations of every line of FILE with a seq2seq model, B sentences per batch (sorted by
//!   length), greedy when `beam` is 0 or absent, else beam search (α 0.6, 1-best); `workers`
//!   batches at once, each on one libtorch thread (default 1: libtorch's thread count);
//!   `"fused": true` on rnnkit's fused kernels (`rnnkit translate --fused`).
//! - `{"kind": "transcribe", "model": DIR, "input": FILE, "B"}`: end-to-end WAV files (one path
//!   per line of FILE) → read, resample, log-mel, the ctc model in batches of B in file order,
//!   greedy decoding; on the fused kernel (`rnnkit transcribe --fused`), or with `"exact": true`
//!   on libtorch's own kernels (the default `rnnkit transcribe`, PyTorch's bits).
//! - `{"kind": "ctc_train_step", "model": DIR, "B", "T"}`: a ctc model's forward (B random
//!   feature sequences of T frames down to T/2) + CTC loss + backward + Adam step.
//! - `{"kind": "seq2seq_train_step", "model": DIR, "B", "T"}`: teacher-forced forward +
//!   label-smoothed (0.1) cross-entropy + backward + Adam step of a seq2seq model on random
//!   source and target ids (B × T, lengths T - k mod T/2 for row k).
//!
//! FLOPs counted: 2·(gates·H·(I_layer + H)) multiply-adds per step, sequence and direction.

use rnnkit::error::{Error, Result};
use rnnkit::models::{Family, ModelConfig, Pooling, SequenceClassifier};
use rnnkit::nn::module::{Module, ModuleExt};
use rnnkit::nn::rnn::{Mode, RnnBase, RnnConfig};
use serde::{Deserialize, Serialize};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// Unknown keys are an error (`{"kind": "sgemm", "n": 1024}` would otherwise time a 0×0
/// product), as are sizes a kind needs but the spec leaves at 0 ([`Spec::check`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub kind: String,
    #[serde(default)]
    pub mode: Option<Mode>,
    #[serde(default, rename = "B")]
    pub b: i64,
    #[serde(default, rename = "T")]
    pub t: i64,
    #[serde(default, rename = "I")]
    pub i: i64,
    #[serde(default, rename = "H")]
    pub h: i64,
    #[serde(default, rename = "V")]
    pub v: i64,
    #[serde(default, rename = "E")]
    pub e: i64,
    #[serde(default, rename = "N")]
    pub n: i64,
    #[serde(default = "one")]
    pub layers: i64,
    #[serde(default)]
    pub bidirectional: bool,
    /// Inference on libtorch's own kernels (bitwise PyTorch) instead of the fused kernel.
    #[serde(default)]
    pub exact: bool,
    /// The `predict` kind's [`rnnkit::serve::predictor::PredictorOptions::batch_invariant`]
    /// (default true, as `rnnkit serve`).
    #[serde(default = "yes")]
    pub batch_invariant: bool,
    /// Beam width of the `translate` kind (0: greedy).
    #[serde(default)]
    pub beam: usize,
    /// The `translate` kind on rnnkit's fused kernels (`rnnkit translate --fused`; default
    /// false: libtorch's, PyTorch's bits).
    #[serde(default)]
    pub fused: bool,
    /// The `translate` kind's [`TranslateOptions::workers`] (default 1).
    ///
    /// [`TranslateOptions::workers`]: rnnkit::models::seq2seq::translate::TranslateOptions::workers
    #[serde(default = "one")]
    pub workers: i64,
    #[serde(default)]
    pub model: Option<std::path::PathBuf>,
    #[serde(default)]
    pub input: Option<std::path::PathBuf>,
}

fn one() -> i64 {
    1
}
fn yes() -> bool {
    true
}

impl Spec {
    /// The sizes this kind reads, each at least 1.
    pub fn check(&self) -> Result<()> {
        let sizes: &[(&str, i64)] = match self.kind.as_str() {
            "rnn" => &[
                ("B", self.b),
                ("T", self.t),
                ("I", self.i),
                ("H", self.h),
                ("layers", self.layers),
            ],
            "train_step" => &[
                ("B", self.b),
                ("T", self.t),
                ("V", self.v),
                ("E", self.e),
                ("H", self.h),
                ("layers", self.layers),
            ],
            "sgemm" | "bandwidth" | "barrier" => &[("N", self.n)],
            "translate" => &[("B", self.b), ("workers", self.workers)],
            "seq2seq_train_step" => &[("B", self.b), ("T", self.t)],
            "transcribe" => &[("B", self.b)],
            "ctc_train_step" => &[("B", self.b), ("T", self.t)],
            _ => &[],
        };
        match sizes.iter().find(|(_, v)| *v < 1) {
            Some((key, v)) => Err(Error::invalid(format!(
                "bench spec of kind {:?}: {key} must be at least 1, got {v}",
                self.kind
            ))),
            None => Ok(()),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct BenchResult {
    pub median_ms: f64,
    pub min_ms: f64,
    pub iters: usize,
    pub gflops: Option<f64>,
    /// The `bandwidth` kind's rate, bytes read per second / 1e9 (median iteration).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gbytes_per_s: Option<f64>,
    /// The `barrier` kind's cost of one crossing in nanoseconds (median iteration).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub barrier_ns: Option<f64>,
    pub threads: i32,
}

/// Times `f` (after `warmup` calls) `iters` times, or for about `budget_s` seconds.
fn time(
    mut f: impl FnMut() -> Result<()>,
    warmup: usize,
    iters: usize,
    budget_s: f64,
) -> Result<(f64, f64, usize)> {
    for _ in 0..warmup {
        f()?;
    }
    let mut ms = Vec::with_capacity(iters);
    let start = Instant::now();
    while ms.len() < iters && (ms.len() < 3 || start.elapsed().as_secs_f64() < budget_s) {
        let t = Instant::now();
        f()?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    Ok((ms[ms.len() / 2], ms[0], ms.len()))
}

pub fn rnn_flops(
    mode: Mode,
    b: i64,
    t: i64,
    i: i64,
    h: i64,
    layers: i64,
    bidirectional: bool,
) -> f64 {
    let d = if bidirectional { 2 } else { 1 };
    (0..layers)
        .map(|l| {
            let inp = if l == 0 { i } else { h * d };
            2.0 * (mode.gates() * h * (inp + h)) as f64 * (b * t * d) as f64
        })
        .sum()
}

/// `torch.optim.Adam(params, lr=1e-3)`, one group: the training steps of both sides.
fn adam(params: Vec<(String, Tensor)>) -> Result<rnnkit::train::optim::Optimizer> {
    rnnkit::train::optim::Optimizer::new(
        rnnkit::train::optim::OptimizerConfig::adam(),
        vec![rnnkit::train::optim::ParamGroup {
            name: "all".into(),
            params,
            lr: 1e-3,
        }],
    )
}

/// The spec's model directory, which `kind` needs.
fn model_of<'a>(spec: &'a Spec, kind: &str) -> Result<&'a std::path::Path> {
    spec.model
        .as_deref()
        .ok_or_else(|| Error::invalid(format!("{kind} spec needs model")))
}

/// The non-blank lines of the spec's input file, which `kind` needs.
fn input_lines(spec: &Spec, kind: &str) -> Result<Vec<String>> {
    let input = spec
        .input
        .as_ref()
        .ok_or_else(|| Error::invalid(format!("{kind} spec needs input")))?;
    let text = std::fs::read_to_string(input).map_err(|e| Error::io(input, e))?;
    Ok(text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect())
}

pub fn run(spec: &Spec, iters: usize, warmup: usize, budget_s: f64) -> Result<BenchResult> {
    spec.check()?;
    if let Some(r) = probe(spec, iters, warmup, budget_s)? {
        return Ok(r);
    }
    let cpu = (Kind::Float, Device::Cpu);
    let (median_ms, min_ms, n, flops) = match spec.kind.as_str() {
        "rnn" => {
            let mode = spec
                .mode
                .ok_or_else(|| Error::invalid("rnn spec needs a mode"))?;
            let cfg = RnnConfig::new(spec.i, spec.h)
                .num_layers(spec.layers)
                .bidirectional(spec.bidirectional)
                .batch_first(true);
            let mut rnn = RnnBase::new(mode, cfg, Kind::Float, Device::Cpu)?;
            rnn.set_training(false);
            rnn.set_fused_inference(!spec.exact);
            let x = Tensor::randn([spec.b, spec.t, spec.i], cpu);
            let _g = rnnkit::nn::inference::InferenceMode::enter();
            let (m, lo, n) = time(
                || rnn.forward(&x, None).map(|_| ()),
                warmup,
                iters,
                budget_s,
            )?;
            (
                m,
                lo,
                n,
                Some(rnn_flops(
                    mode,
                    spec.b,
                    spec.t,
                    spec.i,
                    spec.h,
                    spec.layers,
                    spec.bidirectional,
                )),
            )
        }
        "fma" => {
            const ITERS: usize = 1 << 21;
            let mut flops = 0.0;
            let (m, lo, n) = time(
                || {
                    flops = super::probes::fma_peak(ITERS, tch::get_num_threads().max(1) as usize)?;
                    Ok(())
                },
                warmup,
                iters,
                budget_s,
            )?;
            (m, lo, n, Some(flops))
        }
        "sgemm" => {
            let a = Tensor::randn([spec.n, spec.n], cpu);
            let b = Tensor::randn([spec.n, spec.n], cpu);
            let _g = rnnkit::nn::inference::InferenceMode::enter();
            let (m, lo, n) = time(
                || a.f_mm(&b).map(|_| ()).map_err(Into::into),
                warmup,
                iters,
                budget_s,
            )?;
            (m, lo, n, Some(2.0 * (spec.n as f64).powi(3)))
        }
        "train_step" => {
            let cfg = ModelConfig {
                format: "rnnkit-model".into(),
                format_version: 1,
                family: Family::Classifier,
                vocab_size: spec.v,
                embedding_dim: spec.e,
                padding_idx: Some(0),
                encoder: rnnkit::models::EncoderConfig {
                    mode: Mode::Lstm,
                    rnn: RnnConfig::new(spec.e, spec.h)
                        .num_layers(spec.layers)
                        .batch_first(true),
                },
                dropout: 0.0,
                pooling: Pooling::Last,
                attention_size: 64,
                num_classes: Some(2),
                labels: None,
                tie_weights: false,
                tokenizer: "tokenizer.json".into(),
                max_length: 256,
                prefixes: Default::default(),
                seq2seq: None,
            };
            let model = SequenceClassifier::new(cfg, Kind::Float, Device::Cpu)?;
            let mut opt = adam(model.named_parameters())?;
            let ids = Tensor::randint_low(1, spec.v, [spec.b, spec.t], (Kind::Int64, Device::Cpu));
            let lengths: Vec<i64> = (0..spec.b)
                .map(|k| spec.t - (k % (spec.t / 2).max(1)))
                .collect();
            let y = Tensor::randint(2, [spec.b], (Kind::Int64, Device::Cpu));
            let (m, lo, n) = time(
                || {
                    let loss = model.forward(&ids, &lengths)?.f_cross_entropy_loss(
                        &y,
                        None::<Tensor>,
                        tch::Reduction::Mean,
                        -100,
                        0.0,
                    )?;
                    opt.zero_grad();
                    loss.backward();
                    opt.step()
                },
                warmup,
                iters,
                budget_s,
            )?;
            (m, lo, n, None)
        }
        "predict" => {
            let model = model_of(spec, "predict")?;
            let texts = input_lines(spec, "predict")?;
            let lines: Vec<&str> = texts.iter().map(String::as_str).collect();
            let opts = rnnkit::serve::predictor::PredictorOptions {
                // The same batches as scripts/bench_pytorch.py (and `rnnkit predict
                // --batch-size 32`): sorted by length, chunks of 32, which run on the fused
                // per-unit path (docs/PERFORMANCE.md).
                max_batch: 32,
                max_wait: std::time::Duration::ZERO,
                workers: 1,
                queue_capacity: 1 << 20,
                batch_invariant: spec.batch_invariant,
                fused_transcription: false,
            };
            let p = rnnkit::serve::predictor::Predictor::load(model, Device::Cpu, opts)?;
            let (m, lo, n) = time(
                || {
                    p.predict(&lines)
                        .map_err(|e| Error::invalid(e.to_string()))?;
                    Ok(())
                },
                warmup,
                iters,
                budget_s,
            )?;
            (m, lo, n, None)
        }
        "translate" => {
            use rnnkit::models::seq2seq::translate::{Search, TranslateOptions, Translator};
            let model = model_of(spec, "translate")?;
            let texts = input_lines(spec, "translate")?;
            let mut t = Translator::load(model, Device::Cpu)?;
            t.model.set_fused_inference(spec.fused)?;
            let opts = TranslateOptions {
                search: match spec.beam {
                    0 => Search::Greedy,
                    beam => Search::Beam {
                        beam,
                        alpha: 0.6,
                        n_best: 1,
                    },
                },
                batch_size: spec.b as usize,
                workers: spec.workers as usize,
                ..Default::default()
            };
            let (m, lo, n) = time(
                || t.translate(&texts, &opts).map(|_| ()),
                warmup,
                iters,
                budget_s,
            )?;
            (m, lo, n, None)
        }
        "seq2seq_train_step" => {
            let model = model_of(spec, "seq2seq_train_step")?;
            let (mut m, _, _) =
                rnnkit::models::seq2seq::translate::load_with_tokenizers(model, Device::Cpu)?;
            m.set_training(true);
            // A tied tensor is optimised once: the optimizer keeps each tensor once.
            let mut opt = adam(m.named_parameters())?;
            let (b, t) = (spec.b, spec.t);
            let lengths: Vec<i64> = (0..b).map(|k| t - (k % (t / 2).max(1))).collect();
            let pad = m.config.padding_idx.unwrap_or(0);
            let mask = Tensor::arange(t, (Kind::Int64, Device::Cpu))
                .unsqueeze(0)
                .lt_tensor(&Tensor::from_slice(&lengths).unsqueeze(1));
            let ids = |v: i64| {
                Tensor::randint_low(3, v, [b, t], (Kind::Int64, Device::Cpu))
                    .where_self(&mask, &Tensor::from(pad))
            };
            let src = ids(m.config.vocab_size);
            let tgt_in = ids(m.s2s().tgt_vocab_size);
            let tgt_out = ids(m.s2s().tgt_vocab_size);
            let (med, lo, n) = time(
                || {
                    let logits = m.forward(&src, &lengths, &tgt_in)?;
                    let loss = m.loss(&logits, &tgt_out, 0.1)?;
                    opt.zero_grad();
                    loss.f_backward()?;
                    opt.step()
                },
                warmup,
                iters,
                budget_s,
            )?;
            (med, lo, n, None)
        }
        "transcribe" => {
            use rnnkit::models::ctc::transcribe::{DecodeOptions, Transcriber};
            let model = model_of(spec, "transcribe")?;
            let files = input_lines(spec, "transcribe")?;
            let mut t = Transcriber::load(model, Device::Cpu)?;
            t.set_fused_inference(!spec.exact);
            let _guard = rnnkit::nn::inference::InferenceMode::enter();
            let (m, lo, n) = time(
                || {
                    for chunk in files.chunks(spec.b as usize) {
                        let feats = chunk
                            .iter()
                            .map(|f| t.file_features(std::path::Path::new(f), 600.0))
                            .collect::<Result<Vec<_>>>()?;
                        t.transcribe_features(&feats, &DecodeOptions::default())?;
                    }
                    Ok(())
                },
                warmup,
                iters,
                budget_s,
            )?;
            (m, lo, n, None)
        }
        "ctc_train_step" => {
            use rnnkit::models::ctc::CtcModel;
            let mut m = CtcModel::load_dir(model_of(spec, "ctc_train_step")?, Device::Cpu)?;
            m.set_training(true);
            let mut opt = adam(m.named_parameters())?;
            let (b, t) = (spec.b, spec.t);
            let lengths: Vec<i64> = (0..b).map(|k| t - (k % (t / 2).max(1))).collect();
            let x = Tensor::randn([b, t, m.config.features.n_mels], (Kind::Float, Device::Cpu));
            let v = m.config.num_classes();
            let targets: Vec<Vec<i64>> = (0..b)
                .map(|k| (0..t / 8).map(|j| 1 + (k * 7 + j * 3) % (v - 1)).collect())
                .collect();
            let (med, lo, n) = time(
                || {
                    let (logits, out_lens) = m.forward(&x, &lengths)?;
                    let loss = CtcModel::loss(&logits, &out_lens, &targets)?;
                    opt.zero_grad();
                    loss.f_backward()?;
                    opt.step()
                },
                warmup,
                iters,
                budget_s,
            )?;
            (med, lo, n, None)
        }
        other => return Err(Error::invalid(format!("unknown bench kind {other:?}"))),
    };
    Ok(BenchResult {
        median_ms,
        min_ms,
        iters: n,
        gflops: flops.map(|f| f / (median_ms * 1e-3) / 1e9),
        gbytes_per_s: None,
        barrier_ns: None,
        threads: tch::get_num_threads(),
    })
}

/// The `bandwidth` and `barrier` kinds (None for any other kind).
fn probe(spec: &Spec, iters: usize, warmup: usize, budget_s: f64) -> Result<Option<BenchResult>> {
    use super::probes;
    let threads = tch::get_num_threads();
    let n = spec.n as usize;
    let (median_ms, min_ms, iters, gbytes_per_s, barrier_ns) = match spec.kind.as_str() {
        "bandwidth" => {
            let buffers = probes::Buffers::new(n, threads.max(1) as usize);
            // About 256 MiB read per timed iteration, whatever the working set.
            let passes = ((256usize << 20) / buffers.bytes()).max(1);
            let mut bytes = 0.0;
            let (m, lo, k) = time(
                || {
                    bytes = probes::bandwidth(&buffers, passes)?;
                    Ok(())
                },
                warmup.max(1),
                iters,
                budget_s,
            )?;
            (m, lo, k, Some(bytes / (m * 1e-3) / 1e9), None)
        }
        "barrier" => {
            let (m, lo, k) = time(|| probes::barrier(n), warmup, iters, budget_s)?;
            (m, lo, k, None, Some(m * 1e6 / n as f64))
        }
        _ => return Ok(None),
    };
    Ok(Some(BenchResult {
        median_ms,
        min_ms,
        iters,
        gflops: None,
        gbytes_per_s,
        barrier_ns,
        threads,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> std::result::Result<Spec, String> {
        serde_json::from_str::<Spec>(json).map_err(|e| e.to_string())
    }

    /// The probe kinds report their own unit, and the fma kind its FLOP rate.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn probe_kinds_report_their_rates() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            println!("skipped: no AVX2 on this CPU");
            return;
        }
        let r = run(&spec(r#"{"kind": "fma"}"#).unwrap(), 3, 0, 0.0).unwrap();
        assert_eq!(r.iters, 3);
        assert!(r.gflops.is_some_and(|g| g > 0.0));
        let r = run(
            &spec(r#"{"kind": "bandwidth", "N": 65536}"#).unwrap(),
            3,
            0,
            0.0,
        )
        .unwrap();
        assert!(r.gbytes_per_s.is_some_and(|g| g > 0.0) && r.gflops.is_none());
        let e = run(&spec(r#"{"kind": "barrier"}"#).unwrap(), 3, 0, 0.0).unwrap_err();
        assert!(e.to_string().contains("N must be at least 1"), "{e}");
    }

    #[test]
    fn unknown_keys_and_missing_sizes_are_errors() {
        let e = spec(r#"{"kind": "sgemm", "n": 1024}"#).unwrap_err();
        assert!(e.contains("unknown field `n`"), "{e}");
        let s = spec(r#"{"kind": "sgemm"}"#).unwrap();
        let e = s.check().unwrap_err().to_string();
        assert!(e.contains("N must be at least 1, got 0"), "{e}");
        let s = spec(r#"{"kind": "rnn", "mode": "LSTM", "B": 2, "T": 3, "I": 4}"#).unwrap();
        let e = s.check().unwrap_err().to_string();
        assert!(e.contains("\"rnn\": H must be at least 1"), "{e}");
        let s = spec(r#"{"kind": "rnn", "mode": "GRU", "B": 2, "T": 3, "I": 4, "H": 5}"#).unwrap();
        s.check().unwrap();
        spec(r#"{"kind": "sgemm", "N": 8}"#)
            .unwrap()
            .check()
            .unwrap();
    }
}
