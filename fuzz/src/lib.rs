//! rnnkit's checkpoint parsing, compiled without libtorch: the library's own source files,
//! included by path, and `checkpoint` rebuilding the library's module paths over them so their
//! `crate::checkpoint::…` imports resolve unchanged. (Each `#[path]` names a file relative to
//! this directory; a `#[path]` inside an inline module would resolve under `src/checkpoint/`.)
#![allow(dead_code)]

#[path = "../../src/error.rs"]
pub mod error;

#[doc(hidden)]
#[path = "../../src/checkpoint/atomic.rs"]
pub mod atomic;
#[doc(hidden)]
#[path = "../../src/checkpoint/budget.rs"]
pub mod budget;
#[doc(hidden)]
#[path = "../../src/checkpoint/pickle/mod.rs"]
pub mod pickle;
#[doc(hidden)]
#[path = "../../src/checkpoint/pth/read.rs"]
pub mod pth_read;
#[doc(hidden)]
#[path = "../../src/checkpoint/pth/write.rs"]
pub mod pth_write;
#[doc(hidden)]
#[path = "../../src/checkpoint/raw.rs"]
pub mod raw;
#[doc(hidden)]
#[path = "../../src/checkpoint/safetensors/codec.rs"]
pub mod safetensors_codec;

/// The library's `checkpoint` module, as far as parsing goes.
pub mod checkpoint {
    pub use super::{atomic, budget, pickle, raw};
    pub mod pth {
        pub use super::super::pth_read as read;
        pub use super::super::pth_write as write;
    }
    pub mod safetensors {
        pub use super::super::safetensors_codec::*;
    }
}

use checkpoint::pth;

/// The reading budget under fuzzing: the production code path (`budget::materialise_tensor`,
/// the storage tally in `pth::read`), with a maximum that keeps one input well inside
/// libFuzzer's `-rss_limit_mb=2048` (storages and tensors each at most this much, plus the copy
/// the writer makes).
pub const FUZZ_MAX_BYTES: u64 = 64 << 20;

/// The pickle VM's limits for fuzzing: small enough that one input runs in milliseconds.
pub fn limits() -> pickle::Limits {
    pickle::Limits {
        max_ops: 200_000,
        max_stack: 100_000,
        max_memo: 100_000,
        max_objects: 100_000,
        max_container: 100_000,
        max_depth: 256,
        max_visits: 100_000,
        max_name_bytes: 1 << 20,
        max_heap_bytes: 64 << 20,
        heap_per_pickle_byte: 64,
    }
}

/// The read options under fuzzing: the production defaults with [`limits`] and
/// [`FUZZ_MAX_BYTES`].
pub fn read_options() -> budget::ReadOptions {
    budget::ReadOptions {
        limits: limits(),
        max_pickle_bytes: 1 << 20,
        ..budget::ReadOptions::with_max_bytes(FUZZ_MAX_BYTES)
    }
}

/// Loads a whole .pth from bytes and exercises everything downstream of a successful parse:
/// flattening, materialising every tensor within the budget, and writing the tree back.
pub fn exercise_pth(data: &[u8]) {
    let opts = read_options();
    let cursor = std::io::Cursor::new(data);
    if let Ok((value, _)) = pth::read::read(
        cursor,
        data.len() as u64,
        std::path::Path::new("fuzz.pth"),
        &opts,
    ) {
        exercise_value(&value);
    }
}

/// Flattens `value`, materialises every tensor as `rnnkit convert` does (each view charged to
/// one budget before it is gathered: nothing skipped by size), looks a path up, and writes the
/// tree back.
pub fn exercise_value(value: &pickle::Value) {
    let opts = read_options();
    let path = std::path::Path::new("fuzz.pth");
    let limits = &opts.limits;
    if let Ok(tensors) = value.tensors_within(limits.max_visits, limits.max_name_bytes) {
        let mut budget = opts.budget();
        for (name, t) in &tensors {
            if budget::materialise_tensor(name, t, path, &mut budget).is_err() {
                break;
            }
        }
    }
    let _ = value.get_path("a.b.0");
    let mut out = Vec::new();
    let _ = pth::write::write(value, &mut out);
}
