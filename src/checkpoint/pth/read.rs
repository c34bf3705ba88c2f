//! Reading `torch.save` files: format sniffing, the zip container (docs/FORMATS.md §1.1–1.3,
//! §1.7) and the legacy format (§2). The pickle itself is [`crate::checkpoint::pickle`]'s job;
//! this module finds it, loads each storage record into its own buffer (never the whole file
//! twice) and applies the byte order. No libtorch here, so the fuzz crate can include it.
//!
//! Zip: the central directory is read with the `zip` crate; entries must all share the first
//! entry's `<archive>/` prefix; duplicates, `..` components, TorchScript (`constants.pkl`) and
//! a missing `data.pkl` or `version` are errors. Records may be stored or deflated; CRCs are
//! checked when non-zero (torch never checks them). Every `data/<key>` record must be exactly
//! `numel × itemsize` bytes.
//!
//! Legacy: magic pickle, protocol pickle (1001), sys_info pickle, the object pickle with 6-field
//! storage ids, the sorted key list, then per key an i64 LE element count and the little-endian
//! bytes; the file must end there.

pub use crate::checkpoint::budget::ReadOptions;
use crate::checkpoint::pickle::{self, Pickle, PidFormat, StorageSpec, Value};
use crate::error::{Error, Result};
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

/// What a file's first bytes say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `PK\x03\x04`: torch.save since 1.6.
    Zip,
    /// The 15-byte pickled magic number: `_use_new_zipfile_serialization=False`.
    Legacy,
    /// A tar archive: torch before 0.1.10.
    Tar,
    /// An 8-byte header length followed by `{`.
    Safetensors,
    /// A file of zero bytes.
    Empty,
    /// None of the above.
    Unknown,
}

/// The legacy magic number 0x1950a86a20f9469cfc6c as LONG1 bytes (little-endian).
const LEGACY_MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

/// Classifies a file by its first bytes (pass at least 512 when the file has them).
pub fn sniff(head: &[u8]) -> Format {
    if head.is_empty() {
        return Format::Empty;
    }
    if head.starts_with(b"PK\x03\x04") {
        return Format::Zip;
    }
    if head.len() >= 14
        && head[0] == 0x80
        && head[2] == 0x8a
        && head[3] == 0x0a
        && head[4..14] == LEGACY_MAGIC
    {
        return Format::Legacy;
    }
    if head.get(257..262) == Some(b"ustar") {
        return Format::Tar;
    }
    if head.len() >= 9 {
        let n = u64::from_le_bytes([
            head[0], head[1], head[2], head[3], head[4], head[5], head[6], head[7],
        ]);
        let first = head[8..].iter().find(|b| !b.is_ascii_whitespace());
        if n >= 2 && first == Some(&b'{') {
            return Format::Safetensors;
        }
    }
    Format::Unknown
}

/// Facts about the container, for `inspect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    /// The container: zip (PyTorch ≥ 1.6), legacy, or not a torch.save file.
    pub format: Format,
    /// The archive prefix (zip) — `None` for legacy files.
    pub archive_name: Option<String>,
    /// The `version` record (zip) or the legacy protocol version (1001).
    pub version: u64,
    /// `little` or `big` (legacy files are always little-endian on disk).
    pub byteorder: String,
    /// Pickle protocol of the object pickle.
    pub protocol: u8,
}

/// Reads a whole torch.save file from `r` (`len` bytes). `path` only names the file in errors.
pub fn read<R: Read + Seek>(
    mut r: R,
    len: u64,
    path: &Path,
    opts: &ReadOptions,
) -> Result<(Value, FileInfo)> {
    let bad = |msg: String| Error::format(path, msg);
    let mut head = vec![0u8; len.min(512) as usize];
    r.seek(SeekFrom::Start(0)).map_err(|e| Error::io(path, e))?;
    r.read_exact(&mut head).map_err(|e| Error::io(path, e))?;
    r.seek(SeekFrom::Start(0)).map_err(|e| Error::io(path, e))?;
    match sniff(&head) {
        Format::Zip => read_zip(r, len, path, opts),
        Format::Legacy => read_legacy(r, len, path, opts),
        Format::Tar => Err(bad(
            "very old tar-format torch checkpoint (torch < 0.1.10); torch.load(weights_only=True) refuses it too. \
             Re-save it with a modern torch (only if you trust the file)"
                .into(),
        )),
        Format::Empty => Err(bad("empty file (0 bytes): not a torch.save checkpoint".into())),
        Format::Safetensors => Err(bad("this is a safetensors file, not a torch.save checkpoint".into())),
        Format::Unknown => Err(bad(format!(
            "not a torch.save file: it starts with {:02x?}, neither a zip archive (PK\\x03\\x04) nor a legacy pickle",
            &head[..head.len().min(8)]
        ))),
    }
}

