//! Writing `.pth` files that `torch.load(path, weights_only=True)` reads (docs/FORMATS.md §3): a
//! protocol-2 `data.pkl` that uses only allowlisted globals, and a zip of stored entries whose
//! data starts on 64-byte boundaries (padding in an "FB" extra field, as torch's writer does),
//! with CRC-32 and sizes in the local headers and zip64 records where sizes or offsets need them.
//!
//! Storage sharing is kept: tensors that view one storage are written as views of one record
//! (`data/<key>`, keys `0, 1, …` in first-use order). Tensors with the neg or conj bit are
//! written resolved, as views of their own storage: a resolved copy of the storage (never the
//! view materialised, which a stride-0 view could make petabytes), one per storage and bits. Shared sub-trees of the value (one `Arc` under two
//! keys) are memoised (BINPUT/BINGET), so a re-saved file keeps its sharing and never expands.
//!
//! The zip container is written here, not with the `zip` crate's `ZipWriter`: that writer puts
//! CRC-32 and sizes into a local header only by seeking back over the data (it needs `Seek`);
//! on a plain `Write` it sets flag bit 3 and appends data descriptors, a layout torch.save never
//! writes. [`write()`] takes any `Write` (a `Vec`, the atomic file writer) and knows each record's
//! bytes before its header, so one forward pass writes torch's layout.

use crate::checkpoint::pickle::{split_global, BigInt, Dict, DictKind, Storage, Tensor, Value};
use crate::checkpoint::raw::DType;
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

const MAX_DEPTH: usize = 1000;

/// torch's typed storage class for a dtype, where one exists (the `_rebuild_tensor_v2` dtypes).
fn storage_class(d: DType) -> Option<&'static str> {
    use DType::*;
    Some(match d {
        F32 => "FloatStorage",
        F64 => "DoubleStorage",
        F16 => "HalfStorage",
        BF16 => "BFloat16Storage",
        I64 => "LongStorage",
        I32 => "IntStorage",
        I16 => "ShortStorage",
        I8 => "CharStorage",
        U8 => "ByteStorage",
        Bool => "BoolStorage",
        C64 => "ComplexFloatStorage",
        C128 => "ComplexDoubleStorage",
        _ => return None,
    })
}

/// Produces `data.pkl` and the list of storages it references.
struct Pickler<'a> {
    out: Vec<u8>,
    memo: HashMap<usize, u32>,
    storage_keys: HashMap<*const Storage, usize>,
    storages: Vec<Arc<Storage>>,
    /// Resolved copies of storages viewed with the neg/conj bits, by (storage, dtype, neg, conj).
    resolved: HashMap<(*const Storage, DType, bool, bool), Arc<Storage>>,
    _marker: std::marker::PhantomData<&'a ()>,
}

