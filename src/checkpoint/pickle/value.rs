//! The value tree a pickle becomes: [`Value`] and its parts ([`BigInt`], [`Dict`], [`Storage`],
//! [`Tensor`]); a tensor's logical values as bytes ([`Tensor::to_raw`]: gathered by stride, then
//! the neg and conj bits applied); and [`Value::tensors`], every tensor with its dotted name.

use crate::checkpoint::raw::{checked_numel, DType, RawTensor};
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// A Python value as `torch.load(weights_only=True)` would build it. Shared references in the
/// pickle are shared `Arc`s here (the same Parameter under two keys is one `Arc<Tensor>`).
#[derive(Debug, Clone)]
pub enum Value {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An `int` within i64.
    Int(i64),
    /// An integer outside i64 (LONG1 with up to 255 bytes).
    BigInt(BigInt),
    /// A `float` (BINFLOAT: an IEEE double, bits kept).
    Float(f64),
    /// A `complex` (real, imaginary), rebuilt by `builtins.complex`.
    Complex(f64, f64),
    /// A `str`.
    Str(Arc<str>),
    /// A `bytes`.
    Bytes(Arc<[u8]>),
    /// A `bytearray`.
    ByteArray(Arc<[u8]>),
    /// A `list`.
    List(Arc<[Value]>),
    /// A `tuple`.
    Tuple(Arc<[Value]>),
    /// A `set` or `frozenset`, in insertion order.
    Set(Arc<[Value]>),
    /// `torch.Size`, a tuple of ints.
    Size(Arc<[i64]>),
    /// A `dict`, `OrderedDict` or `Counter`.
    Dict(Arc<Dict>),
    /// A tensor or `nn.Parameter` (`torch._utils._rebuild_tensor_v2` / `_rebuild_parameter`).
    Tensor(Arc<Tensor>),
    /// A storage saved on its own (`torch.save(t.untyped_storage())`).
    Storage(Arc<Storage>),
    /// `torch.device`, as `cpu` or `cuda:0`.
    Device(Arc<str>),
    /// A symbolic allowlisted global that is data, not code: a dtype (`torch.float16`), a
    /// qscheme, a class name. Never called.
    Global(&'static str),
}

/// An integer too large for i64: two's-complement little-endian bytes, as LONG1 stores them.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct BigInt(pub Arc<[u8]>);

impl BigInt {
    /// Whether the two's-complement value is below zero (the top bit of the last byte).
    pub fn is_negative(&self) -> bool {
        self.0.last().is_some_and(|b| b & 0x80 != 0)
    }
}

impl fmt::Display for BigInt {
    /// Decimal, by repeated division of the magnitude by 10^9.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let neg = self.is_negative();
        let mut mag: Vec<u8> = self.0.to_vec();
        if neg {
            // Two's complement negation.
            let mut carry = 1u16;
            for b in mag.iter_mut() {
                let v = (!*b) as u16 + carry;
                *b = v as u8;
                carry = v >> 8;
            }
        }
        // Big-endian u32 limbs for simple long division.
        let mut limbs: Vec<u32> = mag
            .chunks(4)
            .rev()
            .map(|c| c.iter().rev().fold(0u32, |acc, &b| (acc << 8) | b as u32))
            .collect();
        let mut parts = Vec::new();
        while limbs.iter().any(|&l| l != 0) {
            let mut rem = 0u64;
            for l in limbs.iter_mut() {
                let cur = (rem << 32) | *l as u64;
                *l = (cur / 1_000_000_000) as u32;
                rem = cur % 1_000_000_000;
            }
            parts.push(rem as u32);
        }
        let mut s = String::new();
        if neg {
            s.push('-');
        }
        match parts.split_last() {
            None => s.push('0'),
            Some((first, rest)) => {
                s.push_str(&first.to_string());
                for p in rest.iter().rev() {
                    s.push_str(&format!("{p:09}"));
                }
            }
        }
        f.write_str(&s)
    }
}

impl fmt::Debug for BigInt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BigInt({self})")
    }
}

/// Which Python mapping type a [`Dict`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DictKind {
    /// `builtins.dict`.
    Dict,
    /// `collections.OrderedDict` (what `state_dict()` returns).
    OrderedDict,
    /// `collections.Counter`.
    Counter,
}

