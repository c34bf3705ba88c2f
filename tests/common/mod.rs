//! Shared by the golden-file tests: finding and reading the files PyTorch wrote.
#![allow(dead_code)]

use rnnkit::models::parity::{compare, compare_values, Diff, Tolerance};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::Tensor;

pub const REGENERATE: &str =
    "regenerate with: .venv/bin/python scripts/make_golden.py tests/golden/rnn \
                              (scripts/test.sh does this before the Rust tests)";

/// The crate's root directory.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A model directory written by `scripts/make_model_golden.py`.
pub fn golden_model(name: &str) -> PathBuf {
    let p = root().join("tests/golden/models").join(name);
    assert!(
        p.join("config.json").exists(),
        "{} missing; run scripts/test.sh (make_model_golden.py)",
        p.display()
    );
    p
}

/// The per-step `"loss"` values of a metrics.jsonl that rnnkit or a reference script wrote.
pub fn losses(path: &Path) -> Vec<f64> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter_map(|v| v.get("loss").and_then(serde_json::Value::as_f64))
        .collect()
}

/// One golden file: its case description and its tensors.
pub struct Golden {
    pub path: PathBuf,
    pub case: serde_json::Value,
    pub tensors: BTreeMap<String, Tensor>,
}

impl Golden {
    pub fn name(&self) -> &str {
        self.case["name"].as_str().unwrap_or("?")
    }
    pub fn get(&self, key: &str) -> Option<&Tensor> {
        self.tensors.get(key)
    }
    pub fn req(&self, key: &str) -> &Tensor {
        self.tensors
            .get(key)
            .unwrap_or_else(|| panic!("{}: no tensor {key:?}; {REGENERATE}", self.path.display()))
    }
    /// The case's forward pass on `rnn`: packed cases (`"packed": true`) with the golden
    /// `lengths`, the others whole.
    pub fn forward(
        &self,
        rnn: &rnnkit::nn::rnn::RnnBase,
        x: &Tensor,
        hx: Option<&rnnkit::nn::rnn::RnnState>,
    ) -> rnnkit::Result<(Tensor, rnnkit::nn::rnn::RnnState)> {
        if self.case["packed"].as_bool().unwrap() {
            let lengths = Vec::<i64>::try_from(self.req("lengths")).unwrap();
            rnn.forward_padded(x, &lengths, hx)
        } else {
            rnn.forward(x, hx)
        }
    }
    /// `param.<key>` tensors as a StateDict with `prefix` removed.
    pub fn params(&self, prefix: &str) -> rnnkit::StateDict {
        let pairs = self.tensors.iter().filter_map(|(k, t)| {
            k.strip_prefix(prefix)
                .map(|k| (k.to_string(), t.shallow_clone()))
        });
        rnnkit::StateDict::from_pairs(pairs)
            .unwrap()
            .with_source(&self.path)
    }
}

/// Reads every golden file in `tests/golden/<sub>`; fails (never skips) if there are none.
pub fn load_dir(sub: &str) -> Vec<Golden> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(sub);
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!(
                "golden directory {} unreadable ({e}); {REGENERATE}",
                dir.display()
            )
        })
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    paths.sort();
    assert!(
        !paths.is_empty(),
        "no golden files in {}; {REGENERATE}",
        dir.display()
    );
    paths
        .into_iter()
        .map(|path| {
            let st = rnnkit::checkpoint::safetensors::read(&path)
                .unwrap_or_else(|e| panic!("{e}; {REGENERATE}"));
            let case = serde_json::from_str(&st.metadata["case"]).expect("case metadata is JSON");
            let tensors = st
                .tensors
                .into_iter()
                .map(|(k, raw)| {
                    let t = raw.to_tch(&k).unwrap();
                    (k, t)
                })
                .collect();
            Golden {
                path,
                case,
                tensors,
            }
        })
        .collect()
}

