//! Machine probes behind `rnnkit bench`'s limit kinds: what the cores can do with no model in
//! the way, measured on the threads of libtorch's pool that the fused kernel runs on.
//!
//! ```text
//! fma        twelve independent vector multiply-add chains per thread, registers only:
//!            2 · 12 · lanes FLOPs per round                       → the arithmetic peak
//! bandwidth  a working set of N bytes, each thread reading its own N / threads bytes (as the
//!            kernel's threads read their halves of W_hh every step), vector loads summed into
//!            eight accumulators, `passes` times                     → bytes/s from that level
//!                                                                     of the cache (or memory)
//! barrier    two threads crossing the kernel's own SpinBarrier N times → seconds per step
//!            that synchronisation alone costs
//! ```
//! Each needs AVX2 (and FMA) or AVX-512 on x86_64 (the barrier runs anywhere with 2 threads);
//! elsewhere a clear error, and the benchmark goes without that column.

use rnnkit::error::{Error, Result};
use std::sync::atomic::{AtomicUsize, Ordering};

/// `iters` rounds of twelve independent vector multiply-adds on each of up to `threads`
/// threads of libtorch's pool; returns the floating-point operations done.
pub fn fma_peak(iters: usize, threads: usize) -> Result<f64> {
    #[cfg(target_arch = "x86_64")]
    {
        let avx512 = std::arch::is_x86_feature_detected!("avx512f");
        let avx2 = std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma");
        if !(avx512 || avx2) {
            return Err(Error::invalid(
                "bench kind \"fma\" needs AVX2 and FMA or AVX-512",
            ));
        }
        let lanes = if avx512 { 16 } else { 8 };
        let ran = AtomicUsize::new(0);
        rnnkit::nn::inference::parallel(threads, &|_, _| {
            ran.fetch_add(1, Ordering::Relaxed);
            // SAFETY: the features were detected above.
            let r = unsafe {
                if avx512 {
                    fma_avx512(iters)
                } else {
                    fma_avx2(iters)
                }
            };
            std::hint::black_box(r);
        });
        Ok(2.0 * 12.0 * (lanes * iters * ran.load(Ordering::Relaxed)) as f64)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (iters, threads);
        Err(Error::invalid("bench kind \"fma\" runs on x86_64 only"))
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fma_avx512(iters: usize) -> f32 {
    use std::arch::x86_64::*;
    let (x, y) = (_mm512_set1_ps(0.999_9), _mm512_set1_ps(1e-5));
    let mut acc: [__m512; 12] = std::array::from_fn(|i| _mm512_set1_ps(i as f32 * 1e-3));
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = _mm512_fmadd_ps(*a, x, y);
        }
    }
    acc.iter().map(|&a| _mm512_reduce_add_ps(a)).sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_avx2(iters: usize) -> f32 {
    use std::arch::x86_64::*;
    let (x, y) = (_mm256_set1_ps(0.999_9), _mm256_set1_ps(1e-5));
    let mut acc: [__m256; 12] = std::array::from_fn(|i| _mm256_set1_ps(i as f32 * 1e-3));
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = _mm256_fmadd_ps(*a, x, y);
        }
    }
    let mut out = [0f32; 8];
    let s = acc
        .iter()
        .fold(_mm256_setzero_ps(), |s, &a| _mm256_add_ps(s, a));
    _mm256_storeu_ps(out.as_mut_ptr(), s);
    out.iter().sum()
}

/// Per-thread buffers holding a working set of `bytes` (rounded up to 512 bytes per thread)
/// for up to `threads` threads; [`bandwidth`] reads them.
pub struct Buffers(Vec<Vec<f32>>);

impl Buffers {
    /// `threads` buffers of `bytes / threads` bytes each (at least one 512-byte block).
    pub fn new(bytes: usize, threads: usize) -> Self {
        let threads = threads.max(1);
        let floats = (bytes / threads).div_ceil(512).max(1) * 128;
        Self(
            (0..threads)
                .map(|t| vec![t as f32 * 1e-3 + 1.0; floats])
                .collect(),
        )
    }
    /// The working set in bytes.
    pub fn bytes(&self) -> usize {
        self.0.iter().map(|b| b.len() * 4).sum()
    }
}

