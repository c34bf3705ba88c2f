//! `InferenceMode`: PyTorch's `torch.inference_mode()` for rnnkit. Like `tch::no_grad_guard` it
//! turns autograd off; it also skips version-counter bumps and view tracking, which makes the
//! many small ops of GRU/RNN and batch-1 paths cheaper. Tensors created under it cannot be used
//! in autograd later, so it is for pure inference (Predictor, eval, benchmarks).

extern "C" {
    fn rnnkit_inference_mode_enter() -> *mut std::ffi::c_void;
    fn rnnkit_inference_mode_exit(guard: *mut std::ffi::c_void);
}

/// Inference mode is on for this thread while the guard lives (nestable, thread-local).
pub struct InferenceMode(*mut std::ffi::c_void);

impl InferenceMode {
    pub fn enter() -> Self {
        // SAFETY: returns a heap-allocated c10::InferenceMode, released exactly once in Drop.
        Self(unsafe { rnnkit_inference_mode_enter() })
    }
}

impl Drop for InferenceMode {
    fn drop(&mut self) {
        // SAFETY: the pointer came from rnnkit_inference_mode_enter and is dropped once, on the
        // thread that created it (the guard is !Send because of the raw pointer).
        unsafe { rnnkit_inference_mode_exit(self.0) }
    }
}

/// Runs `f` in inference mode.
pub fn inference_mode<T>(f: impl FnOnce() -> T) -> T {
    let _g = InferenceMode::enter();
    f()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind, Tensor};

    #[test]
    fn outputs_need_no_grad_and_match() {
        let w = Tensor::randn([4, 3], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let x = Tensor::randn([2, 3], (Kind::Float, Device::Cpu));
        let y = inference_mode(|| x.matmul(&w.tr()));
        assert!(!y.requires_grad());
        assert!(y.equal(&tch::no_grad(|| x.matmul(&w.tr()))));
    }
}
