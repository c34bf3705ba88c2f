//! The safetensors format, read and written as the reference implementation does
//! (docs/FORMATS.md §4), plus duplicate keys refused. No libtorch here: tensors are [`RawTensor`]s.
//!
//! Layout: `u64 LE N`, N bytes of UTF-8 JSON
//! `{"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}}`,
//! then the byte buffer; offsets are relative to the buffer, data row-major little-endian, and
//! the tensors must tile the buffer exactly.
//!
//! Hand-written rather than the `safetensors` crate's codec: its reader parses one buffer holding
//! the whole file (`SafeTensors::read_metadata` checks the buffer's length against the header),
//! so reading would need twice the file in memory or an unsafe mmap, where [`read`] reads each
//! tensor straight into its own buffer; it keeps the last of duplicate keys (the header becomes
//! a `HashMap`); and its `TensorInvalidInfo`, `ValidationOverflow` and `MisalignedSlice` errors
//! do not name the tensor. Its writer builds the file in memory (`serialize`) or renames a
//! temporary file without fsync (`serialize_to_file`); [`write`] streams through
//! [`write_atomic`].

use crate::checkpoint::atomic::{write_atomic, write_err};
use crate::checkpoint::budget::ReadOptions;
use crate::checkpoint::raw::{checked_numel, DType, RawTensor};
use crate::error::{Error, Result};
use serde::de::{MapAccess, Visitor};
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

const MAX_HEADER: u64 = 100_000_000;

/// What a safetensors file holds: tensors in file order (by offset) and the string metadata.
#[derive(Debug, Default)]
pub struct SafeTensors {
    /// (name, tensor) pairs, ordered by data offset.
    pub tensors: Vec<(String, RawTensor)>,
    /// The header's `__metadata__` (string to string).
    pub metadata: BTreeMap<String, String>,
}

/// Header entries in the order written, duplicates kept so they can be rejected.
struct OrderedPairs(Vec<(String, serde_json::Value)>);

impl<'de> Deserialize<'de> for OrderedPairs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OrderedPairs;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut m: A,
            ) -> std::result::Result<OrderedPairs, A::Error> {
                let mut v = Vec::new();
                while let Some((k, val)) = m.next_entry::<String, serde_json::Value>()? {
                    v.push((k, val));
                }
                Ok(OrderedPairs(v))
            }
        }
        d.deserialize_map(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: (u64, u64),
}

/// One tensor as the header describes it; `begin..end` is its byte range in the data buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorEntry {
    /// The tensor's name (its header key).
    pub name: String,
    /// Element type (`F32`, `BF16`, …).
    pub dtype: DType,
    /// Dimensions (row-major; safetensors has no strides).
    pub shape: Vec<i64>,
    /// First byte, relative to the end of the header.
    pub begin: u64,
    /// One past the last byte; `end - begin` is numel × element size.
    pub end: u64,
}

/// A safetensors file's header, validated against the file: every tensor's bytes are there.
#[derive(Debug, Clone, Default)]
pub struct Header {
    /// In file order (by offset).
    pub tensors: Vec<TensorEntry>,
    /// The header's `__metadata__`.
    pub metadata: BTreeMap<String, String>,
}

type Info = TensorEntry;