// ------------------------------------------------------------------------------------------
// Zip
// ------------------------------------------------------------------------------------------

fn read_zip<R: Read + Seek>(
    r: R,
    len: u64,
    path: &Path,
    opts: &ReadOptions,
) -> Result<(Value, FileInfo)> {
    let bad = |msg: String| Error::format(path, msg);
    // torch archives start at offset 0 (no self-extractor stub): don't let the zip crate guess.
    let config = zip::read::Config {
        archive_offset: zip::read::ArchiveOffset::Known(0),
    };
    let mut za = zip::ZipArchive::with_config(config, r).map_err(|e| {
        bad(format!("truncated or corrupt zip archive (failed finding central directory or reading it): {e}"))
    })?;
    if za.is_empty() {
        return Err(bad(
            "zip archive has no entries: not a torch.save checkpoint".into(),
        ));
    }
    if za.has_duplicate_names() {
        return Err(bad(
            "zip archive has duplicate entry names (torch would silently use the first); refusing"
                .into(),
        ));
    }
    let names: Vec<String> = za
        .file_names_raw()
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect();
    let archive = match names[0].split_once('/') {
        Some((a, _)) if !a.is_empty() => a.to_string(),
        _ => {
            return Err(bad(format!(
            "zip entry {:?} is not in a subdirectory (file in archive is not in a subdirectory)",
            names[0]
        )))
        }
    };
    for n in &names {
        let rest = n.strip_prefix(&archive).and_then(|s| s.strip_prefix('/'));
        if rest.is_none() {
            return Err(bad(format!(
                "zip entry {n:?} is not under the archive prefix {archive:?}/ (file in archive is not in a subdirectory)"
            )));
        }
        if n.split('/').any(|c| c == "..") || n.contains('\\') {
            return Err(bad(format!(
                "zip entry {n:?} has a '..' component or backslash; refusing"
            )));
        }
    }
    let rec = |name: &str| format!("{archive}/{name}");
    if za.index_for_name(&rec("constants.pkl")).is_some() {
        return Err(bad(
            "this is a TorchScript archive (torch.jit.save), not a torch.save checkpoint; torch.load(weights_only=True) \
             refuses it too. Load it with torch.jit.load and save its state_dict() with torch.save"
                .into(),
        ));
    }
    let Some(pkl) = za.index_for_name(&rec("data.pkl")) else {
        return Err(bad(format!(
            "failed locating file data.pkl in the archive: not a complete torch.save checkpoint \
             (a torch.save that failed mid-way leaves only {:?})",
            names
        )));
    };
    let version_idx = za
        .index_for_name(&rec(".data/version"))
        .or_else(|| za.index_for_name(&rec("version")));
    let Some(version_idx) = version_idx else {
        return Err(bad(
            "the archive has no 'version' record (Expected hasRecord(\"version\"))".into(),
        ));
    };
    let version_text = read_entry(&mut za, version_idx, 64, opts, path, "version")?;
    let version = std::str::from_utf8(&version_text)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .filter(|v| (1..=10).contains(v))
        .ok_or_else(|| {
            bad(format!(
                "unsupported 'version' record {:?}: expected 1 to 10",
                String::from_utf8_lossy(&version_text)
            ))
        })?;
    let byteorder = match za.index_for_name(&rec("byteorder")) {
        None => "little".to_string(),
        Some(i) => {
            let b = read_entry(&mut za, i, 64, opts, path, "byteorder")?;
            match &b[..] {
                b"little" | b"big" => String::from_utf8_lossy(&b).into_owned(),
                _ => {
                    return Err(bad(format!(
                        "Unknown endianness type {:?} in the byteorder record",
                        String::from_utf8_lossy(&b)
                    )))
                }
            }
        }
    };
    let pickle_bytes = read_entry(&mut za, pkl, opts.max_pickle_bytes, opts, path, "data.pkl")?;
    let mut cursor = &pickle_bytes[..];
    let parsed = pickle::parse(
        &mut cursor,
        pickle_bytes.len() as u64,
        PidFormat::Zip,
        &opts.limits,
    )
    .map_err(|e| bad(format!("data.pkl: {e}")))?;
    drop(pickle_bytes);
    let protocol = parsed.protocol;
    // Every storage is charged to the budget before the first is read: an oversized file is
    // refused having read only its pickle.
    let mut budget = opts.budget();
    for spec in parsed.storages() {
        budget.charge(spec.nbytes as u64, path, || {
            storage_what(spec, &format!("record data/{}", spec.key))
        })?;
    }
    let mut data = Vec::with_capacity(parsed.storages().len());
    for spec in parsed.storages() {
        let name = format!("data/{}", spec.key);
        let idx = za.index_for_name(&rec(&name)).ok_or_else(|| {
            bad(format!(
                "storage {:?} is referenced by data.pkl but record {name} is missing",
                spec.key
            ))
        })?;
        let size = za
            .by_index_data(idx)
            .map(|e| e.size())
            .map_err(|e| bad(format!("record {name}: {e}")))?;
        if size != spec.nbytes as u64 {
            return Err(bad(format!(
                "record {name} has {size} bytes but storage {:?} needs {} ({} × {}): record size does not match expected size",
                spec.key,
                spec.nbytes,
                spec.numel,
                spec.dtype
            )));
        }
        let mut bytes = read_entry(&mut za, idx, size, opts, path, &name)?;
        if byteorder == "big" {
            swap_storage(spec, &mut bytes);
        }
        data.push(bytes);
    }
    let _ = len;
    let value = parsed
        .into_value(data)
        .map_err(|e| bad(format!("data.pkl: {e}")))?;
    Ok((
        value,
        FileInfo {
            format: Format::Zip,
            archive_name: Some(archive),
            version,
            byteorder,
            protocol,
        },
    ))
}