/// Reads every thread's buffer `passes` times on libtorch's pool (thread k its own buffer; a
/// pool of fewer threads reads the others' too, in turn); returns the bytes read.
pub fn bandwidth(buffers: &Buffers, passes: usize) -> Result<f64> {
    #[cfg(target_arch = "x86_64")]
    {
        let avx512 = std::arch::is_x86_feature_detected!("avx512f");
        let avx2 = std::arch::is_x86_feature_detected!("avx2");
        if !(avx512 || avx2) {
            return Err(Error::invalid(
                "bench kind \"bandwidth\" needs AVX2 or AVX-512",
            ));
        }
        let n = buffers.0.len();
        rnnkit::nn::inference::parallel(n, &|thread, threads| {
            for b in (thread..n).step_by(threads) {
                // SAFETY: the features were detected above; the buffer's length is a multiple
                // of 128 floats.
                let r = unsafe {
                    if avx512 {
                        read_avx512(&buffers.0[b], passes)
                    } else {
                        read_avx2(&buffers.0[b], passes)
                    }
                };
                std::hint::black_box(r);
            }
        });
        Ok((buffers.bytes() * passes) as f64)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (buffers, passes);
        Err(Error::invalid(
            "bench kind \"bandwidth\" runs on x86_64 only",
        ))
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn read_avx512(buf: &[f32], passes: usize) -> f32 {
    use std::arch::x86_64::*;
    let mut acc: [__m512; 8] = [_mm512_setzero_ps(); 8];
    for _ in 0..passes {
        for block in buf.chunks_exact(128) {
            for (k, a) in acc.iter_mut().enumerate() {
                *a = _mm512_add_ps(*a, _mm512_loadu_ps(block.as_ptr().add(16 * k)));
            }
        }
    }
    acc.iter().map(|&a| _mm512_reduce_add_ps(a)).sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn read_avx2(buf: &[f32], passes: usize) -> f32 {
    use std::arch::x86_64::*;
    let mut acc: [__m256; 8] = [_mm256_setzero_ps(); 8];
    for _ in 0..passes {
        for block in buf.chunks_exact(64) {
            for (k, a) in acc.iter_mut().enumerate() {
                *a = _mm256_add_ps(*a, _mm256_loadu_ps(block.as_ptr().add(8 * k)));
            }
        }
    }
    let mut out = [0f32; 8];
    let s = acc
        .iter()
        .fold(_mm256_setzero_ps(), |s, &a| _mm256_add_ps(s, a));
    _mm256_storeu_ps(out.as_mut_ptr(), s);
    out.iter().sum()
}

/// Two threads of libtorch's pool cross one [`rnnkit::nn::inference::SpinBarrier`]
/// `crossings` times, doing nothing else; an error where the pool gives fewer than two.
pub fn barrier(crossings: usize) -> Result<()> {
    let team = rnnkit::nn::inference::SpinBarrier::new(2);
    let alone = AtomicUsize::new(0);
    rnnkit::nn::inference::parallel(2, &|_, threads| {
        if threads < 2 {
            alone.store(1, Ordering::Relaxed);
            return;
        }
        let mut passed = 0;
        for _ in 0..crossings {
            team.wait(&mut passed);
        }
    });
    if alone.load(Ordering::Relaxed) == 1 {
        return Err(Error::invalid(
            "bench kind \"barrier\" needs two threads (--threads 2 or more)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The peak's FLOP count: 2 · 12 chains · lanes · rounds, for each thread that ran.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn fma_peak_counts_every_thread() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            println!("skipped: no AVX2 on this CPU");
            return;
        }
        let lanes = if std::arch::is_x86_feature_detected!("avx512f") {
            16.0
        } else {
            8.0
        };
        assert_eq!(fma_peak(1000, 1).unwrap(), 2.0 * 12.0 * lanes * 1000.0);
    }

    /// The bytes read: the working set (each thread's share rounded up to 512 bytes) × passes.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn bandwidth_counts_the_working_set_every_pass() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            println!("skipped: no AVX2 on this CPU");
            return;
        }
        let b = Buffers::new(1000, 2);
        assert_eq!(b.bytes(), 2 * 512);
        assert_eq!(bandwidth(&b, 3).unwrap(), 3.0 * 1024.0);
        assert_eq!(Buffers::new(1 << 20, 2).bytes(), 1 << 20);
    }
}