impl Pickler<'_> {
    fn op(&mut self, b: u8) {
        self.out.push(b);
    }

    fn global(&mut self, module: &str, name: &str) {
        self.out.push(b'c');
        self.out.extend_from_slice(module.as_bytes());
        self.out.push(b'\n');
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(b'\n');
    }

    fn put(&mut self, ptr: usize) {
        let idx = self.memo.len() as u32;
        self.memo.insert(ptr, idx);
        if idx < 256 {
            self.out.extend_from_slice(&[b'q', idx as u8]);
        } else {
            self.out.push(b'r');
            self.out.extend_from_slice(&idx.to_le_bytes());
        }
    }

    /// Emits BINGET and returns true if `ptr` was written before.
    fn get(&mut self, ptr: usize) -> bool {
        match self.memo.get(&ptr) {
            Some(&idx) => {
                if idx < 256 {
                    self.out.extend_from_slice(&[b'h', idx as u8]);
                } else {
                    self.out.push(b'j');
                    self.out.extend_from_slice(&idx.to_le_bytes());
                }
                true
            }
            None => false,
        }
    }

    fn int(&mut self, v: i64) {
        if (0..=0xff).contains(&v) {
            self.out.extend_from_slice(&[b'K', v as u8]);
        } else if (0..=0xffff).contains(&v) {
            self.out.push(b'M');
            self.out.extend_from_slice(&(v as u16).to_le_bytes());
        } else if i32::try_from(v).is_ok() {
            self.out.push(b'J');
            self.out.extend_from_slice(&(v as i32).to_le_bytes());
        } else {
            // LONG1: minimal two's complement, sign-correct (255 needs ff 00).
            let mut b = v.to_le_bytes().to_vec();
            while b.len() > 1 {
                let last = b[b.len() - 1];
                let sign = b[b.len() - 2] & 0x80;
                if (last == 0 && sign == 0) || (last == 0xff && sign != 0) {
                    b.pop();
                } else {
                    break;
                }
            }
            self.long1(&b);
        }
    }

    fn long1(&mut self, b: &[u8]) {
        self.out.extend_from_slice(&[0x8a, b.len() as u8]);
        self.out.extend_from_slice(b);
    }

    fn str(&mut self, s: &str) -> Result<()> {
        let n = u32::try_from(s.len()).map_err(|_| Error::invalid("string longer than 4 GiB"))?;
        self.out.push(b'X');
        self.out.extend_from_slice(&n.to_le_bytes());
        self.out.extend_from_slice(s.as_bytes());
        Ok(())
    }

    fn tuple_of_ints(&mut self, v: &[i64]) {
        match v.len() {
            0 => self.op(b')'),
            1..=3 => {
                for &x in v {
                    self.int(x);
                }
                self.op([0x85, 0x86, 0x87][v.len() - 1]);
            }
            _ => {
                self.op(b'(');
                for &x in v {
                    self.int(x);
                }
                self.op(b't');
            }
        }
    }

    fn empty_ordered_dict(&mut self) {
        self.global("collections", "OrderedDict");
        self.op(b')');
        self.op(b'R');
    }

    fn value(&mut self, v: &Value, depth: usize) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(Error::invalid(format!(
                "value nested deeper than {MAX_DEPTH} levels"
            )));
        }
        match v {
            Value::None => self.op(b'N'),
            Value::Bool(b) => self.op(if *b { 0x88 } else { 0x89 }),
            Value::Int(i) => self.int(*i),
            Value::BigInt(BigInt(b)) => {
                if b.len() > 255 {
                    return Err(Error::invalid("integer wider than 255 bytes (LONG4 is not accepted by torch.load(weights_only=True))"));
                }
                self.long1(b);
            }
            Value::Float(f) => {
                self.op(b'G');
                self.out.extend_from_slice(&f.to_be_bytes());
            }
            Value::Complex(re, im) => {
                self.global("__builtin__", "complex");
                self.op(b'G');
                self.out.extend_from_slice(&re.to_be_bytes());
                self.op(b'G');
                self.out.extend_from_slice(&im.to_be_bytes());
                self.op(0x86);
                self.op(b'R');
            }
            Value::Str(s) => {
                let ptr = Arc::as_ptr(s) as *const u8 as usize;
                if !self.get(ptr) {
                    self.str(s)?;
                    self.put(ptr);
                }
            }
            Value::Bytes(b) => {
                // `_codecs.encode(<latin-1 str>, 'latin1')`, as Python pickles bytes at protocol 2.
                let ptr = Arc::as_ptr(b) as *const u8 as usize;
                if !self.get(ptr) {
                    self.global("_codecs", "encode");
                    let s: String = b.iter().map(|&c| c as char).collect();
                    self.str(&s)?;
                    self.str("latin1")?;
                    self.op(0x86);
                    self.op(b'R');
                    self.put(ptr);
                }
            }
            Value::ByteArray(b) => {
                // `bytearray(<latin-1 str>, 'latin-1')`, as Python pickles it at protocol 2.
                let ptr = Arc::as_ptr(b) as *const u8 as usize;
                if !self.get(ptr) {
                    self.global("__builtin__", "bytearray");
                    let s: String = b.iter().map(|&c| c as char).collect();
                    self.str(&s)?;
                    self.str("latin-1")?;
                    self.op(0x86);
                    self.op(b'R');
                    self.put(ptr);
                }
            }
            Value::Size(v) => {
                self.global("torch", "Size");
                self.tuple_of_ints(v);
                self.op(0x85);
                self.op(b'R');
            }
            Value::List(items) => {
                let ptr = Arc::as_ptr(items) as *const Value as usize;
                if !self.get(ptr) {
                    self.op(b']');
                    self.put(ptr);
                    self.appends(items, depth)?;
                }
            }
            Value::Tuple(items) => {
                let ptr = Arc::as_ptr(items) as *const Value as usize;
                if !self.get(ptr) {
                    match items.len() {
                        0 => self.op(b')'),
                        n @ 1..=3 => {
                            for x in items.iter() {
                                self.value(x, depth + 1)?;
                            }
                            self.op([0x85, 0x86, 0x87][n - 1]);
                        }
                        _ => {
                            self.op(b'(');
                            for x in items.iter() {
                                self.value(x, depth + 1)?;
                            }
                            self.op(b't');
                        }
                    }
                    self.put(ptr);
                }
            }
            Value::Set(items) => {
                let ptr = Arc::as_ptr(items) as *const Value as usize;
                if !self.get(ptr) {
                    self.global("__builtin__", "set");
                    self.op(b']');
                    self.appends(items, depth)?;
                    self.op(0x85);
                    self.op(b'R');
                    self.put(ptr);
                }
            }
            Value::Dict(d) => {
                let ptr = Arc::as_ptr(d) as usize;
                if !self.get(ptr) {
                    self.dict(d, ptr, depth)?;
                }
            }
            Value::Tensor(t) => {
                let ptr = Arc::as_ptr(t) as usize;
                if !self.get(ptr) {
                    self.tensor(t)?;
                    self.put(ptr);
                }
            }
            Value::Storage(s) => {
                let untyped = s.untyped || storage_class(s.dtype).is_none();
                self.persistent_id(s, untyped)?;
            }
            Value::Device(d) => {
                self.global("torch", "device");
                self.str(d)?;
                self.op(0x85);
                self.op(b'R');
            }
            Value::Global(g) => {
                let (m, n) = split_global(g);
                self.global(m, n);
            }
        }
        Ok(())
    }

    /// List items in APPEND / MARK…APPENDS batches of at most 1000, as Python does.
    fn appends(&mut self, items: &[Value], depth: usize) -> Result<()> {
        for batch in items.chunks(1000) {
            if batch.len() == 1 {
                self.value(&batch[0], depth + 1)?;
                self.op(b'a');
            } else {
                self.op(b'(');
                for x in batch {
                    self.value(x, depth + 1)?;
                }
                self.op(b'e');
            }
        }
        Ok(())
    }

    fn setitems(&mut self, entries: &[(Value, Value)], depth: usize) -> Result<()> {
        for batch in entries.chunks(1000) {
            if batch.len() == 1 {
                self.value(&batch[0].0, depth + 1)?;
                self.value(&batch[0].1, depth + 1)?;
                self.op(b's');
            } else {
                self.op(b'(');
                for (k, v) in batch {
                    self.value(k, depth + 1)?;
                    self.value(v, depth + 1)?;
                }
                self.op(b'u');
            }
        }
        Ok(())
    }

    fn dict(&mut self, d: &Dict, ptr: usize, depth: usize) -> Result<()> {
        match d.kind {
            DictKind::Dict => self.op(b'}'),
            DictKind::OrderedDict => self.empty_ordered_dict(),
            DictKind::Counter => {
                self.global("collections", "Counter");
                self.op(b')');
                self.op(b'R');
            }
        }
        self.put(ptr);
        self.setitems(&d.entries, depth)?;
        if !d.attrs.is_empty() {
            if d.kind == DictKind::Dict {
                return Err(Error::invalid("attributes on a plain dict cannot be pickled (BUILD on dict is refused by torch)"));
            }
            self.op(b'}');
            self.setitems(&d.attrs, depth)?;
            self.op(b'b');
        }
        Ok(())
    }

    fn storage_key(&mut self, s: &Arc<Storage>) -> usize {
        let p = Arc::as_ptr(s);
        if let Some(&k) = self.storage_keys.get(&p) {
            return k;
        }
        let k = self.storages.len();
        self.storages.push(s.clone());
        self.storage_keys.insert(p, k);
        k
    }

    /// `('storage', <type>, '<key>', 'cpu', numel)` then BINPERSID.
    fn persistent_id(&mut self, s: &Arc<Storage>, untyped: bool) -> Result<()> {
        let key = self.storage_key(s);
        self.op(b'(');
        self.str("storage")?;
        let numel = if untyped {
            self.global("torch.storage", "UntypedStorage");
            s.data.len()
        } else {
            let class = storage_class(s.dtype)
                .ok_or_else(|| Error::invalid(format!("no storage class for {}", s.dtype)))?;
            self.global("torch", class);
            s.data.len() / s.dtype.size()
        };
        self.str(&key.to_string())?;
        // Data is in host memory; a `cuda:N` location would make torch.load need a GPU.
        self.str("cpu")?;
        self.int(numel as i64);
        self.op(b't');
        self.op(b'Q');
        Ok(())
    }

    fn tensor(&mut self, t: &Tensor) -> Result<()> {
        if t.parameter {
            self.global("torch._utils", "_rebuild_parameter");
            self.op(b'(');
            let inner = Tensor {
                parameter: false,
                requires_grad: false,
                ..t.clone()
            };
            self.plain_tensor(&inner)?;
            self.op(if t.requires_grad { 0x88 } else { 0x89 });
            self.empty_ordered_dict();
            self.op(b't');
            self.op(b'R');
            return Ok(());
        }
        self.plain_tensor(t)
    }

    /// `t`'s storage with the neg and conj bits applied to every whole element of `t.dtype`
    /// (elements of a view sit on that grid from byte 0), shared by every tensor that views
    /// the same storage with the same dtype and bits. Costs one storage, not one view.
    fn resolved_storage(&mut self, t: &Tensor) -> Result<Arc<Storage>> {
        let key = (Arc::as_ptr(&t.storage), t.dtype, t.neg, t.conj);
        if let Some(s) = self.resolved.get(&key) {
            return Ok(s.clone());
        }
        let mut data = t.storage.data.clone();
        let whole = data.len() / t.dtype.size() * t.dtype.size();
        crate::checkpoint::pickle::resolve_neg_conj(t.dtype, t.neg, t.conj, &mut data[..whole])
            .map_err(|e| Error::invalid(e.to_string()))?;
        let s = Arc::new(Storage {
            data,
            key: String::new(),
            location: t.storage.location.clone(),
            dtype: t.storage.dtype,
            untyped: t.storage.untyped,
        });
        self.resolved.insert(key, s.clone());
        Ok(s)
    }

    fn plain_tensor(&mut self, t: &Tensor) -> Result<()> {
        // Resolve neg/conj into a copy of the storage, viewed as before.
        let resolved;
        let t = if t.neg || t.conj {
            resolved = Tensor {
                storage: self.resolved_storage(t)?,
                neg: false,
                conj: false,
                ..t.clone()
            };
            &resolved
        } else {
            t
        };
        let elem = t.dtype.size();
        let typed = !t.storage.untyped && storage_class(t.storage.dtype).is_some();
        if typed && t.storage.data.len() % t.storage.dtype.size() != 0 {
            return Err(Error::invalid(format!(
                "storage of {} bytes is not a whole number of {}",
                t.storage.data.len(),
                t.storage.dtype
            )));
        }
        let v2 = typed && t.dtype == t.storage.dtype;
        if t.shape.len() != t.stride.len() {
            return Err(Error::invalid(format!(
                "tensor size {:?} and stride {:?} have different ranks",
                t.shape, t.stride
            )));
        }
        if t.numel() > 0 {
            let mut last = t.offset as u128;
            for (&n, &s) in t.shape.iter().zip(&t.stride) {
                if n < 0 || s < 0 {
                    return Err(Error::invalid("negative size or stride"));
                }
                last += (n as u128 - 1) * s as u128;
            }
            if (last + 1) * elem as u128 > t.storage.data.len() as u128 {
                return Err(Error::invalid(format!(
                    "tensor view {:?}/{:?} reaches outside its storage",
                    t.shape, t.stride
                )));
            }
        }
        self.global(
            "torch._utils",
            if v2 {
                "_rebuild_tensor_v2"
            } else {
                "_rebuild_tensor_v3"
            },
        );
        self.op(b'(');
        self.persistent_id(&t.storage, !typed)?;
        self.int(t.offset as i64);
        self.tuple_of_ints(&t.shape);
        self.tuple_of_ints(&t.stride);
        self.op(if t.requires_grad { 0x88 } else { 0x89 });
        self.empty_ordered_dict();
        if !v2 {
            self.global("torch", t.dtype.torch_name());
        }
        self.op(b't');
        self.op(b'R');
        Ok(())
    }
}

