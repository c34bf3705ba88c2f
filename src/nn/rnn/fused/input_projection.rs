//! rnnkit's own input projection `P = X W_ihᵀ`, (N·L, G) for X (N·L, I), on the AVX-512 tile
//! of the per-unit path ([`super::avx512`]), and the switch that chooses it over libtorch's
//! sgemm ([`own_input_gemm`], [`force_input_projection`]); the same product as a linear layer
//! with W packed once ([`PackedLinear`], a seq2seq model's output layer when fused).

use super::cpu::avx512_available;
#[cfg(target_arch = "x86_64")]
use super::{avx512, buffers::f32_data, panels::Lane};
use crate::error::Result;
use crate::nn::rnn::config::Mode;
use std::sync::atomic::{AtomicU8, Ordering};
use tch::{Device, Kind, Tensor};

/// Whether [`input_projection`] computes the layers' input projections instead of libtorch's
/// sgemm: LSTM and GRU (one gate's tile is too narrow) on AVX-512 CPUs from AMD, where MKL
/// runs its generic code path and the per-unit product's tile is faster (docs/PERFORMANCE.md).
/// On Intel CPUs MKL runs its own AVX-512 kernels: they keep MKL's.
pub(super) fn own_input_gemm(mode: Mode) -> bool {
    let allowed = mode.gates() > 1 && avx512_available();
    match FORCE_INPUT_GEMM.load(Ordering::Relaxed) {
        1 => false,
        2 => allowed,
        _ => allowed && amd(),
    }
}

/// 0: [`own_input_gemm`] decides; 1: never; 2: wherever it can run.
static FORCE_INPUT_GEMM: AtomicU8 = AtomicU8::new(0);

/// For tests: `Some(true)` computes the input projections with [`input_projection`] wherever
/// it can run (every AVX-512 CPU, not only AMD's), `Some(false)` never, `None` as chosen by
/// the CPU (the default).
#[doc(hidden)]
pub fn force_input_projection(on: Option<bool>) {
    let v = match on {
        None => 0,
        Some(false) => 1,
        Some(true) => 2,
    };
    FORCE_INPUT_GEMM.store(v, Ordering::Relaxed);
}

