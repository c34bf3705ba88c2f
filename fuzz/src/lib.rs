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
    pub use super::{atomic, pickle, raw};
    pub mod pth {
        pub use super::super::pth_read as read;
        pub use super::super::pth_write as write;
    }
    pub mod safetensors {
        pub use super::super::safetensors_codec::*;
    }
}

use checkpoint::pth;

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
    }
}

/// Loads a whole .pth from bytes and exercises everything downstream of a successful parse:
/// flattening, materialising every tensor, and writing the tree back.
pub fn exercise_pth(data: &[u8]) {
    let opts = pth::read::ReadOptions {
        limits: limits(),
        verify_crc: true,
        max_pickle_bytes: 1 << 20,
        max_total_bytes: 64 << 20,
    };
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

pub fn exercise_value(value: &pickle::Value) {
    if let Ok(tensors) = value.tensors(100_000) {
        for (_, t) in tensors.iter().take(1000) {
            if t.numel() < (1 << 22) {
                let _ = t.to_raw();
            }
        }
    }
    let _ = value.get_path("a.b.0");
    let mut out = Vec::new();
    let _ = pth::write::write(value, &mut out);
}