/// A dict, OrderedDict or Counter: entries in insertion order, plus the attributes BUILD set on
/// an OrderedDict (a state_dict's `_metadata`), which are *not* keys.
#[derive(Debug, Clone)]
pub struct Dict {
    /// Which mapping type.
    pub kind: DictKind,
    /// (key, value) pairs in insertion order; a repeated key keeps its first position and its
    /// last value, as Python's dict does.
    pub entries: Vec<(Value, Value)>,
    /// Attributes BUILD set (name, value), in order.
    pub attrs: Vec<(Value, Value)>,
}

impl Dict {
    /// An empty mapping of this kind.
    pub fn new(kind: DictKind) -> Self {
        Dict {
            kind,
            entries: Vec::new(),
            attrs: Vec::new(),
        }
    }
    /// The value under a string key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.entries
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }
    /// An attribute set by BUILD (e.g. `_metadata`).
    pub fn attr(&self, name: &str) -> Option<&Value> {
        self.attrs
            .iter()
            .find(|(k, _)| k.as_str() == Some(name))
            .map(|(_, v)| v)
    }
}

/// One storage record, loaded into memory in little-endian byte order.
#[derive(Debug)]
pub struct Storage {
    /// The record key (`data/<key>` in a zip file, a decimal address in a legacy file).
    pub key: String,
    /// Element type named by the storage type (`torch.FloatStorage` → float32);
    /// `torch.storage.UntypedStorage` is bytes (uint8).
    pub dtype: DType,
    /// The persistent id names `torch.storage.UntypedStorage` (elements are bytes; a tensor
    /// over it reinterprets them as its own dtype).
    pub untyped: bool,
    /// `cpu`, `cuda:0`, …: kept as metadata; data is always in host memory.
    pub location: String,
    /// The record's bytes, little-endian (records of a file saved big-endian are swapped when read).
    pub data: Vec<u8>,
}

/// A tensor: a strided view of a storage, as `_rebuild_tensor_v2/v3` describe it. Offset, shape
/// and stride are in elements of `dtype`. Validated: ranks equal, all values non-negative and
/// every element inside the storage.
#[derive(Debug, Clone)]
pub struct Tensor {
    /// The storage it views (shared with every other view of it).
    pub storage: Arc<Storage>,
    /// Element type of the view (the storage's, or a reinterpretation of untyped bytes).
    pub dtype: DType,
    /// `storage_offset()`, in elements.
    pub offset: usize,
    /// `size()`.
    pub shape: Vec<i64>,
    /// `stride()`, in elements; 0 repeats an element (`expand`).
    pub stride: Vec<i64>,
    /// `requires_grad` as saved.
    pub requires_grad: bool,
    /// Rebuilt through `_rebuild_parameter` (an `nn.Parameter`).
    pub parameter: bool,
    /// The logical value is the negation of the stored one (`{'neg': True}` metadata).
    pub neg: bool,
    /// The logical value is the complex conjugate of the stored one (`{'conj': True}`).
    pub conj: bool,
}

impl Tensor {
    /// The number of elements of the view (0 if the product overflows, which validation refuses).
    pub fn numel(&self) -> usize {
        checked_numel(&self.shape).unwrap_or(0)
    }

    /// Whether the view is C-contiguous (a plain reshape of consecutive elements).
    pub fn is_contiguous(&self) -> bool {
        let mut expect = 1i64;
        for (&n, &s) in self.shape.iter().zip(&self.stride).rev() {
            if n != 1 && s != expect {
                return false;
            }
            expect = expect.saturating_mul(n);
        }
        true
    }

    /// The logical values as a C-contiguous little-endian [`RawTensor`]: gathered by stride (0,
    /// transposed and channels_last strides included), with the neg and conj bits applied.
    pub fn to_raw(&self) -> Result<RawTensor> {
        let elem = self.dtype.size();
        let numel = checked_numel(&self.shape)
            .ok_or_else(|| Error::pickle(format!("shape {:?} overflows", self.shape)))?;
        // Callers charge the size to a reading budget first (`budget::materialise_tensor`);
        // an allocation the system refuses anyway is an error here, never an abort.
        let bytes = numel
            .checked_mul(elem)
            .ok_or_else(|| Error::pickle(format!("shape {:?} overflows", self.shape)))?;
        let mut out = Vec::new();
        out.try_reserve_exact(bytes).map_err(|_| {
            Error::pickle(format!(
                "cannot allocate {bytes} bytes for a {} tensor of shape {:?}",
                self.dtype, self.shape
            ))
        })?;
        if numel > 0 {
            gather(
                &self.storage.data,
                self.offset,
                &self.shape,
                &self.stride,
                elem,
                &mut out,
            )?;
        }
        resolve_neg_conj(self.dtype, self.neg, self.conj, &mut out)?;
        RawTensor::new(self.dtype, self.shape.clone(), out)
            .map_err(|e| Error::pickle(e.to_string()))
    }
}

