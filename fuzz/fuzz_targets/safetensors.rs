//! The safetensors reader on arbitrary bytes (it reads from a path, so via a file in /dev/shm).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = if std::path::Path::new("/dev/shm").is_dir() {
        "/dev/shm"
    } else {
        "/tmp"
    };
    let path = std::path::PathBuf::from(format!(
        "{dir}/rnnkit-fuzz-{}.safetensors",
        std::process::id()
    ));
    if std::fs::write(&path, data).is_ok() {
        let _ = rnnkit_fuzz::checkpoint::safetensors::read(&path);
        let _ = rnnkit_fuzz::checkpoint::safetensors::read_metadata(&path);
    }
});
