//! Learning-rate schedules as multipliers of each group's base rate, by step t of T total
//! (0-based: the factor for the update made at step t). `scripts/finetune_reference.py` uses
//! the same formulas.
//!
//! ```text
//! constant:        1
//! linear_warmup:   t < W: (t+1)/W;  else max(0, (T-t)/(T-W))                 (HF-style)
//! cosine:          ½(1 + cos(π t / T))                                        (CosineAnnealingLR, η_min=0)
//! slanted_triangular (ULMFiT, cut = ⌊T·cut_frac⌋):
//!                  p = t/cut if t < cut else 1 - (t-cut)/(cut·(1/cut_frac - 1))
//!                  (1 + p·(ratio-1)) / ratio
//! one_cycle:       cosine from 1/div up to 1 over the first pct_start·T steps, then cosine
//!                  down to 1/(div·final_div)                                  (OneCycleLR's shape)
//! ```

use serde::{Deserialize, Serialize};

/// Every variant is a struct variant, `Constant {}` included: serde ignores extra keys on unit
/// variants of an internally tagged enum even with `deny_unknown_fields`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case", deny_unknown_fields)]
pub enum Schedule {
    Constant {},
    LinearWarmup {
        warmup_steps: u64,
    },
    Cosine {},
    SlantedTriangular {
        #[serde(default = "cut_frac")]
        cut_frac: f64,
        #[serde(default = "ratio")]
        ratio: f64,
    },
    OneCycle {
        #[serde(default = "pct_start")]
        pct_start: f64,
        #[serde(default = "div")]
        div_factor: f64,
        #[serde(default = "final_div")]
        final_div_factor: f64,
    },
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule::Constant {}
    }
}

fn cut_frac() -> f64 {
    0.1
}
fn ratio() -> f64 {
    32.0
}
fn pct_start() -> f64 {
    0.3
}
fn div() -> f64 {
    25.0
}
fn final_div() -> f64 {
    1e4
}

impl Schedule {
    /// Refuses parameters that would make the rate NaN, negative or infinite (PyTorch's
    /// OneCycleLR also requires 0 ≤ pct_start ≤ 1).
    pub fn validate(&self) -> Result<(), String> {
        let bad = |what: &str, v: f64, want: &str| {
            Err(format!("schedule.{what} must be {want}, got {v}"))
        };
        match *self {
            Schedule::SlantedTriangular { cut_frac, ratio } => {
                if !(cut_frac > 0.0 && cut_frac <= 1.0) {
                    return bad("cut_frac", cut_frac, "in (0, 1]");
                }
                if !(ratio >= 1.0 && ratio.is_finite()) {
                    return bad("ratio", ratio, "at least 1");
                }
            }
            Schedule::OneCycle {
                pct_start,
                div_factor,
                final_div_factor,
            } => {
                if !(0.0..=1.0).contains(&pct_start) {
                    return bad("pct_start", pct_start, "in [0, 1]");
                }
                for (what, v) in [
                    ("div_factor", div_factor),
                    ("final_div_factor", final_div_factor),
                ] {
                    if !(v > 0.0 && v.is_finite()) {
                        return bad(what, v, "positive");
                    }
                }
            }
            Schedule::Constant {} | Schedule::Cosine {} | Schedule::LinearWarmup { .. } => {}
        }
        Ok(())
    }

    /// The multiplier at step `t` of `total`.
    pub fn factor(&self, t: u64, total: u64) -> f64 {
        let (t, total) = (t as f64, total.max(1) as f64);
        match *self {
            Schedule::Constant {} => 1.0,
            Schedule::LinearWarmup { warmup_steps } => {
                let w = warmup_steps as f64;
                if t < w {
                    (t + 1.0) / w
                } else {
                    ((total - t) / (total - w).max(1.0)).max(0.0)
                }
            }
            Schedule::Cosine {} => 0.5 * (1.0 + (std::f64::consts::PI * t / total).cos()),
            Schedule::SlantedTriangular { cut_frac, ratio } => {
                let cut = (total * cut_frac).floor().max(1.0);
                let p = if t < cut {
                    t / cut
                } else {
                    1.0 - (t - cut) / (cut * (1.0 / cut_frac - 1.0))
                };
                (1.0 + p.max(0.0) * (ratio - 1.0)) / ratio
            }
            Schedule::OneCycle {
                pct_start,
                div_factor,
                final_div_factor,
            } => {
                let up = (pct_start * total).max(1.0);
                let cos = |from: f64, to: f64, pct: f64| {
                    to + (from - to) / 2.0 * (1.0 + (std::f64::consts::PI * pct).cos())
                };
                let (lo, end) = (1.0 / div_factor, 1.0 / (div_factor * final_div_factor));
                if t < up {
                    cos(lo, 1.0, t / up)
                } else {
                    cos(1.0, end, ((t - up) / (total - up).max(1.0)).min(1.0))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_and_impossible_values_are_refused() {
        let parse = |s: &str| serde_json::from_str::<Schedule>(s);
        assert_eq!(
            parse(r#"{"name": "constant"}"#).unwrap(),
            Schedule::default()
        );
        assert!(parse(r#"{"name": "cosine"}"#).is_ok());
        for bad in [
            r#"{"name": "cosine", "warmup_steps": 100}"#,
            r#"{"name": "constant", "ratio": 2}"#,
            r#"{"name": "one_cycle", "max_lr": 1}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let st = |cut_frac, ratio| Schedule::SlantedTriangular { cut_frac, ratio };
        assert!(st(1.0, 32.0).validate().is_ok() && st(1.0, 32.0).factor(99, 100) <= 1.0);
        for s in [
            st(0.0, 32.0),
            st(1.5, 32.0),
            st(0.1, 0.0),
            st(0.1, f64::NAN),
        ] {
            assert!(s.validate().is_err(), "{s:?}");
        }
    }

    #[test]
    fn slanted_triangular_peaks_at_the_cut() {
        let s = Schedule::SlantedTriangular {
            cut_frac: 0.1,
            ratio: 32.0,
        };
        assert!((s.factor(0, 100) - 1.0 / 32.0).abs() < 1e-12);
        assert!((s.factor(10, 100) - 1.0).abs() < 1e-12);
        assert!(s.factor(55, 100) < 1.0 && s.factor(55, 100) > s.factor(99, 100));
    }

    #[test]
    fn warmup_cosine_and_one_cycle_shapes() {
        let w = Schedule::LinearWarmup { warmup_steps: 4 };
        assert_eq!(
            (w.factor(0, 10), w.factor(3, 10), w.factor(10, 10)),
            (0.25, 1.0, 0.0)
        );
        assert!((Schedule::Cosine {}.factor(5, 10) - 0.5).abs() < 1e-12);
        let o = Schedule::OneCycle {
            pct_start: 0.3,
            div_factor: 25.0,
            final_div_factor: 1e4,
        };
        assert!((o.factor(0, 100) - 0.04).abs() < 1e-12 && (o.factor(30, 100) - 1.0).abs() < 1e-12);
    }
}
