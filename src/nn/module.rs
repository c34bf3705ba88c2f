//! What every layer shares: parameters visited in PyTorch's registration order under their
//! state_dict keys, train/eval switching, dtype and device moves, and strict or partial loading.
//!
//! A composite module visits its children with `prefix + "child."`, so the keys it produces are
//! exactly `model.state_dict().keys()` of the equivalent `torch.nn.Module`.

use crate::checkpoint::state_dict::StateDict;
use crate::error::{Error, Result};
use tch::{Device, Kind, Tensor};

/// A layer or model with named parameters (and buffers, which PyTorch also puts in state_dict).
pub trait Module {
    /// Calls `f(key, tensor)` for every parameter, in PyTorch's order, keys prefixed by `prefix`.
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor));
    /// As [`Module::visit`], with the right to replace each tensor (dtype and device moves).
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(String, &mut Tensor));
    /// PyTorch's `.train(mode)`: switches dropout (and nothing else, for these layers).
    fn set_training(&mut self, training: bool);
    /// PyTorch's `module.training`.
    fn is_training(&self) -> bool;
}

/// Handy wrappers with PyTorch's names.
pub trait ModuleExt: Module {
    /// `module.train()`.
    fn train(&mut self) {
        self.set_training(true)
    }
    /// `module.eval()`.
    fn eval(&mut self) {
        self.set_training(false)
    }
    /// `named_parameters()`: shallow handles that share storage with the module.
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        self.visit("", &mut |name, t| out.push((name, t.shallow_clone())));
        out
    }
    /// `state_dict()`: detached handles sharing storage, in registration order.
    fn state_dict(&self) -> StateDict {
        let mut sd = StateDict::new();
        self.visit("", &mut |name, t| {
            // Names are unique by construction; a duplicate would be a bug in a module's visit().
            let _ = sd.insert(name, t.detach());
        });
        sd
    }
    /// Number of scalar parameters.
    fn num_parameters(&self) -> i64 {
        let mut n = 0;
        self.visit("", &mut |_, t| n += t.numel() as i64);
        n
    }
    /// `module.to(dtype)` / `.to(device)`: converts every floating-point parameter, keeping
    /// `requires_grad`.
    fn to_(&mut self, kind: Option<Kind>, device: Option<Device>) {
        self.visit_mut("", &mut |_, t| {
            let requires_grad = t.requires_grad();
            let moved = tch::no_grad(|| {
                let k = kind.unwrap_or(t.kind());
                let d = device.unwrap_or(t.device());
                if k == t.kind() && d == t.device() {
                    t.shallow_clone()
                } else {
                    t.to_device(d).to_kind(k)
                }
            });
            *t = if requires_grad {
                moved.set_requires_grad(true)
            } else {
                moved
            };
        });
    }
    /// The module's floating-point dtype (that of its first parameter).
    fn kind(&self) -> Option<Kind> {
        let mut kind = None;
        self.visit("", &mut |_, t| {
            kind.get_or_insert(t.kind());
        });
        kind
    }
    /// `load_state_dict(sd, strict=True)`: every key must be present, known and of the right
    /// shape; all problems are reported in one error. Values are converted to the module's
    /// dtype and device.
    fn load_state_dict(&mut self, sd: &StateDict) -> Result<()> {
        let report = self.load_state_dict_partial(sd, false)?;
        report.into_strict_result(sd)
    }
    /// `load_state_dict(sd, strict=False)`, extended: loads what matches and returns what it
    /// skipped (missing keys, unexpected keys, shape mismatches). With `strict_shapes`, a shape
    /// mismatch is still an error (PyTorch raises on those even when `strict=False`).
    fn load_state_dict_partial(
        &mut self,
        sd: &StateDict,
        allow_shape_mismatch: bool,
    ) -> Result<LoadReport> {
        let mut report = LoadReport::default();
        let mut seen = std::collections::HashSet::new();
        let mut first_error = None;
        self.visit_mut("", &mut |name, dst| {
            let Some(src) = sd.get(&name) else {
                report.missing_keys.push(name);
                return;
            };
            seen.insert(name.clone());
            if src.size() != dst.size() {
                report.mismatched.push(format!(
                    "size mismatch for {name}: copying a param with shape {:?} from checkpoint, \
                     the shape in current model is {:?}.",
                    src.size(),
                    dst.size()
                ));
                return;
            }
            let copied = tch::no_grad(|| -> Result<()> {
                let v = src.f_to_device(dst.device())?.f_to_kind(dst.kind())?;
                dst.f_copy_(&v)?;
                Ok(())
            });
            match copied {
                Ok(()) => report.loaded.push(name),
                Err(e) => {
                    first_error.get_or_insert(format!("{name}: {e}"));
                }
            }
        });
        if let Some(e) = first_error {
            return Err(Error::StateDict {
                file: sd.source().map(Into::into),
                problems: vec![e],
            });
        }
        report.unexpected_keys = sd.keys().filter(|k| !seen.contains(*k)).cloned().collect();
        if !allow_shape_mismatch && !report.mismatched.is_empty() {
            return Err(Error::StateDict {
                file: sd.source().map(Into::into),
                problems: report.mismatched.clone(),
            });
        }
        Ok(report)
    }
}

impl<M: Module + ?Sized> ModuleExt for M {}

/// What a partial load did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct LoadReport {
    /// Keys copied into the module.
    pub loaded: Vec<String>,
    /// The module's keys the state_dict lacks (PyTorch's `missing_keys`).
    pub missing_keys: Vec<String>,
    /// The state_dict's keys the module lacks (PyTorch's `unexpected_keys`).
    pub unexpected_keys: Vec<String>,
    /// Human-readable lines for keys whose shapes differ (not loaded).
    pub mismatched: Vec<String>,
}

