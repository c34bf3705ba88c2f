//! Raw access to the kernel's buffers: the batch geometry ([`Geom`]: rows sorted by length,
//! running rows per step), where a step-row's input projections and output are ([`p_row`],
//! [`RowPtrs`]), and the data of the tensors the kernel makes, checked to be f32, contiguous
//! and on the CPU ([`f32_data`], [`slice()`], [`slice_mut()`]). Row `(i, t)` of the (N·L, ·)
//! matrices is `i·L + t` batch-first, else `t·N + i`.

use tch::{Device, Kind, Tensor};

/// Batch geometry shared by every layer: rows sorted by length, running rows per step.
/// `order` is a permutation of 0..n and every `active[t]` ≤ n (as `forward` builds them); the
/// kernels' raw accesses to rows k < `active[t]` rely on it.
pub(super) struct Geom<'a> {
    pub(super) order: &'a [usize],
    pub(super) active: &'a [usize],
    pub(super) batch_first: bool,
    pub(super) n: usize,
    pub(super) l: usize,
}

impl Geom<'_> {
    /// Row of `(sequence i, step t)` in the (N·L, ·) matrices.
    #[inline(always)]
    pub(super) fn row(&self, i: usize, t: usize) -> usize {
        if self.batch_first {
            i * self.l + t
        } else {
            t * self.n + i
        }
    }
}

/// The row of the input projections that step-row `row` reads: `row` itself, or with a token
/// table ([`Input::Table`](super::Input::Table)) `prow[row]`, the row's token id.
///
/// # Safety
///
/// `prow` is null, or points at N·L ids (one per step-row) and `row` < N·L. The ids are
/// checked against the table's rows by `RnnBase::forward_table` and `run_direction`.
#[inline(always)]
pub(super) unsafe fn p_row(prow: *const i64, row: usize) -> usize {
    if prow.is_null() {
        row
    } else {
        // SAFETY: `row` < N·L, the number of ids behind `prow` (caller's contract).
        unsafe { *prow.add(row) as usize }
    }
}

/// The data pointer and element count of one of the kernel's buffers. Panics unless `t` is
/// f32, contiguous and on the CPU: every tensor that reaches here was made by the kernel or
/// made contiguous by it, and [`supported`] checked the dtype and device of its inputs, so a
/// failure is a bug in the kernel, not a user error.
///
/// [`supported`]: super::supported
pub(super) fn f32_data(t: &Tensor) -> (*mut f32, usize) {
    let (kind, device, contiguous) = (t.kind(), t.device(), t.is_contiguous());
    assert!(
        kind == Kind::Float && device == Device::Cpu && contiguous,
        "fused kernel: internal buffer must be a contiguous f32 CPU tensor, got {kind:?} on \
         {device:?} (contiguous: {contiguous})"
    );
    (t.data_ptr() as *mut f32, t.numel())
}

/// `t`'s elements, to read, for as long as `t` is borrowed. Panics unless `t` is f32,
/// contiguous and on the CPU ([`f32_data`]).
///
/// # Safety
///
/// While the slice lives, nothing writes `t`'s storage (libtorch, another tensor that shares
/// it, a raw pointer, a [`slice_mut()`]) and nothing resizes it; its elements have been written
/// (a `Tensor::empty` is not read before it is filled). Any number of threads may read it.
pub(super) unsafe fn slice(t: &Tensor) -> &[f32] {
    let (ptr, len) = f32_data(t);
    if len == 0 {
        return &[];
    }
    // SAFETY: `ptr` starts the `len` contiguous f32 of `t` (checked by `f32_data`); with
    // `len` > 0 it is non-null and f32-aligned, as libtorch's f32 data pointers are. The borrow
    // of `t` keeps the storage alive for the slice's lifetime; the caller rules out writes.
    unsafe { std::slice::from_raw_parts(ptr, len) }
}

/// `t`'s elements, to write, for as long as `t` is borrowed. Panics unless `t` is f32,
/// contiguous and on the CPU ([`f32_data`]).
///
/// # Safety
///
/// While the slice lives, nothing else reads or writes `t`'s storage (libtorch, another tensor
/// that shares it, a raw pointer, another [`slice()`] or [`slice_mut()`] of it) and nothing resizes
/// it; elements of a `Tensor::empty` are written before they are read.
#[allow(clippy::mut_from_ref)]
pub(super) unsafe fn slice_mut(t: &Tensor) -> &mut [f32] {
    let (ptr, len) = f32_data(t);
    if len == 0 {
        return &mut [];
    }
    // SAFETY: as in `slice`; the caller guarantees this is the only access to the storage
    // while the slice lives.
    unsafe { std::slice::from_raw_parts_mut(ptr, len) }
}

/// Where running row k's input projections (a G-wide row) and output (at this direction's
/// column) are at step t.
pub(super) struct RowPtrs<'a> {
    pub(super) g: &'a Geom<'a>,
    pub(super) t: usize,
    pub(super) p: *const f32,
    pub(super) prow: *const i64,
    pub(super) gsz: usize,
    pub(super) out: *mut f32,
    pub(super) out_width: usize,
    pub(super) col: usize,
}

impl RowPtrs<'_> {
    /// Running row `k`'s input projections and output row, at this direction's column.
    ///
    /// # Safety
    ///
    /// `k` is a running row at step `t`; the pointers are those of a job whose buffers are
    /// alive (`SmallBatch::run`'s contract), so both results lie inside their buffers.
    #[inline(always)]
    pub(super) unsafe fn at(&self, k: usize) -> (*const f32, *mut f32) {
        let row = self.g.row(self.g.order[k], self.t);
        // SAFETY: step-row `row` < N·L: its row of `p` (`p_row`: the row, or its checked token
        // id) and its output row, at column `col` < `out_width`, are inside their buffers.
        unsafe {
            (
                self.p.add(p_row(self.prow, row) * self.gsz),
                self.out.add(row * self.out_width + self.col),
            )
        }
    }
}
