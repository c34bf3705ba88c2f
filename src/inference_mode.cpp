// c10::InferenceMode as a C ABI for rnnkit: tch exposes no_grad but not inference mode, which
// also skips version counters and autograd bookkeeping (PyTorch's torch.inference_mode()).
#include <c10/core/InferenceMode.h>

extern "C" void* rnnkit_inference_mode_enter() { return new c10::InferenceMode(true); }

extern "C" void rnnkit_inference_mode_exit(void* guard) { delete static_cast<c10::InferenceMode*>(guard); }
