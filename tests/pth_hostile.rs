//! Hostile and broken input: truncated at every length, a byte flipped at every position,
//! crafted pickles and containers, and the inputs the fuzzer found (fuzz/). The reader must
//! return an error naming the file — never panic, hang, or allocate what the file does not hold.

use rnnkit::checkpoint::{budget, pth};
use std::io::Cursor;
use std::path::{Path, PathBuf};

fn golden_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/pth");
    assert!(
        dir.join("cases.json").exists(),
        "run `.venv/bin/python scripts/make_pth_cases.py tests/golden/pth` first"
    );
    dir
}

fn load_bytes(bytes: &[u8]) -> rnnkit::Result<pth::Value> {
    let r = std::panic::catch_unwind(|| {
        pth::read::read(
            Cursor::new(bytes),
            bytes.len() as u64,
            Path::new("hostile.pth"),
            &pth::ReadOptions::default(),
        )
    });
    match r {
        Ok(r) => r.map(|(v, _)| v),
        Err(_) => panic!(
            "reader panicked on {} bytes starting {:02x?}",
            bytes.len(),
            &bytes[..bytes.len().min(16)]
        ),
    }
}

/// Materialises every tensor as the readers do: each charged to one reading budget with the
/// production default ([`ReadOptions::default`]) before it is allocated. Returns how many were.
fn materialise_all(
    ts: Vec<(String, std::sync::Arc<rnnkit::checkpoint::pickle::Tensor>)>,
    path: &Path,
) -> usize {
    let mut budget = pth::ReadOptions::default().budget();
    ts.iter()
        .filter(|(name, t)| budget::materialise_tensor(name, t, path, &mut budget).is_ok())
        .count()
}

/// Loads and then uses the result as a caller would: flatten, materialise, write back.
fn exercise(bytes: &[u8]) -> Result<(), String> {
    let v = load_bytes(bytes).map_err(|e| e.to_string())?;
    if let Ok(ts) = v.tensors(100_000) {
        materialise_all(ts, Path::new("<memory>"));
    }
    let mut out = Vec::new();
    let _ = pth::write::write(&v, &mut out);
    Ok(())
}

fn small_golden_files() -> Vec<(String, Vec<u8>)> {
    let dir = golden_dir();
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "pth"))
        .filter_map(|p| {
            let b = std::fs::read(&p).ok()?;
            (b.len() < 16_000).then(|| (p.file_name().unwrap().to_string_lossy().into_owned(), b))
        })
        .collect();
    files.sort();
    assert!(files.len() > 20);
    files
}

#[test]
fn truncated_files_are_errors_that_name_the_file() {
    for (name, bytes) in small_golden_files() {
        for n in 0..bytes.len() {
            match load_bytes(&bytes[..n]) {
                Ok(_) => panic!("{name} truncated to {n} of {} bytes loaded", bytes.len()),
                Err(e) => {
                    let msg = e.to_string();
                    assert!(msg.contains("hostile.pth"), "{name}[..{n}]: {msg}");
                }
            }
        }
    }
}

#[test]
fn flipped_bytes_never_panic() {
    for (name, bytes) in small_golden_files() {
        let step = (bytes.len() / 300).max(1);
        for i in (0..bytes.len()).step_by(step) {
            for mask in [0x01u8, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[i] ^= mask;
                let r = std::panic::catch_unwind(|| exercise(&b));
                assert!(
                    r.is_ok(),
                    "{name}: flipping byte {i} with {mask:#x} panicked"
                );
            }
        }
    }
}

#[test]
fn reading_a_file_that_does_not_exist_names_it() {
    let e = pth::load("/nonexistent/x.pth").unwrap_err().to_string();
    assert!(e.contains("/nonexistent/x.pth"), "{e}");
}

/// A minimal torch-style zip around `pkl` (and optional extra records), for crafted cases.
fn zip_with(pkl: &[u8], extra: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip_writer::Zip::default();
    w.add("archive/data.pkl", pkl);
    for (n, d) in extra {
        w.add(n, d);
    }
    w.add("archive/version", b"3\n");
    w.finish()
}

