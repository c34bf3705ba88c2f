//! W_hh, W_hr and W_ih packed for the AVX-512 tile ([`pack_panels`]) and kept between forward
//! passes ([`PanelCache`]). Per block b of 16 units, per k, per gate q, one 64-byte line:
//! ```text
//! panels[(b·K + k)·gates + q][i] = W[q·U + 16b + i, k]      (0 past the last unit)
//! ```

use super::buffers::slice;
use std::sync::{Arc, Mutex};
use tch::Tensor;

/// Sixteen floats on a cache line's boundary (one AVX-512 vector).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(super) struct Lane(pub(super) [f32; 16]);

/// A weight (gates·U, K) packed for [`avx512::step`] — W_hh (G, H_out), or W_hr (H_out, H)
/// with one "gate": per block of 16 units (the last one padded with zeros), per k, per gate,
/// the 16 units' weights: `panels[(b·K + k)·gates + q].0[i] = w[q·U + 16b + i, k]`.
///
/// [`avx512::step`]: super::avx512::step
pub(super) fn pack_panels(w: &[f32], gates: usize, units: usize, kdim: usize) -> Vec<Lane> {
    let blocks = units.div_ceil(16);
    let mut p = vec![Lane([0.0; 16]); blocks * kdim * gates];
    for q in 0..gates {
        for u in 0..units {
            let row = &w[(q * units + u) * kdim..(q * units + u + 1) * kdim];
            let (b, i) = (u / 16, u % 16);
            for (k, &x) in row.iter().enumerate() {
                p[(b * kdim + k) * gates + q].0[i] = x;
            }
        }
    }
    p
}

/// Packed W_hh (and W_hr; W_ih for rnnkit's own input projection) per layer and direction,
/// kept between forward passes (entry 3·(layer·directions + direction) + 0, 1, 2). An entry
/// is reused while its weight is the same tensor at the same version (in-place updates, such as
/// an optimizer step or `load_state_dict`, bump the version); weights without a version counter
/// (created in inference mode) are packed again on every pass.
#[derive(Default)]
pub struct PanelCache(Mutex<Vec<Option<Packed>>>);

impl std::fmt::Debug for PanelCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.lock().map_or(0, |c| c.iter().flatten().count());
        write!(f, "PanelCache({n} packed)")
    }
}

struct Packed {
    data_ptr: usize,
    version: i64,
    shape: Vec<i64>,
    lanes: Arc<Vec<Lane>>,
}

impl PanelCache {
    /// `w` (gates·units, kdim) packed, from the cache while `w` has not changed.
    pub(super) fn get(
        &self,
        idx: usize,
        w: &Tensor,
        gates: usize,
        units: usize,
        kdim: usize,
    ) -> Arc<Vec<Lane>> {
        let key = (w.data_ptr() as usize, w.f_internal_version().ok(), w.size());
        let mut cache = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let (Some(Some(p)), Some(version)) = (cache.get(idx), key.1) {
            if p.data_ptr == key.0 && p.version == version && p.shape == key.2 {
                return p.lanes.clone();
            }
        }
        let w = w.contiguous();
        // SAFETY: `w` is borrowed for the call and nothing writes a weight during a forward
        // pass (`slice` checks that it is contiguous f32 on the CPU).
        let lanes = Arc::new(pack_panels(unsafe { slice(&w) }, gates, units, kdim));
        if let Some(version) = key.1 {
            if cache.len() <= idx {
                cache.resize_with(idx + 1, || None);
            }
            cache[idx] = Some(Packed {
                data_ptr: key.0,
                version,
                shape: key.2,
                lanes: lanes.clone(),
            });
        }
        lanes
    }
}