/// Serialises `value` as a torch.save zip archive into `w`. A value torch could not read back is
/// [`Error::Invalid`]. `w` has no name here, so an I/O error is [`Error::Io`] with an empty
/// path; [`crate::checkpoint::pth::save`] puts the file's path in.
pub fn write(value: &Value, w: &mut dyn Write) -> Result<()> {
    let mut p = Pickler {
        out: b"\x80\x02".to_vec(),
        memo: HashMap::new(),
        storage_keys: HashMap::new(),
        storages: Vec::new(),
        resolved: HashMap::new(),
        _marker: std::marker::PhantomData,
    };
    p.value(value, 0)?;
    p.op(b'.');
    let mut z = ZipWriter {
        w,
        offset: 0,
        entries: Vec::new(),
    };
    z.add("archive/data.pkl", &p.out)?;
    z.add("archive/.format_version", b"1")?;
    z.add("archive/.storage_alignment", b"64")?;
    z.add("archive/byteorder", b"little")?;
    for (i, s) in p.storages.iter().enumerate() {
        z.add(&format!("archive/data/{i}"), &s.data)?;
    }
    z.add("archive/version", b"3\n")?;
    z.finish()
}

struct CdEntry {
    name: String,
    crc: u32,
    size: u64,
    offset: u64,
}