/// Whether the CPU's vendor string is AMD's.
fn amd() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AMD: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AMD.get_or_init(|| {
            // SAFETY: cpuid leaf 0 exists on every x86_64 CPU.
            #[allow(unused_unsafe)]
            let r = unsafe { std::arch::x86_64::__cpuid(0) };
            // "AuthenticAMD" in ebx, edx, ecx.
            (r.ebx, r.edx, r.ecx) == (0x6874_7541, 0x6974_6e65, 0x444d_4163)
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `x W_ihᵀ`, (rows, G), for `x` (rows, I) contiguous, with W_ih packed by [`pack_panels`]:
/// the cell step's products ([`avx512::step`]) without the cell update, every gate's result
/// stored. The threads split the 16-unit blocks; each runs over `x` in slices of a few
/// hundred KiB (its core's L2 holds one, with a block's panel and the next, prefetched).
/// `ranges` (sorted, disjoint `[start, end)`): only those rows are computed, the others are
/// left unwritten (a padded batch's padding, which the recurrence never reads); None: all.
/// A row's result does not depend on which rows are computed with it.
///
/// [`pack_panels`]: super::panels::pack_panels
#[cfg(target_arch = "x86_64")]
pub(super) fn input_projection(
    mode: Mode,
    x: &Tensor,
    panels: &[Lane],
    hh: usize,
    ranges: Option<&[(usize, usize)]>,
) -> Result<Tensor> {
    let x = x.contiguous();
    let (rows, kdim) = (x.size()[0] as usize, x.size()[1] as usize);
    let gates = mode.gates() as usize;
    let gsz = gates * hh;
    let out = Tensor::empty([rows as i64, gsz as i64], (Kind::Float, Device::Cpu));
    let blocks = hh.div_ceil(16);
    assert!(
        avx512_available(),
        "fused kernel: input projection without AVX-512F"
    );
    assert!(panels.len() >= blocks * kdim * gates);
    // Rows per slice: a multiple of 24 (whole chunks of 6 and of 8 rows), about 192 KiB.
    let slice_rows = ((48 << 10) / kdim.max(1)).max(24) / 24 * 24;
    let all = [(0, rows)];
    let ranges = ranges.unwrap_or(&all);
    assert!(
        ranges.iter().all(|&(a, b)| a <= b && b <= rows),
        "fused kernel: input projection row ranges outside {rows} rows"
    );
    // As integers, so that the closure below is `Sync`.
    let (xp, op) = (f32_data(&x).0 as usize, f32_data(&out).0 as usize);
    let threads = (tch::get_num_threads().max(1) as usize).min(blocks);
    crate::nn::inference::parallel(threads, &|thread, team| {
        let (b0, b1) = (blocks * thread / team, blocks * (thread + 1) / team);
        if b0 == b1 {
            return;
        }
        let (u0, u1) = (16 * b0, (16 * b1).min(hh));
        let slices = ranges.iter().flat_map(|&(start, end)| {
            (start..end)
                .step_by(slice_rows)
                .map(move |r0| (r0, slice_rows.min(end - r0)))
        });
        for (r0, a) in slices {
            let state = avx512::State {
                mode,
                project: true,
                gates,
                hh,
                kdim,
                u0,
                width: u1 - u0,
                // SAFETY: row r0 < rows of the contiguous (rows, kdim) input.
                x: unsafe { (xp as *const f32).add(r0 * kdim) },
                // SAFETY: row r0 < rows of the contiguous (rows, gsz) output.
                dst: unsafe { (op as *mut f32).add(r0 * gsz) },
                dst_stride: gsz,
                write_out: false,
                c: std::ptr::null_mut(),
                b: std::ptr::null(),
            };
            // SAFETY: the CPU has AVX-512F (asserted above). The a ≤ rows - r0
            // rows of `x` from r0 are only read; of `out` this thread writes units u0..u1 of
            // every gate in those rows, and the threads' unit ranges are disjoint; both
            // tensors live until the parallel region has joined. The packed blocks from b0
            // cover units u0..u1 (`step` checks their number).
            unsafe { avx512::step(&state, a, &panels[b0 * kdim * gates..], None) };
        }
    });
    Ok(out)
}

/// `y = x Wᵀ + b` for inference (f32 on the CPU, autograd off) on the AVX-512 tile of the
/// fused kernel's input projection, with W `(out, K)` packed once when made: an output layer's product
/// without libtorch's per-call packing of W. W's rows are read as 4 "gates" of
/// U = ⌈out/4⌉ units (zero rows pad the last), the 6-row × 64-column tile of an LSTM's gates.
/// Rows sum over k in order, one FMA chain per element: a row's result does not depend on the
/// other rows, but differs from libtorch's sgemm in the rounding (summation order). It is a
/// snapshot of W and b: make it again after changing them.
pub struct PackedLinear {
    #[cfg(target_arch = "x86_64")]
    panels: Vec<Lane>,
    units: usize,
    kdim: usize,
    out: usize,
    bias: Option<Tensor>,
}

impl std::fmt::Debug for PackedLinear {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackedLinear({} × {})", self.out, self.kdim)
    }
}

impl PackedLinear {
    /// W `(out, K)` and b `(out,)` packed; `None` where the tile cannot run (no AVX-512F, not
    /// f32, not on the CPU).
    pub fn new(weight: &Tensor, bias: Option<&Tensor>) -> Result<Option<Self>> {
        #[cfg(target_arch = "x86_64")]
        {
            let cpu_f32 = |t: &Tensor| t.kind() == Kind::Float && t.device() == Device::Cpu;
            if !avx512_available()
                || weight.dim() != 2
                || !cpu_f32(weight)
                || !bias.is_none_or(cpu_f32)
            {
                return Ok(None);
            }
            let (out, kdim) = (weight.size()[0] as usize, weight.size()[1] as usize);
            if let Some(b) = bias {
                if b.size() != [out as i64] {
                    return Err(crate::error::Error::shape(
                        "linear bias",
                        format!("({out},)"),
                        &b.size(),
                    ));
                }
            }
            let units = out.div_ceil(4);
            let w = weight.detach().contiguous();
            let padded = w.f_constant_pad_nd([0, 0, 0, (4 * units - out) as i64])?;
            // SAFETY: `padded` is a contiguous f32 CPU tensor alive for the call.
            let data = unsafe { super::buffers::slice(&padded) };
            Ok(Some(Self {
                panels: super::panels::pack_panels(data, 4, units, kdim),
                units,
                kdim,
                out,
                bias: bias.map(|b| b.detach().copy()),
            }))
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (weight, bias);
            Ok(None)
        }
    }

    /// `x Wᵀ + b`, `(N, out)` for `x` `(N, K)` f32 on the CPU.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let s = x.size();
        if s.len() != 2 || s[1] as usize != self.kdim || x.kind() != Kind::Float {
            return Err(crate::error::Error::shape(
                "packed linear input",
                format!("(N, {}) f32", self.kdim),
                &s,
            ));
        }
        #[cfg(target_arch = "x86_64")]
        {
            let x = x.to_device(Device::Cpu);
            let y = input_projection(Mode::Lstm, &x, &self.panels, self.units, None)?;
            let mut y = if 4 * self.units == self.out {
                y
            } else {
                y.f_narrow(1, 0, self.out as i64)?.f_contiguous()?
            };
            Ok(match &self.bias {
                Some(b) => y.f_add_(b)?,
                None => y,
            })
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("PackedLinear is only made on x86_64")
    }
}
