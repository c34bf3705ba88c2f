//! Optimizers numerically equal to `torch.optim`'s single-tensor (CPU) implementations, with
//! parameter groups and a state that can be saved and restored.
//!
//! ```text
//! Adam / AdamW (t = step, g = grad, λ = weight_decay):
//!   AdamW: p ← p · (1 - lr·λ)            Adam: g ← g + λ·p
//!   m ← lerp(m, g, 1-β1)                 v ← β2·v + (1-β2)·g²
//!   p ← p - (lr / (1-β1^t)) · m / (√v / √(1-β2^t) + ε)
//! SGD: g ← g + λ·p;  b ← g (first step) | μ·b + (1-dampening)·g;  g ← g + μ·b (nesterov) | b;
//!      p ← p - lr·g
//! ```
//! As in PyTorch, a parameter whose gradient is undefined (frozen, `requires_grad = false`) is
//! skipped and gets no state; its state starts at its first gradient.

use crate::checkpoint::state_dict::StateDict;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use tch::Tensor;

/// An optimizer and its hyperparameters, written `{"name": "adam", "beta1": 0.9, ...}`; a key
/// left out takes PyTorch's default. The learning rate is not here: each [`ParamGroup`] has
/// its own.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "lowercase")]
pub enum OptimizerConfig {
    /// `torch.optim.Adam` (`"adam"`): L2 weight decay, added to the gradient.
    Adam {
        /// `betas[0]`, the decay of the gradient's running mean (default 0.9).
        #[serde(default = "b1")]
        beta1: f64,
        /// `betas[1]`, the decay of the squared gradient's running mean (default 0.999).
        #[serde(default = "b2")]
        beta2: f64,
        /// `eps`, added to the denominator (default 1e-8).
        #[serde(default = "eps")]
        eps: f64,
        /// `weight_decay`, the L2 penalty λ (default 0).
        #[serde(default)]
        weight_decay: f64,
    },
    /// `torch.optim.AdamW` (`"adamw"`): decoupled weight decay, applied to the weights.
    #[serde(rename = "adamw")]
    AdamW {
        /// `betas[0]`, the decay of the gradient's running mean (default 0.9).
        #[serde(default = "b1")]
        beta1: f64,
        /// `betas[1]`, the decay of the squared gradient's running mean (default 0.999).
        #[serde(default = "b2")]
        beta2: f64,
        /// `eps`, added to the denominator (default 1e-8).
        #[serde(default = "eps")]
        eps: f64,
        /// `weight_decay` λ: each step multiplies the weights by `1 - lr·λ` (default 0.01).
        #[serde(default = "wd_adamw")]
        weight_decay: f64,
    },
    /// `torch.optim.SGD` (`"sgd"`), with optional momentum.
    Sgd {
        /// `momentum` μ (default 0: plain SGD).
        #[serde(default)]
        momentum: f64,
        /// `dampening` of the momentum buffer's update (default 0).
        #[serde(default)]
        dampening: f64,
        /// `nesterov`: Nesterov momentum (default false; needs a momentum and zero dampening).
        #[serde(default)]
        nesterov: bool,
        /// `weight_decay`, the L2 penalty λ (default 0).
        #[serde(default)]
        weight_decay: f64,
    },
}

fn b1() -> f64 {
    0.9
}
fn b2() -> f64 {
    0.999
}
fn eps() -> f64 {
    1e-8
}
fn wd_adamw() -> f64 {
    0.01
}

