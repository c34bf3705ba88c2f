//! The reading budget and the other bounds on what a small file can make rnnkit allocate or do
//! (docs/FORMATS.md "Limits"). The four hostile files of issue 22 and a few more run through the
//! real `rnnkit convert` binary, which must exit with status 1 (not an abort or a signal), say
//! what failed, finish within seconds and stay under 600 MiB of peak RSS; the library
//! (`StateDict::load`) must return an error. Then each bound of `ReadOptions` is crossed on its
//! own, with limits lowered so the files stay small.
//!
//! `--nocapture` prints, per hostile file, the exit status, the time, the peak RSS and the
//! message.

use rnnkit::checkpoint::pickle::{Dict, DictKind, Storage, Tensor, Value};
use rnnkit::checkpoint::{pth, ReadOptions};
use rnnkit::error::Error;
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
/// Peak RSS a refusal may take (libtorch's own footprint included).
const MAX_RSS: u64 = 600 * MIB;
/// Wall time a refusal may take, libtorch's start included.
const MAX_SECS: f64 = 5.0;

/// This test's own temporary directory (tests run in parallel threads named after them).
fn test_dir() -> PathBuf {
    let test = std::thread::current()
        .name()
        .unwrap_or("main")
        .replace("::", "-");
    std::env::temp_dir().join(format!("rnnkit-budget-{}-{test}", std::process::id()))
}

fn tmp(name: &str) -> PathBuf {
    let dir = test_dir();
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Removes the test's directory when the test ends (passing or not).
struct Cleanup;
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(test_dir());
    }
}

// ---------------------------------------------------------------------------------------------
// Running the binary under watch
// ---------------------------------------------------------------------------------------------

/// How a run of `rnnkit` ended.
struct Outcome {
    code: Option<i32>,
    signal: Option<i32>,
    stderr: String,
    secs: f64,
    /// Peak resident set of the rnnkit process itself.
    peak: u64,
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0)
}