/// Whether the environment variable `var` is set to `1`: the switches docs/PARITY.md lists
/// ("Skipping what this machine cannot run"). Without it, a case a test cannot run fails.
pub fn skip_allowed(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| v == "1")
}

/// Fails unless exactly `want` things were counted: a golden script that writes fewer cases, or
/// a filter that drops some, must not pass unnoticed.
#[track_caller]
pub fn assert_count(what: &str, got: usize, want: usize, hint: &str) {
    assert_eq!(
        got, want,
        "{what}: counted {got}, expected exactly {want}; {hint}"
    );
}

/// Collects comparisons and prints them; `finish` fails the test if any was not ok.
#[derive(Default)]
pub struct Report {
    pub lines: Vec<String>,
    pub failures: Vec<String>,
    pub compared: usize,
    pub bitwise: usize,
    /// The largest `max_abs` and `max_rel` over all comparisons, with where they were.
    pub worst_abs: (f64, String),
    pub worst_rel: (f64, String),
}

impl Report {
    pub fn check(
        &mut self,
        case: &str,
        key: &str,
        got: &Tensor,
        want: &Tensor,
        tol: Tolerance,
    ) -> Option<Diff> {
        let d = compare(key, got, want, tol);
        self.record(case, key, d, tol)
    }

    /// [`Report::check`] for lists of numbers (losses, probabilities), compared as f64.
    pub fn check_values(
        &mut self,
        case: &str,
        key: &str,
        got: &[f64],
        want: &[f64],
        tol: Tolerance,
    ) -> Option<Diff> {
        let d = compare_values(key, got, want, tol);
        self.record(case, key, d, tol)
    }

    fn record(
        &mut self,
        case: &str,
        key: &str,
        d: rnnkit::Result<Diff>,
        tol: Tolerance,
    ) -> Option<Diff> {
        self.compared += 1;
        match d {
            Ok(d) => {
                if d.bitwise_equal {
                    self.bitwise += 1;
                }
                // `>` is false for NaN, but Diff's maxima are never NaN (an unmatched NaN is +inf).
                let at = format!("{case} {key}");
                if d.max_abs > self.worst_abs.0 || self.worst_abs.1.is_empty() {
                    self.worst_abs = (d.max_abs, at.clone());
                }
                if d.max_rel > self.worst_rel.0 || self.worst_rel.1.is_empty() {
                    self.worst_rel = (d.max_rel, at);
                }
                let line = format!("{case:<40} {d}");
                if !d.ok {
                    self.failures.push(format!("{line}  [tolerance: {tol}]"));
                }
                self.lines.push(line);
                Some(d)
            }
            Err(e) => {
                self.failures.push(format!("{case:<40} {key}: {e}"));
                None
            }
        }
    }
    pub fn fail(&mut self, case: &str, msg: String) {
        self.failures.push(format!("{case:<40} {msg}"));
    }
    pub fn finish(self, what: &str) {
        assert!(self.compared > 0, "{what}: nothing was compared");
        for l in &self.lines {
            println!("{l}");
        }
        println!(
            "{what}: {} comparisons, {} bitwise equal, {} failed; worst abs diff {:.3e} ({}), worst rel diff {:.3e} ({})",
            self.compared,
            self.bitwise,
            self.failures.len(),
            self.worst_abs.0,
            self.worst_abs.1,
            self.worst_rel.0,
            self.worst_rel.1,
        );
        if !self.failures.is_empty() {
            for f in &self.failures {
                eprintln!("{f}");
            }
            panic!("{} {what} comparison(s) failed (see above); if the generator changed, {REGENERATE}", self.failures.len());
        }
    }
}

/// libtorch has one global random generator, and the tests of one binary run in parallel
/// threads. A test that seeds it and then draws (a new head's initial weights, dropout masks)
/// holds this lock from the seed to its last draw; so does every test of the binary that seeds
/// or draws (building a model draws its initial weights) — otherwise one test's draws can land
/// between another's seed and its draws.
pub fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