/// Parses and validates the header; returns the entries sorted by offset, the metadata and the
/// buffer's start.
fn read_header(
    path: &Path,
    file: &mut std::fs::File,
) -> Result<(Vec<Info>, BTreeMap<String, String>, u64)> {
    let bad = |msg: String| Error::format(path, msg);
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if len < 8 {
        return Err(bad(format!("not a safetensors file: {len} bytes, shorter than the 8-byte header length (HeaderTooSmall)")));
    }
    let mut n = [0u8; 8];
    file.read_exact(&mut n).map_err(|e| Error::io(path, e))?;
    let n = u64::from_le_bytes(n);
    if n > MAX_HEADER {
        return Err(bad(format!(
            "safetensors header of {n} bytes exceeds the {MAX_HEADER}-byte limit (HeaderTooLarge)"
        )));
    }
    if 8 + n > len {
        return Err(bad(format!("safetensors header claims {n} bytes but the file has {len} (InvalidHeaderLength; truncated?)")));
    }
    // The data buffer the tensors must tile exactly; a tensor that claims more than the file
    // holds is refused when its entry is read, before anything is allocated for it.
    let buffer = len - 8 - n;
    let mut header = vec![0u8; n as usize];
    file.read_exact(&mut header)
        .map_err(|e| Error::io(path, e))?;
    let header = std::str::from_utf8(&header)
        .map_err(|e| bad(format!("safetensors header is not UTF-8: {e}")))?;
    let pairs: OrderedPairs = serde_json::from_str(header).map_err(|e| {
        bad(format!(
            "safetensors header is not a valid JSON object: {e}"
        ))
    })?;
    let mut seen = HashSet::new();
    let mut infos = Vec::new();
    let mut metadata = BTreeMap::new();
    for (name, value) in pairs.0 {
        if !seen.insert(name.clone()) {
            return Err(bad(format!("duplicate key {name:?} in safetensors header")));
        }
        if name == "__metadata__" {
            metadata = serde_json::from_value(value)
                .map_err(|e| bad(format!("__metadata__ must map strings to strings: {e}")))?;
            continue;
        }
        let e: Entry =
            serde_json::from_value(value).map_err(|e| bad(format!("tensor {name:?}: {e}")))?;
        let dtype = DType::from_safetensors_name(&e.dtype).ok_or_else(|| {
            bad(format!(
                "tensor {name:?}: unknown or unsupported dtype {:?}",
                e.dtype
            ))
        })?;
        let shape = e
            .shape
            .iter()
            .map(|&d| i64::try_from(d))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|_| bad(format!("tensor {name:?}: shape {:?} out of range", e.shape)))?;
        let (begin, end) = e.data_offsets;
        if begin > end {
            return Err(bad(format!(
                "tensor {name:?}: data_offsets [{begin}, {end}] begin after end (InvalidOffset)"
            )));
        }
        let bytes = checked_numel(&shape)
            .and_then(|n| n.checked_mul(dtype.size()))
            .ok_or_else(|| {
                bad(format!(
                    "tensor {name:?}: shape {shape:?} overflows (ValidationOverflow)"
                ))
            })?;
        if end - begin != bytes as u64 {
            return Err(bad(format!(
                "tensor {name:?}: {dtype} {shape:?} needs {bytes} bytes but data_offsets [{begin}, {end}] span {} (TensorInvalidInfo)",
                end - begin
            )));
        }
        if end > buffer {
            return Err(bad(format!(
                "tensor {name:?}: {dtype} {shape:?} claims bytes [{begin}, {end}) of the data buffer, \
                 but the file holds only {buffer} bytes of data (MetadataIncompleteBuffer: truncated, \
                 or a header that does not describe this file)"
            )));
        }
        infos.push(Info {
            name,
            dtype,
            shape,
            begin,
            end,
        });
    }
    infos.sort_by_key(|i| (i.begin, i.end));
    let mut at = 0;
    for i in &infos {
        if i.begin != at {
            return Err(bad(format!(
                "tensor {:?}: data starts at {} but the previous tensor ends at {at}: overlapping, aliased or gapped tensors (InvalidOffset)",
                i.name, i.begin
            )));
        }
        at = i.end;
    }
    if at != buffer {
        return Err(bad(format!(
            "tensors cover {at} bytes but the data buffer has {buffer} (MetadataIncompleteBuffer: truncated or trailing bytes)"
        )));
    }
    Ok((infos, metadata, 8 + n))
}

/// Reads every tensor of a safetensors file within the default reading budget. Peak memory is
/// the tensors plus nothing else (each tensor is read straight into its own buffer).
pub fn read(path: impl AsRef<Path>) -> Result<SafeTensors> {
    read_with(path, &ReadOptions::default())
}

/// As [`read`], within `opts.max_bytes`: the tensors' bytes are charged to the budget, all of
/// them before the first is allocated, so an oversized file is refused having read only its
/// header.
pub fn read_with(path: impl AsRef<Path>, opts: &ReadOptions) -> Result<SafeTensors> {
    let path = path.as_ref();
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let (infos, metadata, start) = read_header(path, &mut file)?;
    let mut budget = opts.budget();
    for i in &infos {
        budget.charge(i.end - i.begin, path, || {
            format!("tensor {:?} ({} {:?})", i.name, i.dtype, i.shape)
        })?;
    }
    file.seek(SeekFrom::Start(start))
        .map_err(|e| Error::io(path, e))?;
    let mut tensors = Vec::with_capacity(infos.len());
    for i in infos {
        let mut data = vec![0u8; (i.end - i.begin) as usize];
        file.read_exact(&mut data).map_err(|e| Error::io(path, e))?;
        tensors.push((
            i.name,
            RawTensor {
                dtype: i.dtype,
                shape: i.shape,
                data,
            },
        ));
    }
    Ok(SafeTensors { tensors, metadata })
}

/// Only the metadata, without reading the data.
pub fn read_metadata(path: impl AsRef<Path>) -> Result<BTreeMap<String, String>> {
    Ok(read_header_only(path)?.metadata)
}

/// The validated header (tensor names, dtypes, shapes, offsets and the metadata), without
/// reading or allocating any tensor data.
pub fn read_header_only(path: impl AsRef<Path>) -> Result<Header> {
    let path = path.as_ref();
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let (tensors, metadata, _) = read_header(path, &mut file)?;
    Ok(Header { tensors, metadata })
}