/// The process to watch: `pid` itself, or its child when `pid` is `/usr/bin/time`.
fn watched(pid: u32, via_time: bool) -> Option<u32> {
    if !via_time {
        return Some(pid);
    }
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Runs `rnnkit ARGS` and reports its exit, time and peak RSS, killing it past 60 s or 2 GiB
/// (so a regression fails the test instead of taking the machine down).
///
/// The peak comes from `/usr/bin/time -f %M` where it is installed (wait4 on a process that
/// forked from the small `time`), else from the child's VmHWM polled every millisecond. (The
/// test's own rusage of a child is no good: a child spawned from this large process starts its
/// high-water mark at ours.)
fn rnnkit(args: &[&std::ffi::OsStr]) -> Outcome {
    let time = Path::new("/usr/bin/time");
    let via_time = time.exists();
    let report =
        tmp(&format!("time-{:?}.txt", std::thread::current().id()).replace(['(', ')'], ""));
    let mut cmd = if via_time {
        let mut c = Command::new(time);
        c.args(["-f", "%M %x", "-o"])
            .arg(&report)
            .arg(env!("CARGO_BIN_EXE_rnnkit"));
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_rnnkit"))
    };
    let start = Instant::now();
    let mut child = cmd
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let mut hwm_kib = 0;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if let Some(pid) = watched(child.id(), via_time) {
            hwm_kib = hwm_kib.max(status_kib(pid, "VmHWM:"));
            if start.elapsed() > Duration::from_secs(60) || status_kib(pid, "VmRSS:") > 2 << 20 {
                // SAFETY: signalling a process we started (or its child), not yet reaped.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let secs = start.elapsed().as_secs_f64();
    let mut stderr = reader.join().unwrap();
    use std::os::unix::process::ExitStatusExt;
    let (mut code, mut signal) = (status.code(), status.signal());
    if via_time {
        // time's own status mirrors the command's; its report has the peak, and says so when
        // the command was killed by a signal.
        let text = std::fs::read_to_string(&report).unwrap_or_default();
        for line in text.lines() {
            if let Some(n) = line.strip_prefix("Command terminated by signal ") {
                signal = n.trim().parse().ok();
                code = None;
            }
        }
        if let Some(last) = text.lines().last() {
            let mut it = last.split_whitespace();
            hwm_kib = it.next().and_then(|m| m.parse().ok()).unwrap_or(hwm_kib);
        }
        stderr = stderr
            .lines()
            .filter(|l| !l.starts_with("Command exited with non-zero status"))
            .collect::<Vec<_>>()
            .join("\n");
    }
    Outcome {
        code,
        signal,
        stderr,
        secs,
        peak: hwm_kib * 1024,
    }
}

/// The peak RSS of `rnnkit --version`: what loading libtorch alone takes (about 500 MiB with a
/// CUDA build of libtorch), for comparison.
fn baseline() -> u64 {
    static B: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *B.get_or_init(|| rnnkit(&["--version".as_ref()]).peak)
}

/// `rnnkit convert IN OUT [EXTRA]` must be refused cleanly: exit status 1, every `want`
/// fragment in the message, within [`MAX_SECS`] and [`MAX_RSS`], and no output file.
fn refused(case: &str, input: &Path, extra: &[&str], want: &[&str]) -> Outcome {
    let out = tmp(&format!("{case}.out.safetensors"));
    let mut args: Vec<&std::ffi::OsStr> =
        vec!["convert".as_ref(), input.as_os_str(), out.as_os_str()];
    args.extend(extra.iter().map(|a| std::ffi::OsStr::new(*a)));
    let o = rnnkit(&args);
    let msg = o.stderr.trim().to_string();
    println!(
        "{case}: {} bytes in; exit {:?} signal {:?}; {:.2} s; peak RSS {} MiB (rnnkit --version: {} MiB); {msg}",
        std::fs::metadata(input).map_or(0, |m| m.len()),
        o.code,
        o.signal,
        o.secs,
        o.peak / MIB,
        baseline() / MIB
    );
    assert_eq!(
        o.signal, None,
        "{case}: killed by signal {:?}: {msg}",
        o.signal
    );
    assert_eq!(o.code, Some(1), "{case}: exit status {:?}: {msg}", o.code);
    for w in want {
        assert!(msg.contains(w), "{case}: message lacks {w:?}: {msg}");
    }
    assert!(o.secs < MAX_SECS, "{case}: took {:.1} s", o.secs);
    assert!(o.peak < MAX_RSS, "{case}: peak RSS {} MiB", o.peak / MIB);
    assert!(!out.exists(), "{case}: wrote {}", out.display());
    o
}

// ---------------------------------------------------------------------------------------------
// Building files by hand
// ---------------------------------------------------------------------------------------------

/// One zip entry: name, compression method (0 stored, 8 deflated), the bytes as stored, and the
/// uncompressed size and CRC-32 the headers declare.
struct Entry<'a> {
    name: &'a str,
    method: u16,
    data: &'a [u8],
    size: u32,
    crc: u32,
}

impl<'a> Entry<'a> {
    fn stored(name: &'a str, data: &'a [u8]) -> Self {
        Entry {
            name,
            method: 0,
            data,
            size: data.len() as u32,
            crc: crc32fast::hash(data),
        }
    }
}

/// A zip archive of `entries` (no zip64: every size fits 32 bits).
fn zip(entries: &[Entry]) -> Vec<u8> {
    let (mut out, mut cd) = (Vec::new(), Vec::new());
    for e in entries {
        let off = out.len() as u32;
        let mut h = vec![0x50, 0x4b, 3, 4, 20, 0, 0, 0];
        h.extend(e.method.to_le_bytes());
        h.extend([0, 0, 0, 0]);
        h.extend(e.crc.to_le_bytes());
        h.extend((e.data.len() as u32).to_le_bytes());
        h.extend(e.size.to_le_bytes());
        h.extend((e.name.len() as u16).to_le_bytes());
        h.extend(0u16.to_le_bytes());
        h.extend(e.name.as_bytes());
        out.extend(h);
        out.extend(e.data);
        let mut c = vec![0x50, 0x4b, 1, 2, 20, 0, 20, 0, 0, 0];
        c.extend(e.method.to_le_bytes());
        c.extend([0, 0, 0, 0]);
        c.extend(e.crc.to_le_bytes());
        c.extend((e.data.len() as u32).to_le_bytes());
        c.extend(e.size.to_le_bytes());
        c.extend((e.name.len() as u16).to_le_bytes());
        c.extend([0u8; 12]);
        c.extend(off.to_le_bytes());
        c.extend(e.name.as_bytes());
        cd.extend(c);
    }
    let (cd_off, cd_len, n) = (out.len() as u32, cd.len() as u32, entries.len() as u16);
    out.extend(&cd);
    out.extend([0x50, 0x4b, 5, 6, 0, 0, 0, 0]);
    out.extend(n.to_le_bytes());
    out.extend(n.to_le_bytes());
    out.extend(cd_len.to_le_bytes());
    out.extend(cd_off.to_le_bytes());
    out.extend([0, 0]);
    out
}

/// A torch-style archive: `data.pkl`, the `data/<key>` records given, `version`.
fn archive(pkl: &[u8], records: &[(&str, &[u8])]) -> Vec<u8> {
    let names: Vec<String> = records
        .iter()
        .map(|(k, _)| format!("archive/data/{k}"))
        .collect();
    let mut entries = vec![Entry::stored("archive/data.pkl", pkl)];
    for ((_, d), n) in records.iter().zip(&names) {
        entries.push(Entry::stored(n, d));
    }
    entries.push(Entry::stored("archive/version", b"3\n"));
    zip(&entries)
}

fn unicode(s: &str) -> Vec<u8> {
    let mut v = vec![b'X'];
    v.extend((s.len() as u32).to_le_bytes());
    v.extend(s.as_bytes());
    v
}

/// An int opcode (BININT1, BININT2 or LONG1).
fn int(i: u64) -> Vec<u8> {
    if i < 256 {
        vec![b'K', i as u8]
    } else if i < 65536 {
        let mut v = vec![b'M'];
        v.extend((i as u16).to_le_bytes());
        v
    } else {
        let mut v = vec![0x8a, 9];
        v.extend(i.to_le_bytes());
        v.push(0);
        v
    }
}

/// `_rebuild_tensor_v2(('storage', torch.<class>, key, 'cpu', numel), 0, shape, stride, False,
/// OrderedDict())`: the REDUCE that leaves one tensor on the stack.
fn tensor_op(class: &str, key: &str, numel: u64, shape: &[u64], stride: &[u64]) -> Vec<u8> {
    let mut p = b"ctorch._utils\n_rebuild_tensor_v2\n((".to_vec();
    p.extend(unicode("storage"));
    p.extend(format!("ctorch\n{class}\n").as_bytes());
    p.extend(unicode(key));
    p.extend(unicode("cpu"));
    p.extend(int(numel));
    p.extend(b"tQ");
    p.extend(int(0));
    for v in [shape, stride] {
        p.push(b'(');
        for &x in v {
            p.extend(int(x));
        }
        p.push(b't');
    }
    p.extend(
        b"\x89ccollections\nOrderedDict\n)Rt R"
            .iter()
            .filter(|b| **b != b' '),
    );
    p
}

/// `{name: tensor}` as a whole pickle.
fn dict_of_tensor(name: &str, tensor: &[u8]) -> Vec<u8> {
    let mut p = b"\x80\x02}".to_vec();
    p.extend(unicode(name));
    p.extend(tensor);
    p.extend(b"s.");
    p
}

fn write(name: &str, bytes: &[u8]) -> PathBuf {
    let p = tmp(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn python() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    p.exists().then_some(p)
}

/// Issue 22's file: `torch.save({"e": torch.zeros(1).expand(2**24, 2**24)})`, 1.3 KB on disk,
/// 1 PiB materialised. Written by torch when `.venv` has it, else by rnnkit's own writer (the
/// same pickle: one 4-byte storage viewed with strides (0, 0)).
fn expand_file(name: &str, n: u64) -> PathBuf {
    let path = tmp(name);
    if let Some(py) = python() {
        let ok = Command::new(py)
            .args([
                "-c",
                "import sys, torch; n = int(sys.argv[2]); torch.save({'e': torch.zeros(1).expand(n, n)}, sys.argv[1])",
            ])
            .arg(&path)
            .arg(n.to_string())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok {
            return path;
        }
    }
    let storage = Arc::new(Storage {
        key: "0".into(),
        dtype: rnnkit::checkpoint::raw::DType::F32,
        untyped: false,
        location: "cpu".into(),
        data: vec![0; 4],
    });
    let t = Tensor {
        storage,
        dtype: rnnkit::checkpoint::raw::DType::F32,
        offset: 0,
        shape: vec![n as i64, n as i64],
        stride: vec![0, 0],
        requires_grad: false,
        parameter: false,
        neg: false,
        conj: false,
    };
    let mut d = Dict::new(DictKind::Dict);
    d.entries
        .push((Value::Str("e".into()), Value::Tensor(Arc::new(t))));
    pth::save(&path, &Value::Dict(Arc::new(d))).unwrap();
    path
}

/// A raw deflate stream of `chunks` × 1,000,000 zero bytes: one compressed chunk (full flush,
/// so it is byte-aligned and refers to nothing before it) repeated, then a final empty block.
/// 4,000 chunks (4 GB inflated) take about 4 MB and no time to build.
fn zeros_deflated(chunks: usize) -> Vec<u8> {
    use flate2::{Compress, Compression, FlushCompress};
    let mut c = Compress::new(Compression::best(), false);
    let mut chunk = Vec::with_capacity(1 << 16);
    c.compress_vec(&vec![0u8; 1_000_000], &mut chunk, FlushCompress::Full)
        .unwrap();
    assert_eq!(
        c.total_in(),
        1_000_000,
        "one call compresses the whole chunk"
    );
    let mut last = Vec::with_capacity(64);
    Compress::new(Compression::best(), false)
        .compress_vec(&[], &mut last, FlushCompress::Finish)
        .unwrap();
    let mut out = Vec::with_capacity(chunk.len() * chunks + last.len());
    for _ in 0..chunks {
        out.extend_from_slice(&chunk);
    }
    out.extend_from_slice(&last);
    out
}

// ---------------------------------------------------------------------------------------------
// The hostile files, through the binary and the library
// ---------------------------------------------------------------------------------------------

#[test]
fn a_stride_0_expand_of_a_petabyte_is_refused_by_the_budget() {
    let _cleanup = Cleanup;
    let path = expand_file("expand.pth", 1 << 24);
    assert!(std::fs::metadata(&path).unwrap().len() < 4096);
    refused(
        "1 stride-0 expand (1 PiB)",
        &path,
        &[],
        &[
            "expand.pth",
            "tensor \"e\"",
            "1125899906842624 bytes",
            "budget",
            "--max-bytes",
        ],
    );
    let e = rnnkit::StateDict::load(&path).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Budget {
                bytes: 1125899906842624,
                ..
            }
        ),
        "{e}"
    );
    // Raising the budget past what the system can give is still an error, not an abort.
    refused(
        "1b stride-0 expand with --max-bytes 2P",
        &path,
        &["--max-bytes", "2P"],
        &["expand.pth", "tensor \"e\"", "cannot allocate"],
    );
    // inspect never materialises: it describes the view.
    let o = rnnkit(&["inspect".as_ref(), path.as_os_str()]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(
        o.peak < MAX_RSS && o.secs < MAX_SECS,
        "inspect: {:.1} s, {} MiB",
        o.secs,
        o.peak / MIB
    );
}

#[test]
fn max_bytes_raises_and_lowers_the_budget() {
    let _cleanup = Cleanup;
    // 1000 × 1000 float32 from one element: 4 MB materialised.
    let path = expand_file("expand_small.pth", 1000);
    refused(
        "expand of 4 MB with --max-bytes 1M",
        &path,
        &["--max-bytes", "1M"],
        &["tensor \"e\"", "3.8 MiB (4000000 bytes)", "1 MiB in all"],
    );
    let out = tmp("expand_small.safetensors");
    let o = rnnkit(&[
        "convert".as_ref(),
        path.as_os_str(),
        out.as_os_str(),
        "--max-bytes".as_ref(),
        "4000000".as_ref(),
    ]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let st = rnnkit::checkpoint::safetensors::read(&out).unwrap();
    assert_eq!(st.tensors[0].1.shape, [1000, 1000]);
    assert!(st.tensors[0].1.data.iter().all(|&b| b == 0));
    let o = rnnkit(&[
        "convert".as_ref(),
        path.as_os_str(),
        out.as_os_str(),
        "--max-bytes".as_ref(),
        "lots".as_ref(),
    ]);
    assert_eq!(o.code, Some(2), "a bad size is a usage error: {}", o.stderr);
    assert!(o.stderr.contains("--max-bytes"), "{}", o.stderr);
    // The library: StateDict::load_with.
    let e = rnnkit::StateDict::load_with(&path, &ReadOptions::with_max_bytes(MIB)).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Budget {
                bytes: 4_000_000,
                max: MIB,
                ..
            }
        ),
        "{e}"
    );
    let sd = rnnkit::StateDict::load_with(&path, &ReadOptions::with_max_bytes(4_000_000)).unwrap();
    assert_eq!(sd.require("e").unwrap().size(), [1000, 1000]);
}

/// A 4 GB deflate stream (about 4 MB of file) behind a storage that declares 6 float32s.
#[test]
fn a_deflate_bomb_never_inflates_past_its_storage() {
    let _cleanup = Cleanup;
    let pkl = dict_of_tensor("w", &tensor_op("FloatStorage", "0", 6, &[6], &[1]));
    let bomb = zeros_deflated(4000);
    let with = |size: u32| {
        zip(&[
            Entry::stored("archive/data.pkl", &pkl),
            Entry {
                name: "archive/data/0",
                method: 8,
                data: &bomb,
                size,
                crc: 0,
            },
            Entry::stored("archive/version", b"3\n"),
        ])
    };
    // The central directory tells the truth (4,000,000,000 bytes): refused before inflating.
    let honest = write("bomb_honest.pth", &with(4_000_000_000));
    refused(
        "2a deflate bomb, 4 GB declared",
        &honest,
        &[],
        &["bomb_honest.pth", "data/0", "4000000000 bytes", "needs 24"],
    );
    // The central directory says 24 bytes: inflating stops at 25.
    let lying = write("bomb_lying.pth", &with(24));
    refused(
        "2b deflate bomb, 24 bytes declared",
        &lying,
        &[],
        &["bomb_lying.pth", "data/0", "inflates past the 24 bytes"],
    );
    for p in [&honest, &lying] {
        assert!(rnnkit::StateDict::load(p).is_err());
    }
    // A storage that declares the 4 GB is charged to the budget before a byte is inflated.
    let pkl = dict_of_tensor(
        "w",
        &tensor_op("FloatStorage", "0", 1_000_000_000, &[1_000_000_000], &[1]),
    );
    let big = write(
        "bomb_big_storage.pth",
        &zip(&[
            Entry::stored("archive/data.pkl", &pkl),
            Entry {
                name: "archive/data/0",
                method: 8,
                data: &bomb,
                size: 4_000_000_000,
                crc: 0,
            },
            Entry::stored("archive/version", b"3\n"),
        ]),
    );
    refused(
        "2c 4 GB deflated storage, --max-bytes 1G",
        &big,
        &["--max-bytes", "1G"],
        &["storage \"0\"", "4000000000 bytes", "budget"],
    );
}

#[test]
fn deep_nesting_is_refused() {
    let _cleanup = Cleanup;
    // 100,000 nested lists: ] × n, then APPEND × (n − 1).
    let n = 100_000;
    let mut pkl = b"\x80\x02".to_vec();
    pkl.extend(std::iter::repeat_n(b']', n));
    pkl.extend(std::iter::repeat_n(b'a', n - 1));
    pkl.push(b'.');
    let path = write("nested_lists.pth", &archive(&pkl, &[]));
    refused(
        "3 100k nested lists",
        &path,
        &[],
        &["nested_lists.pth", "nested deeper than 256"],
    );
    assert!(rnnkit::StateDict::load(&path).is_err());
    // 100,000 nested tuples as a dict key: hashing the key recurses, and stops at the limit.
    let mut pkl = b"\x80\x02}".to_vec();
    pkl.extend(std::iter::repeat_n(b'(', n));
    pkl.push(b')');
    pkl.extend(std::iter::repeat_n(b't', n));
    pkl.extend(b"K\x01s.");
    let path = write("nested_key.pth", &archive(&pkl, &[]));
    refused(
        "3b 100k nested tuples as a key",
        &path,
        &[],
        &["nested_key.pth", "nested deeper than 256"],
    );
}

#[test]
fn a_safetensors_header_claiming_petabytes_is_refused() {
    let _cleanup = Cleanup;
    let header = |h: &str, len: Option<u64>| {
        let mut b = len.unwrap_or(h.len() as u64).to_le_bytes().to_vec();
        b.extend(h.as_bytes());
        b
    };
    // Shape × dtype far beyond the file: 2^50 bytes claimed, 8 held.
    let mut b = header(
        r#"{"w":{"dtype":"F32","shape":[1048576,1048576,256],"data_offsets":[0,1125899906842624]}}"#,
        None,
    );
    b.extend([0u8; 8]);
    let path = write("petabytes.safetensors", &b);
    refused(
        "4 safetensors claiming 1 PiB",
        &path,
        &[],
        &[
            "petabytes.safetensors",
            "tensor \"w\"",
            "1125899906842624",
            "only 8 bytes",
        ],
    );
    assert!(rnnkit::StateDict::load(&path).is_err());
    // A header length beyond the file.
    let path = write(
        "header_length.safetensors",
        &header(r#"{"w":{}}"#, Some(1 << 50)),
    );
    refused(
        "4b safetensors header length 2^50",
        &path,
        &[],
        &["header_length.safetensors", "exceeds"],
    );
    // A real (sparse) 20 GiB file: larger than the default budget, refused having read only the
    // header; inspect reads only the header.
    let h = r#"{"w":{"dtype":"U8","shape":[21474836480],"data_offsets":[0,21474836480]}}"#;
    let path = write("sparse_20g.safetensors", &header(h, None));
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(8 + h.len() as u64 + (20 << 30)).unwrap();
    drop(f);
    refused(
        "4c sparse 20 GiB safetensors",
        &path,
        &[],
        &["sparse_20g.safetensors", "tensor \"w\"", "20 GiB", "budget"],
    );
    let o = rnnkit(&["inspect".as_ref(), path.as_os_str()]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(
        o.peak < MAX_RSS && o.secs < MAX_SECS,
        "inspect: {:.1} s, {} MiB",
        o.secs,
        o.peak / MIB
    );
    let e = rnnkit::StateDict::load(&path).unwrap_err();
    assert!(matches!(e, Error::Budget { .. }), "{e}");
    std::fs::remove_file(&path).unwrap();
}

/// Small files whose pickle asks the VM or the flattening for far more than the file holds.
#[test]
fn amplifying_pickles_are_refused_in_bounded_memory() {
    let _cleanup = Cleanup;
    // Names: a 64 KiB key repeated through 250 levels of nesting is a 16 MiB name; a list of
    // 1024 references to that sub-tree asks for 16 GiB of names (64 MiB are allowed). d0 = {K: tensor}, then
    // d(i+1) = {K: d(i)} through memo 1; every level stays on the stack (no POP is allowed).
    let key = "k".repeat(64 << 10);
    let mut pkl = b"\x80\x02".to_vec();
    pkl.extend(unicode(&key));
    pkl.extend(b"q\x00}h\x00");
    pkl.extend(tensor_op("FloatStorage", "0", 1, &[], &[]));
    pkl.extend(b"sq\x01");
    for _ in 0..250 {
        pkl.extend(b"}h\x00h\x01sq\x01");
    }
    pkl.push(b']');
    for _ in 0..1024 {
        pkl.extend(b"h\x01a");
    }
    pkl.push(b'.');
    let path = write("long_names.pth", &archive(&pkl, &[("0", &[0; 4])]));
    refused(
        "5 long names x shared sub-tree",
        &path,
        &[],
        &["long_names.pth", "names"],
    );

    // Copies: OrderedDict(d) of a 10,000-entry dict, 20,000 times, each kept in a list: 200
    // million dict entries (some 25 GB) from a 160 KB file.
    let mut pkl = b"\x80\x02}q\x00(".to_vec();
    for i in 0..10_000u64 {
        pkl.extend(int(i));
        pkl.push(b'N');
    }
    pkl.extend(b"uccollections\nOrderedDict\nq\x01]");
    for _ in 0..20_000 {
        pkl.extend(b"h\x01h\x00\x85Ra");
    }
    pkl.push(b'.');
    let path = write("dict_copies.pth", &archive(&pkl, &[]));
    refused(
        "6 OrderedDict(d) x 20k",
        &path,
        &[],
        &["dict_copies.pth", "working memory"],
    );

    // Hashing: a tuple of 2^60 leaves through shared halves, used as a dict key.
    let mut pkl = b"\x80\x02K\x01\x85q\x00".to_vec();
    for i in 0..60u8 {
        pkl.extend([b'h', i, b'h', i, 0x86, b'q', i + 1]);
    }
    pkl.extend(b"}h\x3cK\x01s.");
    let path = write("key_bomb.pth", &archive(&pkl, &[]));
    refused(
        "7 2^60-leaf tuple as a key",
        &path,
        &[],
        &["key_bomb.pth", "dict key"],
    );
}

/// Shapes of thousands of 1s, long BUILD states, many storages, lying zip and legacy headers:
/// each costs time or memory in proportion to the file, not more.
#[test]
fn large_claims_cost_what_the_file_holds() {
    let _cleanup = Cleanup;
    let t = Instant::now();
    // A tensor of rank 100,001 (100,000 ones, then 1000) materialises in linear time.
    let mut shape = vec![1u64; 100_000];
    shape.push(1000);
    let mut stride = vec![0u64; 100_000];
    stride.push(1);
    let pkl = dict_of_tensor("w", &tensor_op("ByteStorage", "0", 1000, &shape, &stride));
    let path = write("rank.pth", &archive(&pkl, &[("0", &[7; 1000])]));
    let ts = pth::load_tensors(&path, None).unwrap();
    assert_eq!(ts[0].1.data, [7; 1000]);
    // BUILD with 200,000 distinct attributes: linear, not quadratic.
    let mut pkl = b"\x80\x02ccollections\nOrderedDict\n)R}(".to_vec();
    for i in 0..200_000 {
        pkl.extend(unicode(&format!("a{i}")));
        pkl.push(b'N');
    }
    pkl.extend(b"ub.");
    assert!(read_with(&archive(&pkl, &[]), &ReadOptions::default()).is_ok());
    // 100,000 storages, no records: refused at the first missing one.
    let mut pkl = b"\x80\x02]".to_vec();
    for i in 0..100_000 {
        pkl.extend(tensor_op("FloatStorage", &i.to_string(), 1, &[], &[]));
        pkl.push(b'a');
    }
    pkl.push(b'.');
    let e = read_with(&archive(&pkl, &[]), &ReadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("record data/0 is missing"), "{e}");
    // An end-of-central-directory record that claims 60,000 entries in a 200-byte file.
    let mut z = archive(b"\x80\x02}.", &[]);
    let n = z.len();
    z[n - 14..n - 10].copy_from_slice(&[0x60, 0xea, 0x60, 0xea]);
    let e = read_with(&z, &ReadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("zip"), "{e}");
    // A legacy file whose storage claims 2^40 float32s: refused by the budget before anything
    // is read, and with no budget, by the file's length before allocating them.
    let mut legacy =
        b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.\x80\x02M\xe9\x03.\x80\x02}."
            .to_vec();
    let mut obj = b"\x80\x02}".to_vec();
    obj.extend(unicode("w"));
    obj.extend(b"ctorch._utils\n_rebuild_tensor_v2\n((");
    obj.extend(unicode("storage"));
    obj.extend(b"ctorch\nFloatStorage\n");
    obj.extend(unicode("1"));
    obj.extend(unicode("cpu"));
    obj.extend(int(1 << 40));
    obj.extend(b"NtQK\x00(K\x01tK\x01\x85\x89ccollections\nOrderedDict\n)RtRs.");
    legacy.extend(obj);
    legacy.extend(b"\x80\x02]X\x01\x00\x00\x001a.");
    legacy.extend((1u64 << 40).to_le_bytes());
    legacy.extend([0u8; 16]);
    let e = read_with(&legacy, &ReadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("storage \"1\" (legacy data") && e.contains("4 TiB"),
        "{e}"
    );
    let e = read_with(&legacy, &ReadOptions::with_max_bytes(u64::MAX))
        .unwrap_err()
        .to_string();
    assert!(e.contains("legacy") && e.contains("truncated"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
}

/// Writing a tree back never materialises a view either: a neg-bit view is resolved over its
/// storage (4 bytes here), not over its petabyte of elements.
#[test]
fn writing_a_huge_negated_view_copies_its_storage_not_the_view() {
    let _cleanup = Cleanup;
    let storage = Arc::new(Storage {
        key: "0".into(),
        dtype: rnnkit::checkpoint::raw::DType::F32,
        untyped: false,
        location: "cpu".into(),
        data: 1.5f32.to_le_bytes().to_vec(),
    });
    let t = Tensor {
        storage,
        dtype: rnnkit::checkpoint::raw::DType::F32,
        offset: 0,
        shape: vec![1 << 24, 1 << 24],
        stride: vec![0, 0],
        requires_grad: false,
        parameter: false,
        neg: true,
        conj: false,
    };
    let mut d = Dict::new(DictKind::Dict);
    d.entries
        .push((Value::Str("e".into()), Value::Tensor(Arc::new(t))));
    let mut out = Vec::new();
    pth::write::write(&Value::Dict(Arc::new(d)), &mut out).unwrap();
    let back = read_with(&out, &ReadOptions::default()).unwrap();
    let t = back.get_path("e").and_then(Value::as_tensor).unwrap();
    assert!(!t.neg);
    assert_eq!(
        (&t.shape[..], &t.stride[..]),
        (&[1i64 << 24, 1 << 24][..], &[0i64, 0][..])
    );
    assert_eq!(t.storage.data, (-1.5f32).to_le_bytes());
}

// ---------------------------------------------------------------------------------------------
// Each bound of ReadOptions, crossed with small limits
// ---------------------------------------------------------------------------------------------

fn read_with(bytes: &[u8], opts: &ReadOptions) -> rnnkit::Result<Value> {
    pth::read::read(
        Cursor::new(bytes),
        bytes.len() as u64,
        Path::new("bound.pth"),
        opts,
    )
    .map(|(v, _)| v)
}

/// Reads, flattens and materialises `bytes` within `opts`; the error must contain `want`.
fn refuse(bytes: &[u8], opts: &ReadOptions, want: &str) {
    let start = Instant::now();
    let path = Path::new("bound.pth");
    let e = read_with(bytes, opts)
        .and_then(|v| {
            let ts = pth::flatten_with(&v, path, &opts.limits)?;
            pth::materialise_within(ts, path, &mut opts.budget())
        })
        .unwrap_err()
        .to_string();
    assert!(e.contains(want) && e.contains("bound.pth"), "{want}: {e}");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{want}: {:?}",
        start.elapsed()
    );
}

fn small() -> ReadOptions {
    let mut o = ReadOptions::default();
    o.limits.max_ops = 10_000;
    o.limits.max_stack = 1000;
    o.limits.max_memo = 1000;
    o.limits.max_objects = 1000;
    o.limits.max_container = 1000;
    o.limits.max_depth = 16;
    o.limits.max_visits = 1000;
    o.limits.max_name_bytes = 10_000;
    o.max_pickle_bytes = 100_000;
    o.max_bytes = 1000;
    o
}

fn pickle_of(ops: &[u8]) -> Vec<u8> {
    let mut p = b"\x80\x02".to_vec();
    p.extend(ops);
    p.push(b'.');
    archive(&p, &[])
}

#[test]
fn every_bound_refuses_what_exceeds_it() {
    let _cleanup = Cleanup;
    let o = small();
    let rep = |b: &[u8], n: usize| b.repeat(n);
    // Operations: BINPUT over one memo slot, 10,001 times.
    refuse(
        &pickle_of(&[b"N".as_ref(), &rep(b"q\x00", 10_000)].concat()),
        &o,
        "pickle operations",
    );
    // Stack.
    refuse(&pickle_of(&rep(b"K\x01", 2000)), &o, "stack exceeds 1000");
    // Memo entries.
    let mut p = b"N".to_vec();
    for i in 0..2000u32 {
        p.push(b'r');
        p.extend(i.to_le_bytes());
    }
    refuse(&pickle_of(&p), &o, "more than 1000 memo entries");
    // Objects.
    refuse(
        &pickle_of(&[b"]".as_ref(), &rep(b"]a", 2000)].concat()),
        &o,
        "more than 1000 objects",
    );
    // Items in one container.
    let p = [
        b"](".as_ref(),
        &rep(b"K\x01", 600),
        b"e(",
        &rep(b"K\x01", 600),
        b"e",
    ]
    .concat();
    refuse(&pickle_of(&p), &o, "list with more than 1000 items");
    // Nesting.
    refuse(
        &pickle_of(&[rep(b"]", 100), rep(b"a", 99)].concat()),
        &o,
        "nested deeper than 16",
    );
    // Visits: 2^12 references to one tensor through shared tuples.
    let mut p = b"\x80\x02".to_vec();
    p.extend(tensor_op("FloatStorage", "0", 1, &[], &[]));
    p.extend(b"q\x00");
    for i in 0..12u8 {
        p.extend([b'h', i, b'h', i, 0x86, b'q', i + 1]);
    }
    p.push(b'.');
    let mut visits = o.clone();
    visits.limits.max_name_bytes = 1 << 30;
    refuse(
        &archive(&p, &[("0", &[0; 4])]),
        &visits,
        "more than 1000 values",
    );
    // Name bytes.
    let key = "n".repeat(20_000);
    let pkl = dict_of_tensor(&key, &tensor_op("FloatStorage", "0", 1, &[], &[]));
    refuse(
        &archive(&pkl, &[("0", &[0; 4])]),
        &o,
        "more than 10000 bytes of dotted tensor names",
    );
    // Working memory: OrderedDict(d) of a 100-entry dict, 100 times, under 200,000 bytes.
    let mut p = b"}q\x00(".to_vec();
    for i in 0..100u64 {
        p.extend(int(i));
        p.push(b'N');
    }
    p.extend(b"uccollections\nOrderedDict\nq\x01]");
    p.extend(rep(b"h\x01h\x00\x85Ra", 100));
    let mut heap = o.clone();
    heap.limits.max_ops = 1_000_000;
    heap.limits.max_heap_bytes = 200_000;
    refuse(&pickle_of(&p), &heap, "working memory");
    // With no absolute cap, a 10 KB pickle still gets 32 MiB + 64 bytes per byte, no more.
    let mut tiny = o.clone();
    tiny.limits.max_ops = 1_000_000;
    tiny.limits.max_heap_bytes = u64::MAX;
    let mut p = b"}q\x00".to_vec();
    for i in 0..1000u64 {
        p.extend(int(i + 1000));
        p.extend(b"Ns");
    }
    p.extend(b"ccollections\nOrderedDict\nq\x01]");
    p.extend(rep(b"h\x01h\x00\x85Ra", 990));
    tiny.limits.max_objects = 10_000;
    refuse(&pickle_of(&p), &tiny, "working memory");
    // data.pkl size.
    refuse(&pickle_of(&unicode(&"x".repeat(100_001))), &o, "data.pkl");
    // Storages loaded: 2000 bytes of records against a 1000-byte budget.
    let pkl = dict_of_tensor("w", &tensor_op("ByteStorage", "0", 2000, &[2000], &[1]));
    refuse(&archive(&pkl, &[("0", &[0; 2000])]), &o, "storage \"0\"");
    // Tensors materialised: a 100-byte storage viewed as 11 × 100 with stride (0, 1).
    let pkl = dict_of_tensor(
        "w",
        &tensor_op("ByteStorage", "0", 100, &[11, 100], &[0, 1]),
    );
    refuse(&archive(&pkl, &[("0", &[0; 100])]), &o, "tensor \"w\"");
}

/// The working-memory limit leaves real pickles far more room than they use: every golden
/// torch.save file needs under 16 bytes per byte of pickle (the limit is 32 MiB + 64 per byte),
/// and so does a dense dict of a million ints.
#[test]
fn real_pickles_use_a_fraction_of_the_working_memory_limit() {
    let _cleanup = Cleanup;
    use rnnkit::checkpoint::pickle::{parse, Limits, PidFormat};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/pth");
    let mut checked = 0;
    let mut worst = (0.0f64, String::new());
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        let p = e.path();
        if p.extension().is_none_or(|x| x != "pth") {
            continue;
        }
        let Ok(mut z) = zip::ZipArchive::new(std::fs::File::open(&p).unwrap()) else {
            continue;
        };
        let Some(name) = z
            .file_names_raw()
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .find(|n| n.ends_with("/data.pkl"))
        else {
            continue;
        };
        let mut pkl = Vec::new();
        if z.by_name(&name).unwrap().read_to_end(&mut pkl).is_err() {
            continue;
        }
        let Ok(parsed) = parse(
            &mut &pkl[..],
            pkl.len() as u64,
            PidFormat::Zip,
            &Limits::default(),
        ) else {
            continue;
        };
        checked += 1;
        let ratio = parsed.working_memory as f64 / pkl.len() as f64;
        if pkl.len() > 10_000 && ratio > worst.0 {
            worst = (ratio, format!("{} ({} bytes)", p.display(), pkl.len()));
        }
    }
    println!(
        "golden pickles over 10 KB: at most {:.1} bytes of working memory per byte ({})",
        worst.0, worst.1
    );
    assert!(checked > 20, "{checked} golden pickles");
    assert!(worst.0 < 16.0, "{:.1}: {}", worst.0, worst.1);
    // {i: None for i in range(65536, 65536 + 1_000_000)}, SETITEMS in batches of 1000.
    let mut p = b"\x80\x02}".to_vec();
    for chunk in (65536u32..65536 + 1_000_000)
        .collect::<Vec<_>>()
        .chunks(1000)
    {
        p.push(b'(');
        for &i in chunk {
            p.push(b'J');
            p.extend(i.to_le_bytes());
            p.push(b'N');
        }
        p.push(b'u');
    }
    p.push(b'.');
    let parsed = parse(
        &mut &p[..],
        p.len() as u64,
        PidFormat::Zip,
        &Limits::default(),
    )
    .unwrap();
    let ratio = parsed.working_memory as f64 / p.len() as f64;
    println!(
        "a dict of 1,000,000 ints: {:.1} bytes of working memory per byte of pickle",
        ratio
    );
    assert!(ratio < 32.0, "{ratio:.1}");
}

/// A model directory read within a budget smaller than its weights is refused before the
/// weights are allocated, naming the file and the tensor; the default budget loads it.
#[test]
fn model_directories_are_read_within_the_budget() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/models/clf_gru_mean");
    assert!(
        dir.join("config.json").exists(),
        "run `.venv/bin/python scripts/make_model_golden.py tests/golden/models` first"
    );
    let device = tch::Device::Cpu;
    assert!(rnnkit::models::Model::load_dir(&dir, device).is_ok());
    let e = rnnkit::models::Model::load_dir_with(&dir, device, &ReadOptions::with_max_bytes(64))
        .map(|_| ())
        .unwrap_err()
        .to_string();
    println!("{e}");
    assert!(
        e.contains("model.safetensors") && e.contains("reading budget") && e.contains("max_bytes"),
        "{e}"
    );
}