impl OptimizerConfig {
    /// `torch.optim.Adam` defaults.
    pub fn adam() -> Self {
        OptimizerConfig::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
    /// `torch.optim.AdamW` defaults (weight_decay 0.01).
    pub fn adamw() -> Self {
        OptimizerConfig::AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
    /// `torch.optim.SGD(momentum=momentum, nesterov=nesterov)`, no dampening or weight decay.
    pub fn sgd(momentum: f64, nesterov: bool) -> Self {
        OptimizerConfig::Sgd {
            momentum,
            dampening: 0.0,
            nesterov,
            weight_decay: 0.0,
        }
    }
    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::config(m));
        match *self {
            OptimizerConfig::Adam {
                beta1,
                beta2,
                eps,
                weight_decay,
            }
            | OptimizerConfig::AdamW {
                beta1,
                beta2,
                eps,
                weight_decay,
            } => {
                if !(0.0..1.0).contains(&beta1) || !(0.0..1.0).contains(&beta2) {
                    return bad(format!("invalid beta parameters: ({beta1}, {beta2})"));
                }
                if eps < 0.0 || weight_decay < 0.0 {
                    return bad(format!("invalid eps {eps} or weight_decay {weight_decay}"));
                }
            }
            OptimizerConfig::Sgd {
                momentum,
                dampening,
                nesterov,
                weight_decay,
            } => {
                if momentum < 0.0 || weight_decay < 0.0 {
                    return bad(format!(
                        "invalid momentum {momentum} or weight_decay {weight_decay}"
                    ));
                }
                if nesterov && (momentum <= 0.0 || dampening != 0.0) {
                    return bad("Nesterov momentum requires a momentum and zero dampening".into());
                }
            }
        }
        Ok(())
    }
}

/// A parameter group: named parameters sharing a learning rate.
#[derive(Debug)]
pub struct ParamGroup {
    /// The group's name (`embedding`, `encoder.l0`, `head`, `all`); the optimizer does not read it.
    pub name: String,
    /// `(state_dict key, parameter)` pairs; the key names the parameter's optimizer state.
    pub params: Vec<(String, Tensor)>,
    /// The learning rate of the next step; the training loops set it before each step.
    pub lr: f64,
}

/// Per-parameter state: Adam's `step`, `exp_avg`, `exp_avg_sq`; SGD's `momentum_buffer`.
#[derive(Debug, Default)]
struct ParamState {
    step: f64,
    exp_avg: Option<Tensor>,
    exp_avg_sq: Option<Tensor>,
    momentum_buffer: Option<Tensor>,
}

/// An optimizer over parameter groups, as `torch.optim` with `param_groups`.
pub struct Optimizer {
    /// The algorithm and its hyperparameters, shared by every group.
    pub config: OptimizerConfig,
    /// The parameter groups, each parameter in only one.
    pub groups: Vec<ParamGroup>,
    state: HashMap<String, ParamState>,
}

impl Optimizer {
    /// Parameters that appear in several groups or twice (tied weights) are kept once, as
    /// `model.parameters()` deduplicates them.
    pub fn new(config: OptimizerConfig, groups: Vec<ParamGroup>) -> Result<Self> {
        config.validate()?;
        let mut seen = std::collections::HashSet::new();
        let groups = groups
            .into_iter()
            .map(|g| ParamGroup {
                params: g
                    .params
                    .into_iter()
                    .filter(|(_, t)| seen.insert(t.data_ptr() as usize))
                    .collect(),
                ..g
            })
            .collect();
        Ok(Self {
            config,
            groups,
            state: HashMap::new(),
        })
    }

    /// `optimizer.zero_grad()` with PyTorch's default `set_to_none=True`: gradients are dropped,
    /// not zero-filled (saves a fill and an add over every parameter per step).
    pub fn zero_grad(&mut self) {
        for g in &mut self.groups {
            for (_, p) in &mut g.params {
                crate::nn::inference::set_grad_none(p);
            }
        }
    }

    /// Names of the parameters that hold optimizer state.
    pub fn stateful_params(&self) -> Vec<String> {
        let mut v: Vec<String> = self.state.keys().cloned().collect();
        v.sort();
        v
    }

    /// One update of every parameter that has a gradient.
    pub fn step(&mut self) -> Result<()> {
        tch::no_grad(|| self.step_inner())
    }