impl LoadReport {
    fn into_strict_result(self, sd: &StateDict) -> Result<()> {
        let mut problems = Vec::new();
        if !self.missing_keys.is_empty() {
            problems.push(format!(
                "Missing key(s) in state_dict: {}.",
                quote_all(&self.missing_keys)
            ));
        }
        if !self.unexpected_keys.is_empty() {
            problems.push(format!(
                "Unexpected key(s) in state_dict: {}.",
                quote_all(&self.unexpected_keys)
            ));
        }
        problems.extend(self.mismatched);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::StateDict {
                file: sd.source().map(Into::into),
                problems,
            })
        }
    }
}

fn quote_all(keys: &[String]) -> String {
    keys.iter()
        .map(|k| format!("\"{k}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Makes a fresh parameter: `requires_grad=True`, like `nn.Parameter(torch.empty(...))`. A
/// negative size or one too large to allocate is an error naming the shape (tch's
/// `Tensor::empty` would panic).
pub(crate) fn new_param(shape: &[i64], kind: Kind, device: Device) -> Result<Tensor> {
    if let Some(d) = shape.iter().find(|&&d| d < 0) {
        return Err(Error::config(format!(
            "parameter of shape {shape:?}: negative dimension {d}"
        )));
    }
    let numel = shape.iter().try_fold(1i64, |n, &d| n.checked_mul(d));
    let t = numel
        .ok_or_else(|| tch::TchError::Shape(String::new()))
        .and_then(|_| Tensor::f_empty(shape, (kind, device)))
        .map_err(|e| {
            let e = e.to_string();
            let first = e.lines().next().unwrap_or("");
            Error::config(format!(
                "parameter of shape {shape:?} ({kind:?} on {device:?}) cannot be allocated{}",
                if first.is_empty() {
                    String::new()
                } else {
                    format!(": {first}")
                }
            ))
        })?;
    Ok(t.set_requires_grad(true))
}

/// `init.uniform_(t, -bound, bound)` without recording it in autograd.
pub(crate) fn uniform_(t: &mut Tensor, bound: f64) {
    tch::no_grad(|| {
        let _ = t.uniform_(-bound, bound);
    });
}

/// `impl Module` for a newtype `struct X(Inner)` by delegating to the inner module.
macro_rules! delegate_module {
    ($name:ty) => {
        impl $crate::nn::module::Module for $name {
            fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &tch::Tensor)) {
                self.0.visit(prefix, f)
            }
            fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(String, &mut tch::Tensor)) {
                self.0.visit_mut(prefix, f)
            }
            fn set_training(&mut self, training: bool) {
                self.0.set_training(training)
            }
            fn is_training(&self) -> bool {
                self.0.is_training()
            }
        }
    };
}
pub(crate) use delegate_module;

/// Implements [`Module`] for a user's own struct of layers, as a `torch.nn.Module` subclass
/// gets it from its attributes: the fields listed, in that order (PyTorch's registration
/// order), become the state_dict prefixes `field.`; `train()`/`eval()` reach every one.
///
/// ```
/// use rnnkit::prelude::*;
/// use tch::{Device, Kind};
///
/// struct Classifier {
///     embed: Embedding,
///     rnn: Lstm,
///     head: Linear,
///     labels: Vec<String>, // not a module: not listed
/// }
/// rnnkit::module!(Classifier { embed, rnn, head });
///
/// # fn main() -> rnnkit::Result<()> {
/// let model = Classifier {
///     embed: Embedding::new(100, 8, None, Kind::Float, Device::Cpu)?,
///     rnn: Lstm::new(RnnConfig::new(8, 16))?,
///     head: Linear::new(16, 2, true, Kind::Float, Device::Cpu)?,
///     labels: vec!["negative".into(), "positive".into()],
/// };
/// let keys: Vec<String> = model.state_dict().keys().cloned().collect();
/// assert_eq!(keys[0], "embed.weight");
/// assert_eq!(keys[1], "rnn.weight_ih_l0");
/// assert_eq!(keys.last().unwrap(), "head.bias");
/// # Ok(()) }
/// ```
#[macro_export]
macro_rules! module {
    ($ty:ident { $($field:ident),+ $(,)? }) => {
        impl $crate::nn::Module for $ty {
            fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &$crate::tch::Tensor)) {
                $( $crate::nn::Module::visit(&self.$field, &format!("{prefix}{}.", stringify!($field)), f); )+
            }
            fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(String, &mut $crate::tch::Tensor)) {
                $( $crate::nn::Module::visit_mut(&mut self.$field, &format!("{prefix}{}.", stringify!($field)), f); )+
            }
            fn set_training(&mut self, training: bool) {
                $( $crate::nn::Module::set_training(&mut self.$field, training); )+
            }
            fn is_training(&self) -> bool {
                false $( || $crate::nn::Module::is_training(&self.$field) )+
            }
        }
    };
}

/// `nn.ModuleList`: element `i`'s parameters are named `i.…`.
impl<M: Module> Module for Vec<M> {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        for (i, m) in self.iter().enumerate() {
            m.visit(&format!("{prefix}{i}."), f);
        }
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(String, &mut Tensor)) {
        for (i, m) in self.iter_mut().enumerate() {
            m.visit_mut(&format!("{prefix}{i}."), f);
        }
    }
    fn set_training(&mut self, training: bool) {
        for m in self {
            m.set_training(training);
        }
    }
    fn is_training(&self) -> bool {
        self.iter().any(Module::is_training)
    }
}
