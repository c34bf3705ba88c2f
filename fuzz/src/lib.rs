//! rnnkit's file readers, compiled from ../src without libtorch (see tch-stub).
#![allow(dead_code)]

#[path = "../../src/error.rs"]
pub mod error;
#[path = "../../src/io.rs"]
pub mod io;
#[path = "../../src/pickle.rs"]
pub mod pickle;
#[path = "../../src/raw.rs"]
pub mod raw;
#[path = "../../src/safetensors.rs"]
pub mod safetensors;
#[path = "../../src/state_dict.rs"]
pub mod state_dict;

#[path = "../../src/pth/read.rs"]
pub mod pth_read;
#[path = "../../src/pth/write.rs"]
pub mod pth_write;

pub mod pth {
    pub use super::pth_read as read;
    pub use super::pth_write as write;
}

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
    if let Ok((value, _)) = pth::read::read(cursor, data.len() as u64, std::path::Path::new("fuzz.pth"), &opts) {
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
