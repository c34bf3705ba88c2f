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

use crate::error::Error;
use serde::de::{self, DeserializeOwned, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Written as `{"name": "slanted_triangular", "cut_frac": 0.1, ...}` (serde's internally tagged
/// form). Read by hand ([`Deserialize`] below) so that an error names the key inside it
/// (`at schedule.cut_frac: …`): serde's derived reader buffers a tagged enum's content and the
/// key path stops at `schedule`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum Schedule {
    /// `constant` (the default): factor 1 throughout.
    #[default]
    Constant,
    /// `linear_warmup`: linear rise to 1 over the warmup steps, then linear decay to 0 at T.
    LinearWarmup(LinearWarmup),
    /// `cosine`: half a cosine from 1 down to 0 at T (`CosineAnnealingLR(T_max=T, eta_min=0)`).
    Cosine,
    /// `slanted_triangular`: ULMFiT's short linear rise and long linear decay.
    SlantedTriangular(SlantedTriangular),
    /// `one_cycle`: a cosine rise, then a cosine decay (the shape of `OneCycleLR` with
    /// `anneal_strategy="cos"`).
    OneCycle(OneCycle),
}

/// The parameters of [`Schedule::LinearWarmup`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinearWarmup {
    /// W: steps of the rise (required; 0: no warmup, decay from step 0).
    pub warmup_steps: u64,
}

/// The parameters of [`Schedule::SlantedTriangular`] (Howard & Ruder 2018).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlantedTriangular {
    /// Fraction of the steps spent rising, in (0, 1] (default 0.1).
    #[serde(default = "cut_frac")]
    pub cut_frac: f64,
    /// How much smaller the lowest factor is than the peak, at least 1 (default 32).
    #[serde(default = "ratio")]
    pub ratio: f64,
}

/// The parameters of [`Schedule::OneCycle`], named as `torch.optim.lr_scheduler.OneCycleLR`'s.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OneCycle {
    /// `pct_start`: fraction of the steps spent rising, in [0, 1] (default 0.3).
    #[serde(default = "pct_start")]
    pub pct_start: f64,
    /// `div_factor`: the first factor is `1 / div_factor` (default 25).
    #[serde(default = "div")]
    pub div_factor: f64,
    /// `final_div_factor`: the last factor is `1 / (div_factor · final_div_factor)`
    /// (default 1e4).
    #[serde(default = "final_div")]
    pub final_div_factor: f64,
}

/// The parameters of `constant` and `cosine`: none (an extra key is an error).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParams {}

const NAMES: &[&str] = &[
    "constant",
    "linear_warmup",
    "cosine",
    "slanted_triangular",
    "one_cycle",
];

