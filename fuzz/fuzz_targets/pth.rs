//! Whole .pth files from arbitrary bytes: sniffing, the zip container, the legacy format, the
//! pickle VM, tensor materialisation and writing back.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rnnkit_fuzz::exercise_pth(data);
});