/// Appends the elements of the strided view to `out`, copying whole runs where the innermost
/// dimension is contiguous. Bounds were checked when the tensor was built; they are checked
/// again here (slice indexing never panics: `get` is used).
fn gather(
    data: &[u8],
    offset: usize,
    shape: &[i64],
    stride: &[i64],
    elem: usize,
    out: &mut Vec<u8>,
) -> Result<()> {
    let oob = || Error::pickle("tensor view reaches outside its storage");
    // Size-1 dimensions never move the address: drop them, so the work per element does not
    // grow with a rank of thousands of 1s.
    let (shape, stride): (Vec<i64>, Vec<i64>) = shape
        .iter()
        .zip(stride)
        .filter(|(&n, _)| n != 1)
        .map(|(&n, &s)| (n, s))
        .unzip();
    let rank = shape.len();
    if rank == 0 {
        let start = offset.checked_mul(elem).ok_or_else(oob)?;
        out.extend_from_slice(data.get(start..start + elem).ok_or_else(oob)?);
        return Ok(());
    }
    let shape: Vec<usize> = shape.iter().map(|&n| n as usize).collect();
    let stride: Vec<usize> = stride.iter().map(|&s| s as usize).collect();
    let inner = shape[rank - 1];
    let inner_stride = stride[rank - 1];
    let mut idx = vec![0usize; rank - 1];
    loop {
        let mut base = offset;
        for d in 0..rank - 1 {
            base = base
                .checked_add(idx[d].checked_mul(stride[d]).ok_or_else(oob)?)
                .ok_or_else(oob)?;
        }
        if inner_stride == 1 {
            let start = base.checked_mul(elem).ok_or_else(oob)?;
            let end = start.checked_add(inner * elem).ok_or_else(oob)?;
            out.extend_from_slice(data.get(start..end).ok_or_else(oob)?);
        } else {
            for i in 0..inner {
                let at = base
                    .checked_add(i.checked_mul(inner_stride).ok_or_else(oob)?)
                    .ok_or_else(oob)?;
                let start = at.checked_mul(elem).ok_or_else(oob)?;
                out.extend_from_slice(data.get(start..start + elem).ok_or_else(oob)?);
            }
        }
        // Advance the outer multi-index (row-major).
        let mut d = rank - 1;
        loop {
            if d == 0 {
                return Ok(());
            }
            d -= 1;
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

/// Applies the neg and conj bits to C-contiguous little-endian elements of `dtype`, in place.
pub(crate) fn resolve_neg_conj(dtype: DType, neg: bool, conj: bool, data: &mut [u8]) -> Result<()> {
    if neg {
        negate(dtype, data)?;
    }
    if conj {
        conjugate(dtype, data)?;
    }
    Ok(())
}

/// `-x` elementwise, bit-exact with torch's `resolve_neg()`: floats flip the sign bit (the fnuz
/// float8 types have no negative zero), integers wrap, complex numbers negate both parts.
fn negate(dtype: DType, data: &mut [u8]) -> Result<()> {
    use DType::*;
    match dtype {
        F16 | BF16 | F32 | F64 | F8E5M2 | F8E4M3 | C32 | C64 | C128 => {
            let unit = dtype.swap_unit();
            for x in data.chunks_exact_mut(unit) {
                x[unit - 1] ^= 0x80;
            }
        }
        F8E5M2FNUZ | F8E4M3FNUZ => {
            for b in data.iter_mut() {
                if *b & 0x7f != 0 {
                    *b ^= 0x80;
                }
            }
        }
        U8 | I8 => data.iter_mut().for_each(|b| *b = b.wrapping_neg()),
        I16 | U16 => data.chunks_exact_mut(2).for_each(|c| {
            let v = u16::from_le_bytes([c[0], c[1]]).wrapping_neg();
            c.copy_from_slice(&v.to_le_bytes());
        }),
        I32 | U32 => data.chunks_exact_mut(4).for_each(|c| {
            let v = u32::from_le_bytes([c[0], c[1], c[2], c[3]]).wrapping_neg();
            c.copy_from_slice(&v.to_le_bytes());
        }),
        I64 | U64 => data.chunks_exact_mut(8).for_each(|c| {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            c.copy_from_slice(&u64::from_le_bytes(b).wrapping_neg().to_le_bytes());
        }),
        Bool | F8E8M0 => {
            return Err(Error::pickle(format!(
                "the neg bit is set on a {dtype} tensor, which has no negation"
            )))
        }
    }
    Ok(())
}

/// Complex conjugate: flips the sign of every imaginary part.
fn conjugate(dtype: DType, data: &mut [u8]) -> Result<()> {
    match dtype {
        DType::C32 | DType::C64 | DType::C128 => {
            let unit = dtype.size();
            for x in data.chunks_exact_mut(unit) {
                x[unit - 1] ^= 0x80;
            }
            Ok(())
        }
        _ => Err(Error::pickle(format!(
            "the conj bit is set on a {dtype} tensor; only complex tensors have one"
        ))),
    }
}

impl Value {
    /// Python's type name, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::BigInt(_) => "int",
            Value::Float(_) => "float",
            Value::Complex(..) => "complex",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::ByteArray(_) => "bytearray",
            Value::Size(_) => "torch.Size",
            Value::List(_) => "list",
            Value::Tuple(_) => "tuple",
            Value::Set(_) => "set",
            Value::Dict(d) => match d.kind {
                DictKind::Dict => "dict",
                DictKind::OrderedDict => "OrderedDict",
                DictKind::Counter => "Counter",
            },
            Value::Tensor(t) if t.parameter => "Parameter",
            Value::Tensor(_) => "Tensor",
            Value::Storage(_) => "Storage",
            Value::Device(_) => "device",
            Value::Global(_) => "global",
        }
    }

    /// The text of a `str`.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The mapping of a dict, OrderedDict or Counter.
    pub fn as_dict(&self) -> Option<&Dict> {
        match self {
            Value::Dict(d) => Some(d),
            _ => None,
        }
    }

    /// The tensor, if this is one.
    pub fn as_tensor(&self) -> Option<&Arc<Tensor>> {
        match self {
            Value::Tensor(t) => Some(t),
            _ => None,
        }
    }

    /// A dict key or list index as written in a dotted path: strings as is, integers in decimal.
    pub fn key_string(&self) -> Option<String> {
        match self {
            Value::Str(s) => Some(s.to_string()),
            Value::Int(i) => Some(i.to_string()),
            Value::BigInt(b) => Some(b.to_string()),
            Value::Bool(b) => Some(if *b { "True" } else { "False" }.into()),
            _ => None,
        }
    }

    /// The sub-tree at a dotted path such as `model_state_dict` or `optimizer_state_dict.state.0`.
    /// Dict keys may contain dots themselves (`encoder.weight`): at each dict the longest key
    /// that matches a dot-separated prefix of the rest wins. List and tuple items are indexed by
    /// number. The empty path is the value itself.
    pub fn get_path(&self, path: &str) -> Option<&Value> {
        if path.is_empty() {
            return Some(self);
        }
        match self {
            Value::Dict(d) => {
                // Candidate split points: the whole rest, then each '.' from the right.
                let mut cuts: Vec<usize> = path.match_indices('.').map(|(i, _)| i).collect();
                cuts.push(path.len());
                for &cut in cuts.iter().rev() {
                    let (head, rest) = (&path[..cut], path.get(cut + 1..).unwrap_or(""));
                    if let Some((_, v)) = d
                        .entries
                        .iter()
                        .find(|(k, _)| k.key_string().as_deref() == Some(head))
                    {
                        if let Some(found) = v.get_path(rest) {
                            return Some(found);
                        }
                    }
                }
                None
            }
            Value::List(items) | Value::Tuple(items) => {
                let (head, rest) = path.split_once('.').unwrap_or((path, ""));
                let i: usize = head.parse().ok()?;
                items.get(i)?.get_path(rest)
            }
            _ => None,
        }
    }

    /// Every tensor under this value with its dotted name (dict keys and list indices joined by
    /// `.`), depth first in file order. Shared sub-trees are visited once per reference, so the
    /// walk is bounded by `max_visits` nodes (a memo bomb expands exponentially).
    /// Names take at most `Limits::default().max_name_bytes` bytes in all.
    pub fn tensors(&self, max_visits: u64) -> Result<Vec<(String, Arc<Tensor>)>> {
        self.tensors_within(max_visits, DEFAULT_MAX_NAME_BYTES)
    }

    /// As [`Value::tensors`], within `max_visits` nodes and `max_name_bytes` bytes of names in
    /// all (`Limits::max_visits` and `Limits::max_name_bytes`): a long key under deep nesting,
    /// or a shared sub-tree reached many times, would otherwise make names far larger than the
    /// file.
    pub fn tensors_within(
        &self,
        max_visits: u64,
        max_name_bytes: u64,
    ) -> Result<Vec<(String, Arc<Tensor>)>> {
        let mut w = TensorWalk {
            out: Vec::new(),
            visits: 0,
            max: max_visits,
            name_bytes: 0,
            max_name_bytes,
            has: HashMap::new(),
            name: String::new(),
        };
        w.walk(self)?;
        Ok(w.out)
    }
}

/// The default of `Limits::max_name_bytes`: 64 MiB of dotted names (a million 64-byte names).
pub const DEFAULT_MAX_NAME_BYTES: u64 = 64 << 20;

/// Depth-first tensor collection. Sub-trees without tensors are skipped after one look (cached by
/// pointer), so a tensor-free memo bomb costs its size, not its expansion; sub-trees with
/// tensors are walked once per reference, bounded by `max` visits.
struct TensorWalk {
    out: Vec<(String, Arc<Tensor>)>,
    visits: u64,
    max: u64,
    /// Bytes of the names in `out` plus the current one.
    name_bytes: u64,
    max_name_bytes: u64,
    has: HashMap<usize, bool>,
    name: String,
}

impl TensorWalk {
    fn has_tensor(&mut self, v: &Value) -> bool {
        let (ptr, items): (usize, Vec<&Value>) = match v {
            Value::Tensor(_) => return true,
            Value::Dict(d) => (
                Arc::as_ptr(d) as usize,
                d.entries.iter().map(|(_, x)| x).collect(),
            ),
            Value::List(l) | Value::Tuple(l) => {
                (Arc::as_ptr(l) as *const Value as usize, l.iter().collect())
            }
            _ => return false,
        };
        if let Some(&h) = self.has.get(&ptr) {
            return h;
        }
        let h = items.into_iter().any(|x| self.has_tensor(x));
        self.has.insert(ptr, h);
        h
    }

    fn child(&mut self, key: &str, v: &Value) -> Result<()> {
        let len = self.name.len();
        self.check_names(key.len() as u64 + 1)?;
        if len > 0 {
            self.name.push('.');
        }
        self.name.push_str(key);
        let r = self.walk(v);
        self.name.truncate(len);
        r
    }

    /// Refuses `more` bytes of names beyond what is already held (`out` and the current name).
    fn check_names(&self, more: u64) -> Result<()> {
        let total = self
            .name_bytes
            .saturating_add(self.name.len() as u64)
            .saturating_add(more);
        if total > self.max_name_bytes {
            return Err(Error::pickle(format!(
                "the checkpoint expands to more than {} bytes of dotted tensor names (long keys, \
                 deep nesting or a shared sub-tree reached many times); refusing",
                self.max_name_bytes
            )));
        }
        Ok(())
    }

    fn walk(&mut self, v: &Value) -> Result<()> {
        self.visits += 1;
        if self.visits > self.max {
            return Err(Error::pickle(format!(
                "the checkpoint expands to more than {} values (shared references are walked once per use); refusing",
                self.max
            )));
        }
        if !self.has_tensor(v) {
            return Ok(());
        }
        match v {
            Value::Tensor(t) => {
                self.check_names(self.name.len() as u64)?;
                self.name_bytes += self.name.len() as u64;
                self.out.push((self.name.clone(), t.clone()))
            }
            Value::Dict(d) => {
                for (k, x) in &d.entries {
                    let k = k
                        .key_string()
                        .unwrap_or_else(|| format!("<{}>", k.type_name()));
                    self.child(&k, x)?;
                }
            }
            Value::List(items) | Value::Tuple(items) => {
                for (i, x) in items.iter().enumerate() {
                    self.child(&i.to_string(), x)?;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// Wraps a contiguous raw tensor as a [`Value::Tensor`] with its own storage (for writing).
impl From<RawTensor> for Tensor {
    fn from(raw: RawTensor) -> Self {
        let mut stride = vec![0i64; raw.shape.len()];
        let mut acc = 1i64;
        for (s, &n) in stride.iter_mut().zip(&raw.shape).rev() {
            *s = acc;
            acc = acc.saturating_mul(n.max(1));
        }
        let storage = Arc::new(Storage {
            key: String::new(),
            dtype: raw.dtype,
            untyped: false,
            location: "cpu".into(),
            data: raw.data,
        });
        Tensor {
            storage,
            dtype: raw.dtype,
            offset: 0,
            shape: raw.shape,
            stride,
            requires_grad: false,
            parameter: false,
            neg: false,
            conj: false,
        }
    }
}