impl<'de> Deserialize<'de> for Schedule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut map = Map::<String, Value>::deserialize(d)?;
        let name = match map.remove("name") {
            Some(Value::String(name)) => name,
            Some(other) => {
                return Err(de::Error::custom(format!(
                    "at name: expected one of {NAMES:?}, got {other}"
                )))
            }
            None => return Err(de::Error::missing_field("name")),
        };
        // The other keys, read with their own path ("at cut_frac: …"), which
        // `crate::json` joins to the outer one.
        fn params<T: DeserializeOwned, E: de::Error>(map: Map<String, Value>) -> Result<T, E> {
            crate::json::from_value(Value::Object(map)).map_err(E::custom)
        }
        Ok(match name.as_str() {
            "constant" => params::<NoParams, _>(map).map(|_| Schedule::Constant)?,
            "linear_warmup" => Schedule::LinearWarmup(params(map)?),
            "cosine" => params::<NoParams, _>(map).map(|_| Schedule::Cosine)?,
            "slanted_triangular" => Schedule::SlantedTriangular(params(map)?),
            "one_cycle" => Schedule::OneCycle(params(map)?),
            other => return Err(de::Error::unknown_variant(other, NAMES)),
        })
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
    pub fn validate(&self) -> crate::error::Result<()> {
        let bad = |what: &str, v: f64, want: &str| {
            Err(Error::config(format!(
                "schedule.{what} must be {want}, got {v}"
            )))
        };
        match *self {
            Schedule::SlantedTriangular(SlantedTriangular { cut_frac, ratio }) => {
                if !(cut_frac > 0.0 && cut_frac <= 1.0) {
                    return bad("cut_frac", cut_frac, "in (0, 1]");
                }
                if !(ratio >= 1.0 && ratio.is_finite()) {
                    return bad("ratio", ratio, "at least 1");
                }
            }
            Schedule::OneCycle(OneCycle {
                pct_start,
                div_factor,
                final_div_factor,
            }) => {
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
            Schedule::Constant | Schedule::Cosine | Schedule::LinearWarmup(_) => {}
        }
        Ok(())
    }

    /// The multiplier at step `t` of `total`.
    pub fn factor(&self, t: u64, total: u64) -> f64 {
        let (t, total) = (t as f64, total.max(1) as f64);
        match *self {
            Schedule::Constant => 1.0,
            Schedule::LinearWarmup(LinearWarmup { warmup_steps }) => {
                let w = warmup_steps as f64;
                if t < w {
                    (t + 1.0) / w
                } else {
                    ((total - t) / (total - w).max(1.0)).max(0.0)
                }
            }
            Schedule::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * t / total).cos()),
            Schedule::SlantedTriangular(SlantedTriangular { cut_frac, ratio }) => {
                let cut = (total * cut_frac).floor().max(1.0);
                let p = if t < cut {
                    t / cut
                } else {
                    1.0 - (t - cut) / (cut * (1.0 / cut_frac - 1.0))
                };
                (1.0 + p.max(0.0) * (ratio - 1.0)) / ratio
            }
            Schedule::OneCycle(OneCycle {
                pct_start,
                div_factor,
                final_div_factor,
            }) => {
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
        let st =
            |cut_frac, ratio| Schedule::SlantedTriangular(SlantedTriangular { cut_frac, ratio });
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
    fn keys_are_named_inside_the_schedule_and_the_written_form_reads_back() {
        #[derive(Debug, Deserialize)]
        struct Cfg {
            #[allow(dead_code)]
            schedule: Schedule,
        }
        let err = |s: &str| crate::json::from_str::<Cfg>(s).unwrap_err().to_string();
        let e = err(r#"{"schedule": {"name": "one_cycle", "pct_start": "0.3"}}"#);
        assert!(
            e.starts_with("at schedule.pct_start: invalid type: string \"0.3\", expected f64"),
            "{e}"
        );
        let e = err(r#"{"schedule": {"name": "linear_warmup"}}"#);
        assert!(
            e.contains("at schedule: missing field `warmup_steps`"),
            "{e}"
        );
        let e = err(r#"{"schedule": {"name": "cosine", "warmup_steps": 1}}"#);
        assert!(
            e.starts_with("at schedule.warmup_steps: unknown field `warmup_steps`"),
            "{e}"
        );
        let e = err(r#"{"schedule": {"cut_frac": 0.1}}"#);
        assert!(e.contains("at schedule: missing field `name`"), "{e}");
        let e = err(r#"{"schedule": {"name": 3}}"#);
        assert!(e.starts_with("at schedule.name: expected one of"), "{e}");
        for s in [
            Schedule::Constant,
            Schedule::Cosine,
            Schedule::LinearWarmup(LinearWarmup { warmup_steps: 7 }),
            Schedule::SlantedTriangular(SlantedTriangular {
                cut_frac: 0.2,
                ratio: 8.0,
            }),
            Schedule::OneCycle(OneCycle {
                pct_start: 0.25,
                div_factor: 10.0,
                final_div_factor: 100.0,
            }),
        ] {
            let text = serde_json::to_string(&s).unwrap();
            assert!(text.starts_with("{\"name\":"), "{text}");
            assert_eq!(
                serde_json::from_str::<Schedule>(&text).unwrap(),
                s,
                "{text}"
            );
        }
        let st: Schedule = serde_json::from_str(r#"{"name": "slanted_triangular"}"#).unwrap();
        assert_eq!(
            st,
            Schedule::SlantedTriangular(SlantedTriangular {
                cut_frac: 0.1,
                ratio: 32.0
            })
        );
    }

    #[test]
    fn slanted_triangular_peaks_at_the_cut() {
        let s = Schedule::SlantedTriangular(SlantedTriangular {
            cut_frac: 0.1,
            ratio: 32.0,
        });
        assert!((s.factor(0, 100) - 1.0 / 32.0).abs() < 1e-12);
        assert!((s.factor(10, 100) - 1.0).abs() < 1e-12);
        assert!(s.factor(55, 100) < 1.0 && s.factor(55, 100) > s.factor(99, 100));
    }

    #[test]
    fn warmup_cosine_and_one_cycle_shapes() {
        let w = Schedule::LinearWarmup(LinearWarmup { warmup_steps: 4 });
        assert_eq!(
            (w.factor(0, 10), w.factor(3, 10), w.factor(10, 10)),
            (0.25, 1.0, 0.0)
        );
        assert!((Schedule::Cosine.factor(5, 10) - 0.5).abs() < 1e-12);
        let o = Schedule::OneCycle(OneCycle {
            pct_start: 0.3,
            div_factor: 25.0,
            final_div_factor: 1e4,
        });
        assert!((o.factor(0, 100) - 0.04).abs() < 1e-12 && (o.factor(30, 100) - 1.0).abs() < 1e-12);
    }
}
