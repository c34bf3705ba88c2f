//! `torch.nn.Dropout(p=0.5)`: in training mode zeroes each element with probability p and
//! scales the rest by 1/(1-p); in eval mode the identity. No parameters.

use crate::error::{Error, Result};
use crate::nn::module::Module;
use tch::Tensor;

/// `nn.Dropout(p)`: zeroes elements with probability `p` and scales the rest by `1/(1-p)` in training; the identity in eval mode.
#[derive(Debug)]
pub struct Dropout {
    /// Probability of an element being zeroed.
    pub p: f64,
    training: bool,
}

impl Dropout {
    /// `nn.Dropout(p)`; `p` must lie in [0, 1].
    pub fn new(p: f64) -> Result<Self> {
        if !(0.0..=1.0).contains(&p) {
            return Err(Error::config(format!(
                "dropout probability has to be between 0 and 1, but got {p}"
            )));
        }
        Ok(Self { p, training: true })
    }

    /// Applies dropout (training) or returns `x` unchanged (eval); any shape.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.training && self.p > 0.0 {
            Ok(x.f_dropout(self.p, true)?)
        } else {
            Ok(x.shallow_clone())
        }
    }
}

impl Module for Dropout {
    fn visit(&self, _: &str, _: &mut dyn FnMut(String, &Tensor)) {}
    fn visit_mut(&mut self, _: &str, _: &mut dyn FnMut(String, &mut Tensor)) {}
    fn set_training(&mut self, training: bool) {
        self.training = training;
    }
    fn is_training(&self) -> bool {
        self.training
    }
}