/// A storage as the budget error names it: key, where its bytes are, numel × dtype.
fn storage_what(spec: &StorageSpec, place: &str) -> String {
    format!(
        "storage {:?} ({place}: {} × {})",
        spec.key, spec.numel, spec.dtype
    )
}

/// Big-endian storages are swapped per element of the *storage* dtype (complex per component),
/// exactly as torch does; UntypedStorage (v3 dtypes such as uint16) is bytes and torch does not
/// swap it, so neither do we (values stay bitwise identical to what torch.load returns).
fn swap_storage(spec: &StorageSpec, bytes: &mut [u8]) {
    if spec.untyped {
        return;
    }
    let unit = spec.dtype.swap_unit();
    if unit > 1 {
        for c in bytes.chunks_exact_mut(unit) {
            c.reverse();
        }
    }
}

/// Reads one zip entry (stored or deflated) of at most `max` bytes, checking its CRC-32 when
/// it is non-zero. The central directory's size (at most `max`; for a storage record, exactly
/// what the pickle declares) is all that is ever read: a deflated entry is inflated to at most
/// that size plus one byte, which detects one that inflates further (a deflate bomb).
fn read_entry<R: Read + Seek>(
    za: &mut zip::ZipArchive<R>,
    idx: usize,
    max: u64,
    opts: &ReadOptions,
    path: &Path,
    what: &str,
) -> Result<Vec<u8>> {
    let bad = |msg: String| Error::format(path, format!("record {what}: {msg}"));
    let mut f = za
        .by_index_raw(idx)
        .map_err(|e| bad(format!("corrupt zip entry: {e}")))?;
    if f.encrypted() {
        return Err(bad("encrypted zip entries are not supported".into()));
    }
    let size = f.size();
    if size > max {
        return Err(bad(format!("{size} bytes exceeds the {max}-byte limit")));
    }
    let method = f.compression();
    let crc = f.crc32();
    let mut out = Vec::new();
    if method == zip::CompressionMethod::STORE {
        if f.compressed_size() != size {
            return Err(bad(format!(
                "stored entry with compressed size {} ≠ size {size}",
                f.compressed_size()
            )));
        }
        // Bounded by the file: the zip crate checks the entry ends inside it.
        out.try_reserve_exact(size as usize)
            .map_err(|_| bad(format!("cannot allocate {size} bytes")))?;
        (&mut f)
            .take(size)
            .read_to_end(&mut out)
            .map_err(|e| bad(format!("truncated or unreadable: {e}")))?;
    } else if method == zip::CompressionMethod::DEFLATE {
        // Grow as data arrives (a lying size cannot make us pre-allocate it), and never past
        // the declared size plus the one byte that shows the stream has more.
        out.reserve(size.min(1 << 26) as usize);
        flate2::read::DeflateDecoder::new(&mut f)
            .take(size + 1)
            .read_to_end(&mut out)
            .map_err(|e| bad(format!("corrupt deflate data: {e}")))?;
        if out.len() as u64 > size {
            return Err(bad(format!(
                "the deflated data inflates past the {size} bytes declared for it \
                 (a decompression bomb or a corrupt entry); stopped after {} bytes",
                out.len()
            )));
        }
    } else {
        return Err(bad(format!(
            "unsupported zip compression method {method:?}"
        )));
    }
    if out.len() as u64 != size {
        return Err(bad(format!(
            "holds {} bytes but the central directory says {size} (truncated?)",
            out.len()
        )));
    }
    if opts.verify_crc && crc != 0 {
        let actual = crc32fast::hash(&out);
        if actual != crc {
            return Err(bad(format!(
                "CRC-32 mismatch (stored {crc:08x}, computed {actual:08x}): the file is corrupt"
            )));
        }
    }
    Ok(out)
}

