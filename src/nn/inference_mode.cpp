// c10::InferenceMode as a C ABI for rnnkit: tch exposes no_grad but not inference mode, which
// also skips version counters and autograd bookkeeping (PyTorch's torch.inference_mode()).
#include <ATen/core/Tensor.h>
#include <c10/core/GradMode.h>
#include <c10/core/InferenceMode.h>
#include <omp.h>

#include <algorithm>

extern "C" void* rnnkit_inference_mode_enter() { return new c10::InferenceMode(true); }

extern "C" void rnnkit_inference_mode_exit(void* guard) { delete static_cast<c10::InferenceMode*>(guard); }

extern "C" int rnnkit_grad_enabled() { return c10::GradMode::is_enabled() ? 1 : 0; }

// Runs f(ctx, thread, threads) on up to max_threads threads of libtorch's own OpenMP pool (the
// binary loads libtorch's libgomp.so.1 only, so these are the threads libtorch's kernels use;
// a separate Rust thread would fight them for the cores while they spin-wait between ops).
extern "C" void rnnkit_parallel(void (*f)(void*, int, int), void* ctx, int max_threads) {
  int n = std::min(max_threads, omp_get_max_threads());
  if (n <= 1 || omp_in_parallel()) {
    f(ctx, 0, 1);
    return;
  }
#pragma omp parallel num_threads(n)
  { f(ctx, omp_get_thread_num(), omp_get_num_threads()); }
}

// p.grad = None (what optimizer.zero_grad() does by default since PyTorch 2.0): the next
// backward writes a fresh gradient instead of adding into a zero-filled one. `t` is tch's
// C_tensor, an at::Tensor*.
extern "C" void rnnkit_set_grad_none(at::Tensor* t) { t->mutable_grad().reset(); }
