//! The pickle VM on arbitrary bytes as data.pkl (zip and legacy persistent ids), with every
//! referenced storage given zero bytes of the right length, then everything downstream.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rnnkit_fuzz::checkpoint::pickle::{parse, PidFormat};

fuzz_target!(|data: &[u8]| {
    let limits = rnnkit_fuzz::limits();
    for format in [PidFormat::Zip, PidFormat::Legacy] {
        let mut r = data;
        if let Ok(p) = parse(&mut r, data.len() as u64, format, &limits) {
            if p.storages().iter().map(|s| s.nbytes).sum::<usize>() > (1 << 20) {
                continue;
            }
            let bytes = p.storages().iter().map(|s| vec![0x5a; s.nbytes]).collect();
            if let Ok(v) = p.into_value(bytes) {
                rnnkit_fuzz::exercise_value(&v);
            }
        }
    }
});