    fn step_inner(&mut self) -> Result<()> {
        let config = self.config;
        for g in &mut self.groups {
            let lr = g.lr;
            for (name, p) in &mut g.params {
                let grad = p.grad();
                if !grad.defined() {
                    continue;
                }
                let st = self.state.entry(name.clone()).or_default();
                match config {
                    OptimizerConfig::Adam {
                        beta1,
                        beta2,
                        eps,
                        weight_decay,
                    }
                    | OptimizerConfig::AdamW {
                        beta1,
                        beta2,
                        eps,
                        weight_decay,
                    } => {
                        let decoupled = matches!(config, OptimizerConfig::AdamW { .. });
                        let exp_avg = st.exp_avg.get_or_insert_with(|| p.zeros_like());
                        let exp_avg_sq = st.exp_avg_sq.get_or_insert_with(|| p.zeros_like());
                        st.step += 1.0;
                        let mut grad = grad;
                        if weight_decay != 0.0 {
                            if decoupled {
                                let _ = p.f_mul_scalar_(1.0 - lr * weight_decay)?;
                            } else {
                                grad = grad.f_add(&(&*p * weight_decay))?;
                            }
                        }
                        let _ = exp_avg.f_lerp_(&grad, 1.0 - beta1)?;
                        let _ = exp_avg_sq
                            .f_mul_scalar_(beta2)?
                            .f_addcmul_(&(&grad * (1.0 - beta2)), &grad)?;
                        let bias_correction1 = 1.0 - beta1.powf(st.step);
                        let bias_correction2 = 1.0 - beta2.powf(st.step);
                        let step_size = lr / bias_correction1;
                        let denom =
                            (exp_avg_sq.sqrt() / bias_correction2.sqrt()).f_add_scalar_(eps)?;
                        let _ = p.f_addcdiv_(&(&*exp_avg * (-step_size)), &denom)?;
                    }
                    OptimizerConfig::Sgd {
                        momentum,
                        dampening,
                        nesterov,
                        weight_decay,
                    } => {
                        let mut grad = grad;
                        if weight_decay != 0.0 {
                            grad = grad.f_add(&(&*p * weight_decay))?;
                        }
                        if momentum != 0.0 {
                            let buf = match st.momentum_buffer.take() {
                                None => grad.detach().copy(),
                                Some(mut b) => {
                                    let _ = b
                                        .f_mul_scalar_(momentum)?
                                        .f_add_(&(&grad * (1.0 - dampening)))?;
                                    b
                                }
                            };
                            grad = if nesterov {
                                grad.f_add(&(&buf * momentum))?
                            } else {
                                buf.shallow_clone()
                            };
                            st.momentum_buffer = Some(buf);
                        }
                        st.step += 1.0;
                        let _ = p.f_sub_(&(grad * lr))?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The state as tensors keyed `{param}.step`, `{param}.exp_avg`, … (for checkpoints).
    pub fn state_dict(&self) -> StateDict {
        let mut sd = StateDict::new();
        let mut names: Vec<&String> = self.state.keys().collect();
        names.sort();
        for name in names {
            let st = &self.state[name];
            let _ = sd.insert(format!("{name}.step"), Tensor::from(st.step as f32));
            for (k, t) in [
                ("exp_avg", &st.exp_avg),
                ("exp_avg_sq", &st.exp_avg_sq),
                ("momentum_buffer", &st.momentum_buffer),
            ] {
                if let Some(t) = t {
                    let _ = sd.insert(format!("{name}.{k}"), t.copy());
                }
            }
        }
        sd
    }

    /// Restores a state saved by [`Optimizer::state_dict`]; every key must name a parameter of
    /// this optimizer with the right shape.
    pub fn load_state_dict(&mut self, sd: &StateDict) -> Result<()> {
        let shapes: HashMap<&str, (Vec<i64>, tch::Device, tch::Kind)> = self
            .groups
            .iter()
            .flat_map(|g| {
                g.params
                    .iter()
                    .map(|(n, t)| (n.as_str(), (t.size(), t.device(), t.kind())))
            })
            .collect();
        let mut state: HashMap<String, ParamState> = HashMap::new();
        for (key, t) in sd.iter() {
            let (param, field) = key
                .rsplit_once('.')
                .ok_or_else(|| Error::invalid(format!("optimizer state key {key:?}")))?;
            let (shape, device, kind) = shapes.get(param).ok_or_else(|| {
                Error::invalid(format!("optimizer state for unknown parameter {param:?}"))
            })?;
            let st = state.entry(param.to_string()).or_default();
            if field == "step" {
                st.step = t.double_value(&[]);
                continue;
            }
            if &t.size() != shape {
                return Err(Error::shape(
                    format!("optimizer state {key}"),
                    format!("{shape:?}"),
                    &t.size(),
                ));
            }
            let t = t.to_device(*device).to_kind(*kind);
            match field {
                "exp_avg" => st.exp_avg = Some(t),
                "exp_avg_sq" => st.exp_avg_sq = Some(t),
                "momentum_buffer" => st.momentum_buffer = Some(t),
                other => {
                    return Err(Error::invalid(format!(
                        "unknown optimizer state field {other:?} in {key:?}"
                    )))
                }
            }
        }
        self.state = state;
        Ok(())
    }
}

/// `torch.nn.utils.clip_grad_norm_(params, max_norm)` (2-norm): returns the total norm before
/// clipping; scales gradients by `min(1, max_norm / (total + 1e-6))`.
pub fn clip_grad_norm(params: &[Tensor], max_norm: f64) -> f64 {
    tch::no_grad(|| {
        let grads: Vec<Tensor> = params
            .iter()
            .map(Tensor::grad)
            .filter(Tensor::defined)
            .collect();
        if grads.is_empty() {
            return 0.0;
        }
        let norms: Vec<Tensor> = grads.iter().map(|g| g.norm()).collect();
        let total = Tensor::stack(&norms, 0).norm();
        // Python's `max_norm / (total + 1e-6)` is Tensor.__rtruediv__: reciprocal, then times
        // max_norm. tch's `f64 / &Tensor` divides then inverts, which rounds differently
        // unless max_norm is a power of two.
        let coef = ((&total + 1e-6).reciprocal() * max_norm).clamp_max(1.0);
        for g in &grads {
            let mut g = g.shallow_clone();
            g *= &coef;
        }
        total.double_value(&[])
    })
}

/// `torch.nn.utils.clip_grad_value_(params, clip_value)`.
pub fn clip_grad_value(params: &[Tensor], clip_value: f64) {
    tch::no_grad(|| {
        for p in params {
            let g = p.grad();
            if g.defined() {
                let _ = g.shallow_clone().clamp_(-clip_value, clip_value);
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn adam_first_step_moves_each_weight_by_lr() {
        // After one Adam step, m/(sqrt(v)) = sign(g): every weight moves by lr (hand arithmetic).
        let p = Tensor::from_slice(&[1.0f64, -2.0, 3.0]).set_requires_grad(true);
        (&p * Tensor::from_slice(&[0.5f64, -4.0, 2.0]))
            .sum(Kind::Double)
            .backward();
        let mut opt = Optimizer::new(
            OptimizerConfig::adam(),
            vec![ParamGroup {
                name: "all".into(),
                params: vec![("p".into(), p.shallow_clone())],
                lr: 0.1,
            }],
        )
        .unwrap();
        opt.step().unwrap();
        let want = Tensor::from_slice(&[0.9f64, -1.9, 2.9]);
        assert!((p.detach() - want).abs().max().double_value(&[]) < 1e-6);
    }

    #[test]
    fn frozen_parameters_get_no_state_and_state_round_trips() {
        let a = Tensor::ones([2], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
        let frozen = Tensor::ones([2], (Kind::Float, tch::Device::Cpu));
        (&a * 3.0).sum(Kind::Float).backward();
        let groups = vec![ParamGroup {
            name: "g".into(),
            params: vec![("a".into(), a.shallow_clone()), ("f".into(), frozen)],
            lr: 0.01,
        }];
        let mut opt = Optimizer::new(OptimizerConfig::adamw(), groups).unwrap();
        opt.step().unwrap();
        assert_eq!(opt.stateful_params(), ["a"]);
        let sd = opt.state_dict();
        assert_eq!(
            sd.keys().cloned().collect::<Vec<_>>(),
            ["a.step", "a.exp_avg", "a.exp_avg_sq"]
        );
        opt.load_state_dict(&sd).unwrap();
        assert_eq!(opt.stateful_params(), ["a"]);
    }
}
