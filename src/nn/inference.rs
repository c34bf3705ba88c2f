//! `InferenceMode`: PyTorch's `torch.inference_mode()` for rnnkit. Like `tch::no_grad_guard` it
//! turns autograd off; it also skips version-counter bumps and view tracking, which makes the
//! many small ops of GRU/RNN and batch-1 paths cheaper. Tensors created under it cannot be used
//! in autograd later, so it is for pure inference (Predictor, eval, benchmarks).

extern "C" {
    fn rnnkit_inference_mode_enter() -> *mut std::ffi::c_void;
    fn rnnkit_inference_mode_exit(guard: *mut std::ffi::c_void);
    fn rnnkit_grad_enabled() -> i32;
    fn rnnkit_set_grad_none(t: *mut std::ffi::c_void);
    fn rnnkit_parallel(
        f: extern "C" fn(*mut std::ffi::c_void, i32, i32),
        ctx: *mut std::ffi::c_void,
        max_threads: i32,
    );
}

/// Keeps memory that a forward pass frees in the process, for the next pass to reuse, instead
/// of giving it back to the kernel each time. glibc's defaults serve every buffer of 128 KiB to
/// 32 MiB (input projections, outputs, oneDNN's workspace) with fresh pages, so each pass pays
/// hundreds of page faults (docs/PERFORMANCE.md has what that costs).
/// Here: buffers below 32 MiB come from the heap, and the heap gives back its free top only
/// above 256 MiB. Process-wide; the `rnnkit` binary calls it at start (glibc only, no-op
/// elsewhere).
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator thresholds; called before other threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}

/// `p.grad = None`: drops the gradient, as `optimizer.zero_grad()` (set_to_none=True, PyTorch's
/// default) does, so the next backward assigns a fresh gradient rather than adding into zeros.
pub fn set_grad_none(p: &mut tch::Tensor) {
    // SAFETY: tch's C_tensor is a live at::Tensor* owned by `p`.
    unsafe { rnnkit_set_grad_none(p.as_mut_ptr() as *mut std::ffi::c_void) }
}

/// Runs `f(thread, threads)` once on each of up to `max_threads` threads of libtorch's OpenMP
/// pool (fewer if libtorch is set to fewer threads, 1 inside another parallel region) and
/// returns when all are done. `f` must not panic: a panic aborts the process.
pub fn parallel(max_threads: usize, f: &(dyn Fn(usize, usize) + Sync)) {
    extern "C" fn call(ctx: *mut std::ffi::c_void, thread: i32, threads: i32) {
        // SAFETY: ctx is the `&dyn Fn` passed below, alive until rnnkit_parallel returns.
        let f = unsafe { &*(ctx as *const &(dyn Fn(usize, usize) + Sync)) };
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            f(thread as usize, threads as usize)
        }))
        .is_err()
        {
            std::process::abort();
        }
    }
    let ctx: *const &(dyn Fn(usize, usize) + Sync) = &f;
    // SAFETY: `call` matches the C signature; ctx outlives the call, which joins all threads.
    unsafe { rnnkit_parallel(call, ctx as *mut std::ffi::c_void, max_threads as i32) }
}

/// The barrier the fused kernel's threads cross at every step of a unidirectional layer: one
/// shared counter, each arrival a release/acquire increment, each waiter spinning until every
/// party has arrived `passed` times. Every party crosses the same barriers in the same order.
#[derive(Debug)]
pub struct SpinBarrier {
    arrived: std::sync::atomic::AtomicUsize,
    parties: usize,
}

impl SpinBarrier {
    /// A barrier for `parties` threads.
    pub fn new(parties: usize) -> Self {
        Self {
            arrived: std::sync::atomic::AtomicUsize::new(0),
            parties,
        }
    }

    /// Waits until every party has arrived here as often as this one; `passed` is this thread's
    /// count of crossings so far (start at 0), which the call increments.
    pub fn wait(&self, passed: &mut usize) {
        use std::sync::atomic::Ordering;
        *passed += 1;
        self.arrived.fetch_add(1, Ordering::AcqRel);
        while self.arrived.load(Ordering::Acquire) < self.parties * *passed {
            std::hint::spin_loop();
        }
    }
}

/// Whether autograd records operations on this thread (`torch.is_grad_enabled()`): false under
/// [`InferenceMode`] and `tch::no_grad_guard`.
pub fn grad_enabled() -> bool {
    // SAFETY: reads a thread-local flag.
    unsafe { rnnkit_grad_enabled() != 0 }
}

/// Inference mode is on for this thread while the guard lives (nestable, thread-local).
pub struct InferenceMode(*mut std::ffi::c_void);

impl InferenceMode {
    /// Turns inference mode on for this thread until the guard drops.
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
