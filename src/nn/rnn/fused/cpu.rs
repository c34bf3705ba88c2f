//! What the CPU can run: the AVX2+FMA kernels ([`super::avx2`]) and the AVX-512 ones
//! ([`super::avx512`]), detected at run time (cached by `std`).

/// Whether the AVX2+FMA kernels can run on this CPU.
pub(super) fn simd_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Whether the AVX-512 product ([`avx512::step`](super::avx512::step)) can run on this CPU.
pub(super) fn avx512_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}