mod zip_writer {
    /// Stored entries, no alignment: enough for crafted test archives.
    #[derive(Default)]
    pub struct Zip {
        out: Vec<u8>,
        cd: Vec<u8>,
        n: u16,
    }
    impl Zip {
        pub fn add(&mut self, name: &str, data: &[u8]) {
            let off = self.out.len() as u32;
            let crc = crc32(data);
            let mut h = vec![0x50, 0x4b, 3, 4, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            h.extend(crc.to_le_bytes());
            h.extend((data.len() as u32).to_le_bytes());
            h.extend((data.len() as u32).to_le_bytes());
            h.extend((name.len() as u16).to_le_bytes());
            h.extend(0u16.to_le_bytes());
            h.extend(name.as_bytes());
            self.out.extend(h);
            self.out.extend(data);
            let mut c = vec![0x50, 0x4b, 1, 2, 20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            c.extend(crc.to_le_bytes());
            c.extend((data.len() as u32).to_le_bytes());
            c.extend((data.len() as u32).to_le_bytes());
            c.extend((name.len() as u16).to_le_bytes());
            c.extend([0u8; 12]);
            c.extend(off.to_le_bytes());
            c.extend(name.as_bytes());
            self.cd.extend(c);
            self.n += 1;
        }
        pub fn finish(mut self) -> Vec<u8> {
            let cd_off = self.out.len() as u32;
            let cd_len = self.cd.len() as u32;
            self.out.extend(&self.cd);
            self.out.extend([0x50, 0x4b, 5, 6, 0, 0, 0, 0]);
            self.out.extend(self.n.to_le_bytes());
            self.out.extend(self.n.to_le_bytes());
            self.out.extend(cd_len.to_le_bytes());
            self.out.extend(cd_off.to_le_bytes());
            self.out.extend([0, 0]);
            self.out
        }
    }
    fn crc32(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in data {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
}

#[test]
fn crafted_pickles_are_refused_with_reasons() {
    let cases: &[(&[u8], &str)] = &[
        // A string claiming 2 GiB in a tiny file: refused before allocating.
        (b"\x80\x02X\xff\xff\xff\x7f", "truncated"),
        // A storage pid claiming 2^62 float32s (2^64 bytes): refused before reading.
        (
            b"\x80\x02(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpu\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x40tQ.",
            "overflow",
        ),
        // Unbalanced MARK / TUPLE.
        (b"\x80\x02t.", "MARK"),
        // BINGET of a memo key never put.
        (b"\x80\x02h\x05.", "memo key 5"),
        // APPEND to a tuple.
        (b"\x80\x02)K\x01a.", "Can only append to lists"),
        // Dict keyed by a list (unhashable).
        (b"\x80\x02}]K\x01s.", "unhashable"),
        // GLOBAL of a non-allowlisted torch function.
        (b"\x80\x02ctorch\nload\n.", "torch.load"),
        // NEWOBJ of an allowlisted class rnnkit does not construct.
        (b"\x80\x02ctorch\nFloatTensor\n)\x81.", "FloatTensor"),
        // Lone surrogate in a string.
        (b"\x80\x02X\x03\x00\x00\x00\xed\xa0\x80.", "surrogate"),
        // STOP on an empty stack.
        (b"\x80\x02.", "stack underflow"),
    ];
    for (pkl, want) in cases {
        let z = zip_with(pkl, &[]);
        let e = load_bytes(&z).unwrap_err().to_string();
        assert!(e.contains(want) && e.contains("hostile.pth"), "{want}: {e}");
    }
}

#[test]
fn crafted_containers_are_refused_with_reasons() {
    let ok = b"\x80\x02}.";
    assert!(load_bytes(&zip_with(ok, &[])).is_ok());
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            zip_with(ok, &[("archive/constants.pkl", b"x")]),
            "TorchScript",
        ),
        (zip_with(ok, &[("other/x", b"x")]), "not in a subdirectory"),
        (zip_with(ok, &[("archive/../x", b"x")]), ".."),
        (zip_with(ok, &[("archive/version", b"4\n")]), "duplicate"),
        (
            zip_with(ok, &[("archive/byteorder", b"LITTLE")]),
            "endianness",
        ),
        (
            zip_with(ok, &[("archive/.data/version", b"0\n")]),
            "version",
        ),
        (
            b"PK\x03\x04 definitely not a zip".to_vec(),
            "truncated or corrupt zip",
        ),
        (
            b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.\x80\x02M\xe8\x03.".to_vec(),
            "protocol version",
        ),
    ];
    for (bytes, want) in cases {
        let e = load_bytes(&bytes).unwrap_err().to_string();
        assert!(e.contains(want), "{want}: {e}");
    }
}

/// Set in the child process that replays one file (`replay_one_fuzz_regression`).
const REPLAY_VAR: &str = "RNNKIT_FUZZ_REPLAY";

/// The hostile inputs in tests/fuzz_regressions/ (everything but its README and the script that
/// wrote them); fails if the directory is missing or holds none, or if the README does not
/// describe each one.
fn fuzz_regression_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions");
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; the fuzz regression corpus is committed, restore it from git",
            dir.display()
        )
    });
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name != "README.md" && name != "make_corpus.py"
        })
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "{} holds no inputs; the fuzz regression corpus is committed, restore it from git",
        dir.display()
    );
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy();
        assert!(
            readme.contains(&format!("`{name}`")),
            "{name} is not described in {}/README.md",
            dir.display()
        );
    }
    files
}

/// What happened to one file in one reader: `Ok`, or the error's first line.
fn outcome<T, E: std::fmt::Display>(r: &Result<T, E>) -> String {
    match r {
        Ok(_) => "Ok".into(),
        Err(e) => format!("Err({})", e.to_string().lines().next().unwrap_or("")),
    }
}