/// A minimal writer of stored zip entries with 64-byte aligned data.
struct ZipWriter<'a> {
    w: &'a mut dyn Write,
    offset: u64,
    entries: Vec<CdEntry>,
}

const U32_MAX: u64 = 0xFFFF_FFFF;

impl ZipWriter<'_> {
    fn put(&mut self, b: &[u8]) -> Result<()> {
        self.w
            .write_all(b)
            .map_err(|e| Error::io(PathBuf::new(), e))?;
        self.offset += b.len() as u64;
        Ok(())
    }

    fn add(&mut self, name: &str, data: &[u8]) -> Result<()> {
        let crc = crc32fast::hash(data);
        let size = data.len() as u64;
        let zip64 = size >= U32_MAX;
        let mut extra = Vec::new();
        if zip64 {
            extra.extend_from_slice(&1u16.to_le_bytes());
            extra.extend_from_slice(&16u16.to_le_bytes());
            extra.extend_from_slice(&size.to_le_bytes());
            extra.extend_from_slice(&size.to_le_bytes());
        }
        // "FB" padding so the data starts on a 64-byte boundary.
        let before = self.offset + 30 + name.len() as u64 + extra.len() as u64 + 4;
        let pad = ((64 - before % 64) % 64) as u16;
        extra.extend_from_slice(&0x4246u16.to_le_bytes());
        extra.extend_from_slice(&pad.to_le_bytes());
        extra.extend(std::iter::repeat_n(b'Z', pad as usize));
        let header_offset = self.offset;
        let mut h = Vec::with_capacity(30 + name.len() + extra.len());
        h.extend_from_slice(&0x04034b50u32.to_le_bytes());
        h.extend_from_slice(&(if zip64 { 45u16 } else { 20u16 }).to_le_bytes());
        h.extend_from_slice(&0x0800u16.to_le_bytes()); // UTF-8 names
        h.extend_from_slice(&0u16.to_le_bytes()); // stored
        h.extend_from_slice(&0u16.to_le_bytes()); // time
        h.extend_from_slice(&0x21u16.to_le_bytes()); // date 1980-01-01
        h.extend_from_slice(&crc.to_le_bytes());
        let s32 = if zip64 { U32_MAX as u32 } else { size as u32 };
        h.extend_from_slice(&s32.to_le_bytes());
        h.extend_from_slice(&s32.to_le_bytes());
        h.extend_from_slice(&(name.len() as u16).to_le_bytes());
        h.extend_from_slice(&(extra.len() as u16).to_le_bytes());
        h.extend_from_slice(name.as_bytes());
        h.extend_from_slice(&extra);
        self.put(&h)?;
        debug_assert_eq!(self.offset % 64, 0);
        self.put(data)?;
        self.entries.push(CdEntry {
            name: name.to_string(),
            crc,
            size,
            offset: header_offset,
        });
        Ok(())
    }

    fn finish(mut self) -> Result<()> {
        let cd_start = self.offset;
        let entries = std::mem::take(&mut self.entries);
        for e in &entries {
            let big_size = e.size >= U32_MAX;
            let big_off = e.offset >= U32_MAX;
            let mut extra = Vec::new();
            if big_size {
                extra.extend_from_slice(&e.size.to_le_bytes());
                extra.extend_from_slice(&e.size.to_le_bytes());
            }
            if big_off {
                extra.extend_from_slice(&e.offset.to_le_bytes());
            }
            if !extra.is_empty() {
                let mut x = Vec::new();
                x.extend_from_slice(&1u16.to_le_bytes());
                x.extend_from_slice(&(extra.len() as u16).to_le_bytes());
                x.extend_from_slice(&extra);
                extra = x;
            }
            let zip64 = big_size || big_off;
            let mut h = Vec::new();
            h.extend_from_slice(&0x02014b50u32.to_le_bytes());
            h.extend_from_slice(&(0x0300u16 | if zip64 { 45 } else { 20 }).to_le_bytes()); // made by: unix
            h.extend_from_slice(&(if zip64 { 45u16 } else { 20u16 }).to_le_bytes());
            h.extend_from_slice(&0x0800u16.to_le_bytes());
            h.extend_from_slice(&0u16.to_le_bytes());
            h.extend_from_slice(&0u16.to_le_bytes());
            h.extend_from_slice(&0x21u16.to_le_bytes());
            h.extend_from_slice(&e.crc.to_le_bytes());
            let s32 = if big_size {
                U32_MAX as u32
            } else {
                e.size as u32
            };
            h.extend_from_slice(&s32.to_le_bytes());
            h.extend_from_slice(&s32.to_le_bytes());
            h.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
            h.extend_from_slice(&(extra.len() as u16).to_le_bytes());
            h.extend_from_slice(&0u16.to_le_bytes()); // comment
            h.extend_from_slice(&0u16.to_le_bytes()); // disk
            h.extend_from_slice(&0u16.to_le_bytes()); // internal attributes
            h.extend_from_slice(&0u32.to_le_bytes()); // external attributes
            let o32 = if big_off {
                U32_MAX as u32
            } else {
                e.offset as u32
            };
            h.extend_from_slice(&o32.to_le_bytes());
            h.extend_from_slice(e.name.as_bytes());
            h.extend_from_slice(&extra);
            self.put(&h)?;
        }
        let cd_size = self.offset - cd_start;
        let eocd64_offset = self.offset;
        let n = entries.len() as u64;
        // zip64 end of central directory record and locator, always (as torch writes them).
        let mut h = Vec::new();
        h.extend_from_slice(&0x06064b50u32.to_le_bytes());
        h.extend_from_slice(&44u64.to_le_bytes());
        h.extend_from_slice(&0x032Du16.to_le_bytes());
        h.extend_from_slice(&45u16.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
        h.extend_from_slice(&n.to_le_bytes());
        h.extend_from_slice(&n.to_le_bytes());
        h.extend_from_slice(&cd_size.to_le_bytes());
        h.extend_from_slice(&cd_start.to_le_bytes());
        h.extend_from_slice(&0x07064b50u32.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
        h.extend_from_slice(&eocd64_offset.to_le_bytes());
        h.extend_from_slice(&1u32.to_le_bytes());
        // Classic end of central directory.
        h.extend_from_slice(&0x06054b50u32.to_le_bytes());
        h.extend_from_slice(&0u16.to_le_bytes());
        h.extend_from_slice(&0u16.to_le_bytes());
        let n16 = n.min(0xFFFF) as u16;
        h.extend_from_slice(&n16.to_le_bytes());
        h.extend_from_slice(&n16.to_le_bytes());
        h.extend_from_slice(&(cd_size.min(U32_MAX) as u32).to_le_bytes());
        h.extend_from_slice(&(cd_start.min(U32_MAX) as u32).to_le_bytes());
        h.extend_from_slice(&0u16.to_le_bytes());
        self.put(&h)
    }
}