/// Writes tensors and metadata: tensors sorted by dtype size (largest first, so each starts
/// aligned to its element size), then by name; the header padded with spaces to a multiple of 8
/// as the reference writer pads it. Atomic.
pub fn write(
    path: impl AsRef<Path>,
    tensors: &[(String, RawTensor)],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let path = path.as_ref();
    let mut names = HashSet::new();
    for (name, t) in tensors {
        if !names.insert(name.as_str()) || name == "__metadata__" {
            return Err(Error::invalid(format!(
                "{}: duplicate or reserved tensor name {name:?}",
                path.display()
            )));
        }
        if t.dtype.safetensors_name().is_none() {
            return Err(Error::invalid(format!(
                "{}: tensor {name:?}: safetensors has no {} dtype",
                path.display(),
                t.dtype
            )));
        }
    }
    let mut order: Vec<&(String, RawTensor)> = tensors.iter().collect();
    order.sort_by(|a, b| {
        b.1.dtype
            .size()
            .cmp(&a.1.dtype.size())
            .then_with(|| a.0.cmp(&b.0))
    });
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert(
            "__metadata__".into(),
            serde_json::to_value(metadata).expect("strings serialise"),
        );
    }
    let mut at = 0u64;
    for (name, t) in &order {
        let end = at + t.data.len() as u64;
        header.insert(
            name.clone(),
            serde_json::json!({
                "dtype": t.dtype.safetensors_name(),
                "shape": t.shape,
                "data_offsets": [at, end],
            }),
        );
        at = end;
    }
    let mut json = serde_json::to_string(&header).expect("JSON values serialise");
    while !json.len().is_multiple_of(8) {
        json.push(' ');
    }
    write_atomic(path, |w| {
        w.write_all(&(json.len() as u64).to_le_bytes())
            .map_err(write_err(path))?;
        w.write_all(json.as_bytes()).map_err(write_err(path))?;
        for (_, t) in &order {
            w.write_all(&t.data).map_err(write_err(path))?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("rnnkit-st-{}-{name}", std::process::id()))
    }

    fn write_raw(path: &Path, header: &str, data: &[u8]) {
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(data);
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn round_trip_keeps_values_and_metadata() {
        let p = tmp("rt.safetensors");
        let a = RawTensor::new(
            DType::F32,
            vec![2],
            [1.0f32, 2.0].iter().flat_map(|x| x.to_le_bytes()).collect(),
        )
        .unwrap();
        let b = RawTensor::new(DType::I64, vec![], 7i64.to_le_bytes().to_vec()).unwrap();
        let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
        write(
            &p,
            &[("a".into(), a.clone()), ("b".into(), b.clone())],
            &meta,
        )
        .unwrap();
        let st = read(&p).unwrap();
        assert_eq!(st.metadata, meta);
        let got: BTreeMap<_, _> = st.tensors.into_iter().collect();
        assert_eq!(got["a"], a);
        assert_eq!(got["b"], b);
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    fn rejects_what_the_reference_rejects_and_duplicates() {
        let p = tmp("bad.safetensors");
        let cases: &[(&str, &[u8], &str)] = &[
            (
                r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
                &[0; 4],
                "duplicate key",
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#,
                &[0; 4],
                "TensorInvalidInfo",
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
                &[0; 5],
                "MetadataIncompleteBuffer",
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
                &[0; 8],
                "InvalidOffset",
            ),
            (
                r#"{"a":{"dtype":"f32","shape":[1],"data_offsets":[0,4]}}"#,
                &[0; 4],
                "dtype",
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#,
                &[0; 4],
                "tensor \"a\"",
            ),
            (r#"[1]"#, &[], "JSON object"),
            (r#"{"__metadata__":{"x":1}}"#, &[], "__metadata__"),
        ];
        for (header, data, want) in cases {
            write_raw(&p, header, data);
            let e = read(&p).unwrap_err().to_string();
            assert!(
                e.contains(want) && e.contains("bad.safetensors"),
                "{header}: {e}"
            );
        }
        std::fs::write(&p, [1u8, 2]).unwrap();
        assert!(read(&p).unwrap_err().to_string().contains("HeaderTooSmall"));
        std::fs::write(&p, 1000u64.to_le_bytes()).unwrap();
        assert!(read(&p).unwrap_err().to_string().contains("truncated"));
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    fn accepts_what_the_reference_accepts() {
        let p = tmp("ok.safetensors");
        // Unpadded header with leading whitespace, out-of-order entries, a 0-dim and an empty tensor.
        write_raw(
            &p,
            r#"  {"b":{"dtype":"F32","shape":[],"data_offsets":[1,5]},"e":{"dtype":"F64","shape":[0,3],"data_offsets":[5,5]},"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#,
            &[9, 0, 0, 128, 63],
        );
        let st = read(&p).unwrap();
        let names: Vec<_> = st.tensors.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a", "b", "e"]);
        assert_eq!(st.tensors[1].1.data, 1.0f32.to_le_bytes());
        std::fs::remove_file(p).unwrap();
    }
}