/// Every reader and every use of its result on one file. A panic anywhere propagates.
fn replay(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let log = |what: &str, o: String| println!("{name}: {what}: {o}");
    // The .pth reader from a path: load, flatten, materialise; as a state_dict (tch tensors);
    // through the format sniffing of checkpoint::load_state_dict.
    let loaded = pth::load_with(path, &pth::ReadOptions::default());
    log("pth::load_with", outcome(&loaded));
    if let Ok((v, _)) = loaded {
        let flat = pth::flatten(&v, path);
        drop(v);
        log("pth::flatten", outcome(&flat));
        if let Ok(ts) = flat {
            log("pth::materialise", outcome(&pth::materialise(ts, path)));
        }
    }
    log(
        "pth::load_state_dict",
        outcome(&pth::load_state_dict(path, None)),
    );
    log(
        "checkpoint::load_state_dict",
        outcome(&rnnkit::checkpoint::load_state_dict(path, None)),
    );
    // The in-memory reader, then flatten, materialise and write back (`exercise`).
    log("pth::read::read + write", outcome(&exercise(&bytes)));
    // The raw bytes as data.pkl, both persistent-id formats, with storages of zeros (at most
    // 16 MiB each).
    for format in [
        rnnkit::checkpoint::pickle::PidFormat::Zip,
        rnnkit::checkpoint::pickle::PidFormat::Legacy,
    ] {
        let mut r = &bytes[..];
        let o = match rnnkit::checkpoint::pickle::parse(
            &mut r,
            bytes.len() as u64,
            format,
            &Default::default(),
        ) {
            Ok(p) => {
                let data = p
                    .storages()
                    .iter()
                    .map(|s| vec![0u8; s.nbytes.min(1 << 24)])
                    .collect();
                match p.into_value(data) {
                    Ok(v) => match v.tensors(100_000) {
                        Ok(ts) => {
                            let n = ts.len();
                            format!(
                                "Ok ({n} tensors, {} materialised)",
                                materialise_all(ts, path)
                            )
                        }
                        Err(e) => format!("Ok, flatten Err({})", e),
                    },
                    Err(e) => format!("parsed, into_value Err({})", e),
                }
            }
            Err(e) => format!("Err({})", e),
        };
        log(&format!("pickle::parse {format:?}"), o);
    }
    // The safetensors reader: tensors, metadata, a state_dict of tch tensors.
    log(
        "safetensors::read",
        outcome(&rnnkit::checkpoint::safetensors::read(path)),
    );
    log(
        "safetensors::read_metadata",
        outcome(&rnnkit::checkpoint::safetensors::read_metadata(path)),
    );
    log(
        "safetensors::load_state_dict",
        outcome(&rnnkit::checkpoint::safetensors::load_state_dict(path)),
    );
}

/// Inputs the fuzzer (fuzz/) found, and hand-made hostile files (tests/fuzz_regressions/README.md):
/// each is replayed in a child process of its own, so that an abort or a stack overflow fails
/// this test naming the file instead of killing the test binary.
#[test]
fn fuzz_regressions() {
    let files = fuzz_regression_files();
    let exe = std::env::current_exe().unwrap();
    let (mut failures, mut replayed) = (Vec::new(), 0);
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let mut child = std::process::Command::new(&exe)
            .args([
                "replay_one_fuzz_regression",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(REPLAY_VAR, path)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pipe = |r: Option<Box<dyn std::io::Read + Send>>| {
            std::thread::spawn(move || {
                let mut s = String::new();
                if let Some(mut r) = r {
                    let _ = r.read_to_string(&mut s);
                }
                s
            })
        };
        let out = pipe(child.stdout.take().map(|r| Box::new(r) as _));
        let err = pipe(child.stderr.take().map(|r| Box::new(r) as _));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break Some(st);
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let (out, err) = (out.join().unwrap(), err.join().unwrap());
        for line in out.lines().filter(|l| l.starts_with(&format!("{name}: "))) {
            println!("{line}");
        }
        let done = format!("replayed without panic: {name}");
        match status {
            None => failures.push(format!("{name}: still running after 120 s (killed)")),
            Some(st) if !st.success() || !out.contains(&done) => failures.push(format!(
                "{name}: the replay {} \n--- stderr ---\n{}",
                if st.success() {
                    "did not finish".to_string()
                } else {
                    format!("died: {st}")
                },
                err.lines()
                    .rev()
                    .take(15)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n")
            )),
            Some(_) => replayed += 1,
        }
    }
    println!(
        "fuzz regressions: {} files, {replayed} replayed cleanly, {} failed",
        files.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(replayed, files.len());
}

/// The child of `fuzz_regressions`: replays the file named by RNNKIT_FUZZ_REPLAY. Run by hand
/// (`--ignored`) without it, it replays every file in-process.
#[test]
#[ignore = "run by fuzz_regressions, one child process per file"]
fn replay_one_fuzz_regression() {
    let files: Vec<PathBuf> = match std::env::var_os(REPLAY_VAR) {
        Some(p) => vec![PathBuf::from(p)],
        None => fuzz_regression_files(),
    };
    for path in files {
        replay(&path);
        println!(
            "replayed without panic: {}",
            path.file_name().unwrap().to_string_lossy()
        );
    }
}
