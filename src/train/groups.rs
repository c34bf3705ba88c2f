//! Layer groups of a model being trained (the seq2seq and ctc loops): each group's parameters,
//! the frozen ones, each group's base learning rate and which groups train in which epoch.
//!
//! ```text
//! groups 0..G, bottom to top;  base_lr_g = lr / factor^(G-1-g)      (discriminative rates)
//! epoch e (from 0) trains group g  ⇔  not gradual_unfreezing, or G-1-g ≤ e
//! a parameter trains               ⇔  its group trains and no `freeze` glob covers its name
//! ```
//! The optimizer holds one parameter group per layer group, without the frozen parameters.

use crate::error::{Error, Result};
use crate::train::common::{discriminative_lrs, Freeze};
use crate::train::optim::{Optimizer, OptimizerConfig, ParamGroup};
use tch::Tensor;

/// Named parameters per layer group, bottom to top.
pub(crate) type Groups = Vec<(String, Vec<(String, Tensor)>)>;

/// The encoder layer of a parameter, from its name after the encoder's prefix
/// (`weight_ih_l2_reverse` → 2; 0 when the name has no layer).
pub(crate) fn encoder_layer(rest: &str) -> usize {
    rest.rsplit_once("_l")
        .and_then(|(_, k)| k.trim_end_matches("_reverse").parse::<usize>().ok())
        .unwrap_or(0)
}

/// The layer groups of a run and what they decide (see the module doc).
pub(crate) struct LayerGroups {
    groups: Groups,
    freeze: Freeze,
    /// Each group's base rate.
    pub base_lrs: Vec<f64>,
    /// Every parameter once, for gradient clipping.
    pub all: Vec<Tensor>,
    /// Names of the trained and of the frozen parameters.
    pub trained: Vec<String>,
    /// See `trained`.
    pub frozen: Vec<String>,
    gradual: bool,
}

impl LayerGroups {
    /// Refuses freeze patterns that match nothing or leave the first epoch nothing to train.
    pub(crate) fn new(
        groups: Groups,
        patterns: &[String],
        gradual: bool,
        lr: f64,
        factor: Option<f64>,
    ) -> Result<Self> {
        let g_count = groups.len();
        let names: Vec<String> = groups
            .iter()
            .flat_map(|(_, ps)| ps.iter().map(|(k, _)| k.clone()))
            .collect();
        let freeze = Freeze::new(patterns, &names)?;
        // The first epoch trains the fewest parameters (with gradual unfreezing, the top group).
        let first_open = if gradual { g_count - 1 } else { 0 };
        if groups[first_open..]
            .iter()
            .flat_map(|(_, ps)| ps)
            .all(|(k, _)| freeze.covers(k))
        {
            return Err(Error::config(format!(
                "nothing to train{}: freeze {patterns:?} covers every parameter there",
                if gradual {
                    format!(
                        " in epoch 1 (gradual unfreezing trains `{}` first)",
                        groups[g_count - 1].0
                    )
                } else {
                    String::new()
                },
            )));
        }
        let all = groups
            .iter()
            .flat_map(|(_, ps)| ps.iter().map(|(_, t)| t.shallow_clone()))
            .collect();
        let (frozen, trained) = names.into_iter().partition(|k| freeze.covers(k));
        Ok(Self {
            base_lrs: discriminative_lrs(lr, factor, g_count),
            groups,
            freeze,
            all,
            trained,
            frozen,
            gradual,
        })
    }

    /// The configured optimizer: one parameter group per layer group, frozen parameters left out.
    pub(crate) fn optimizer(&self, cfg: OptimizerConfig) -> Result<Optimizer> {
        Optimizer::new(
            cfg,
            self.groups
                .iter()
                .zip(&self.base_lrs)
                .map(|((name, ps), &lr)| ParamGroup {
                    name: name.clone(),
                    params: ps
                        .iter()
                        .filter(|(k, _)| !self.freeze.covers(k))
                        .map(|(k, t)| (k.clone(), t.shallow_clone()))
                        .collect(),
                    lr,
                })
                .collect(),
        )
    }

    /// Sets `requires_grad` for `epoch` (see the module doc).
    pub(crate) fn set_trainable(&self, epoch: u64) {
        let g_count = self.groups.len();
        for (g, (_, ps)) in self.groups.iter().enumerate() {
            let open = !self.gradual || (g_count - 1 - g) as u64 <= epoch;
            for (k, t) in ps {
                let _ = t
                    .shallow_clone()
                    .set_requires_grad(open && !self.freeze.covers(k));
            }
        }
    }

    /// Each optimizer group's rate for a step: its base rate times the schedule's `factor`.
    pub(crate) fn set_lrs(&self, opt: &mut Optimizer, factor: f64) {
        for (g, lr) in opt.groups.iter_mut().zip(&self.base_lrs) {
            g.lr = lr * factor;
        }
    }
}