// ------------------------------------------------------------------------------------------
// Legacy
// ------------------------------------------------------------------------------------------

/// A reader that counts what it consumed.
struct Counting<R> {
    r: R,
    pos: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.r.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

fn read_legacy<R: Read + Seek>(
    r: R,
    len: u64,
    path: &Path,
    opts: &ReadOptions,
) -> Result<(Value, FileInfo)> {
    let bad = |msg: String| Error::format(path, format!("legacy torch.save file: {msg}"));
    let mut c = Counting {
        r: BufReader::with_capacity(1 << 16, r),
        pos: 0,
    };
    let next = |c: &mut Counting<BufReader<R>>, what: &str| -> Result<Pickle> {
        let remaining = len.saturating_sub(c.pos);
        pickle::parse(c, remaining, PidFormat::Legacy, &opts.limits)
            .map_err(|e| bad(format!("{what} pickle: {e}")))
    };
    let magic = next(&mut c, "magic number")?;
    if magic.root_long_bytes().as_deref() != Some(&LEGACY_MAGIC[..]) {
        return Err(bad("Invalid magic number; corrupt file?".into()));
    }
    let proto = next(&mut c, "protocol version")?;
    if proto.root_int() != Some(1001) {
        return Err(bad(format!(
            "Invalid protocol version {:?} (expected 1001)",
            proto.root_int()
        )));
    }
    let _sys_info = next(&mut c, "sys_info")?;
    let parsed = next(&mut c, "object")?;
    let protocol = parsed.protocol;
    let keys = next(&mut c, "storage key list")?
        .root_str_list()
        .ok_or_else(|| bad("the storage key list is not a list of strings".into()))?;
    let specs = parsed.storages();
    let mut data: Vec<Option<Vec<u8>>> = vec![None; specs.len()];
    let index: std::collections::HashMap<&str, usize> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| (s.key.as_str(), i))
        .collect();
    // Every storage is charged to the budget before the first is read.
    let mut budget = opts.budget();
    for spec in specs {
        budget.charge(spec.nbytes as u64, path, || {
            storage_what(spec, "legacy data")
        })?;
    }
    for key in &keys {
        let &i = index.get(key.as_str()).ok_or_else(|| {
            bad(format!(
                "storage key {key:?} in the key list is not used by the object"
            ))
        })?;
        if data[i].is_some() {
            return Err(bad(format!(
                "storage key {key:?} appears twice in the key list"
            )));
        }
        let spec = &specs[i];
        let mut n = [0u8; 8];
        c.read_exact(&mut n).map_err(|_| {
            bad(format!(
                "storage {key:?}: unexpected EOF reading its size (truncated)"
            ))
        })?;
        let n = i64::from_le_bytes(n);
        if n < 0 || n as u64 != spec.numel as u64 {
            return Err(bad(format!(
                "storage {key:?} has wrong byte size: the file says {n} elements, the object {} ({})",
                spec.numel, spec.dtype
            )));
        }
        let remaining = len.saturating_sub(c.pos);
        if spec.nbytes as u64 > remaining {
            return Err(bad(format!(
                "storage {key:?}: unexpected EOF: needs {} bytes, {remaining} left (truncated)",
                spec.nbytes
            )));
        }
        let mut bytes = vec![0u8; spec.nbytes];
        c.read_exact(&mut bytes)
            .map_err(|_| bad(format!("storage {key:?}: unexpected EOF (truncated)")))?;
        data[i] = Some(bytes);
    }
    let missing: Vec<&str> = specs
        .iter()
        .zip(&data)
        .filter(|(_, d)| d.is_none())
        .map(|(s, _)| s.key.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(bad(format!(
            "storages {missing:?} are used but have no data in the file"
        )));
    }
    if c.pos != len {
        return Err(bad(format!(
            "{} unexpected trailing bytes after the last storage",
            len - c.pos
        )));
    }
    let data = data.into_iter().flatten().collect();
    let value = parsed
        .into_value(data)
        .map_err(|e| bad(format!("object pickle: {e}")))?;
    Ok((
        value,
        FileInfo {
            format: Format::Legacy,
            archive_name: None,
            version: 1001,
            byteorder: "little".into(),
            protocol,
        },
    ))
}
