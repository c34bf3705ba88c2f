//! The pickle subset that `torch.load(weights_only=True)` accepts, interpreted safely
//! (../shared/FORMATS.md §1.4–1.8), and the value tree it produces.
//!
//! Safety model, copied from torch/_weights_only_unpickler.py (torch 2.13):
//! - exactly the same 34 opcodes; anything else is an error naming the opcode;
//! - `GLOBAL module\nname\n` is looked up in the same 144-name allowlist and kept *symbolic*
//!   (an index into that list); `sys`, `os`, `posix`, `nt` are always blocked. Nothing is ever
//!   imported or called: REDUCE / NEWOBJ / BUILD are interpreted here only for the allowlisted
//!   callables whose meaning is known (tensor rebuild functions, OrderedDict, `_codecs.encode`,
//!   `set`, `complex`, `torch.Size`, `torch.device`, …), with arity and type checks;
//! - APPEND/APPENDS only on lists, SETITEM/SETITEMS only on dicts, BUILD only on OrderedDict
//!   (which sets *attributes* such as `_metadata`, never keys), BINPERSID only for
//!   `('storage', type, key, location, numel[, view])` tuples.
//!
//! Unlike torch, hostile input fails fast in bounded memory: [`Limits`] caps operations, stack,
//! memo entries, allocated objects, nesting depth and container sizes; strings are never longer
//! than the bytes that remain. Objects live in an arena and the memo holds indices into it, so
//! repeated references (BINGET) are shared, never deep-copied: a 2^60 "memo bomb" costs a few
//! hundred objects. The arena drops flat (no recursion), and [`Pickle::into_value`] turns it into
//! a [`Value`] tree whose shared nodes stay shared (`Arc`), rejecting cycles and deep nesting.
//!
//! Tensors are validated here (dtype, ranks, non-negative sizes/strides/offset, view inside the
//! storage, neg/conj bits) and materialised by gathering with [`Tensor::to_raw`]. Storage bytes
//! come from the container ([`crate::checkpoint::pth`]); this module never touches files and never needs
//! libtorch.

use crate::checkpoint::raw::{checked_numel, DType, RawTensor};
use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::sync::Arc;

/// An error from parsing a pickle or validating what it describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PickleError(pub String);

impl fmt::Display for PickleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PickleError {}

type Res<T> = std::result::Result<T, PickleError>;

fn err<T>(msg: impl Into<String>) -> Res<T> {
    Err(PickleError(msg.into()))
}

// ------------------------------------------------------------------------------------------
// The value tree
// ------------------------------------------------------------------------------------------

/// A Python value as `torch.load(weights_only=True)` would build it. Shared references in the
/// pickle are shared `Arc`s here (the same Parameter under two keys is one `Arc<Tensor>`).
#[derive(Debug, Clone)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer outside i64 (LONG1 with up to 255 bytes).
    BigInt(BigInt),
    Float(f64),
    Complex(f64, f64),
    Str(Arc<str>),
    Bytes(Arc<[u8]>),
    ByteArray(Arc<[u8]>),
    List(Arc<[Value]>),
    Tuple(Arc<[Value]>),
    Set(Arc<[Value]>),
    /// `torch.Size`, a tuple of ints.
    Size(Arc<[i64]>),
    Dict(Arc<Dict>),
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
    Dict,
    OrderedDict,
    Counter,
}

/// A dict, OrderedDict or Counter: entries in insertion order, plus the attributes BUILD set on
/// an OrderedDict (a state_dict's `_metadata`), which are *not* keys.
#[derive(Debug, Clone)]
pub struct Dict {
    pub kind: DictKind,
    pub entries: Vec<(Value, Value)>,
    pub attrs: Vec<(Value, Value)>,
}

impl Dict {
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
    pub untyped: bool,
    /// `cpu`, `cuda:0`, …: kept as metadata; data is always in host memory.
    pub location: String,
    pub data: Vec<u8>,
}

/// A tensor: a strided view of a storage, as `_rebuild_tensor_v2/v3` describe it. Offset, shape
/// and stride are in elements of `dtype`. Validated: ranks equal, all values non-negative and
/// every element inside the storage.
#[derive(Debug, Clone)]
pub struct Tensor {
    pub storage: Arc<Storage>,
    pub dtype: DType,
    pub offset: usize,
    pub shape: Vec<i64>,
    pub stride: Vec<i64>,
    pub requires_grad: bool,
    /// Rebuilt through `_rebuild_parameter` (an `nn.Parameter`).
    pub parameter: bool,
    /// The logical value is the negation of the stored one (`{'neg': True}` metadata).
    pub neg: bool,
    /// The logical value is the complex conjugate of the stored one (`{'conj': True}`).
    pub conj: bool,
}

impl Tensor {
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
    pub fn to_raw(&self) -> Res<RawTensor> {
        let elem = self.dtype.size();
        let numel = checked_numel(&self.shape)
            .ok_or_else(|| PickleError(format!("shape {:?} overflows", self.shape)))?;
        let mut out = Vec::with_capacity(numel.saturating_mul(elem));
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
        if self.neg {
            negate(self.dtype, &mut out)?;
        }
        if self.conj {
            conjugate(self.dtype, &mut out)?;
        }
        RawTensor::new(self.dtype, self.shape.clone(), out).map_err(|e| PickleError(e.to_string()))
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
) -> Res<()> {
    let oob = || PickleError("tensor view reaches outside its storage".into());
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

/// `-x` elementwise, bit-exact with torch's `resolve_neg()`: floats flip the sign bit (the fnuz
/// float8 types have no negative zero), integers wrap, complex numbers negate both parts.
fn negate(dtype: DType, data: &mut [u8]) -> Res<()> {
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
            return err(format!(
                "the neg bit is set on a {dtype} tensor, which has no negation"
            ))
        }
    }
    Ok(())
}

/// Complex conjugate: flips the sign of every imaginary part.
fn conjugate(dtype: DType, data: &mut [u8]) -> Res<()> {
    match dtype {
        DType::C32 | DType::C64 | DType::C128 => {
            let unit = dtype.size();
            for x in data.chunks_exact_mut(unit) {
                x[unit - 1] ^= 0x80;
            }
            Ok(())
        }
        _ => err(format!(
            "the conj bit is set on a {dtype} tensor; only complex tensors have one"
        )),
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

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_dict(&self) -> Option<&Dict> {
        match self {
            Value::Dict(d) => Some(d),
            _ => None,
        }
    }

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
    pub fn tensors(&self, max_visits: u64) -> Res<Vec<(String, Arc<Tensor>)>> {
        let mut w = TensorWalk {
            out: Vec::new(),
            visits: 0,
            max: max_visits,
            has: HashMap::new(),
            name: String::new(),
        };
        w.walk(self)?;
        Ok(w.out)
    }
}

/// Depth-first tensor collection. Sub-trees without tensors are skipped after one look (cached by
/// pointer), so a tensor-free memo bomb costs its size, not its expansion; sub-trees with
/// tensors are walked once per reference, bounded by `max` visits.
struct TensorWalk {
    out: Vec<(String, Arc<Tensor>)>,
    visits: u64,
    max: u64,
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

    fn child(&mut self, key: &str, v: &Value) -> Res<()> {
        let len = self.name.len();
        if len > 0 {
            self.name.push('.');
        }
        self.name.push_str(key);
        let r = self.walk(v);
        self.name.truncate(len);
        r
    }

    fn walk(&mut self, v: &Value) -> Res<()> {
        self.visits += 1;
        if self.visits > self.max {
            return err(format!(
                "the checkpoint expands to more than {} values (shared references are walked once per use); refusing",
                self.max
            ));
        }
        if !self.has_tensor(v) {
            return Ok(());
        }
        match v {
            Value::Tensor(t) => self.out.push((self.name.clone(), t.clone())),
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

// ------------------------------------------------------------------------------------------
// Allowlist (torch._weights_only_unpickler._get_allowed_globals(), torch 2.13: 144 names)
// ------------------------------------------------------------------------------------------

/// Every global `torch.load(weights_only=True)` allows by default, as `module.name`.
pub const ALLOWED_GLOBALS: [&str; 144] = [
    "_codecs.encode",
    "builtins.bytearray",
    "builtins.complex",
    "builtins.set",
    "collections.Counter",
    "collections.OrderedDict",
    "torch.BFloat16Storage",
    "torch.BFloat16Tensor",
    "torch.BoolStorage",
    "torch.BoolTensor",
    "torch.ByteStorage",
    "torch.ByteTensor",
    "torch.CharStorage",
    "torch.CharTensor",
    "torch.ComplexDoubleStorage",
    "torch.ComplexFloatStorage",
    "torch.DoubleStorage",
    "torch.DoubleTensor",
    "torch.FloatStorage",
    "torch.FloatTensor",
    "torch.HalfStorage",
    "torch.HalfTensor",
    "torch.IntStorage",
    "torch.IntTensor",
    "torch.LongStorage",
    "torch.LongTensor",
    "torch.QInt32Storage",
    "torch.QInt8Storage",
    "torch.QUInt2x4Storage",
    "torch.QUInt4x2Storage",
    "torch.QUInt8Storage",
    "torch.ShortStorage",
    "torch.ShortTensor",
    "torch.Size",
    "torch.Tensor",
    "torch._tensor._rebuild_from_type_v2",
    "torch._utils._rebuild_device_tensor_from_cpu_tensor",
    "torch._utils._rebuild_device_tensor_from_numpy",
    "torch._utils._rebuild_meta_tensor_no_storage",
    "torch._utils._rebuild_nested_tensor",
    "torch._utils._rebuild_parameter",
    "torch._utils._rebuild_parameter_with_state",
    "torch._utils._rebuild_qtensor",
    "torch._utils._rebuild_sparse_tensor",
    "torch._utils._rebuild_tensor",
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_tensor_v3",
    "torch._utils._rebuild_wrapper_subclass",
    "torch.bfloat16",
    "torch.bits16",
    "torch.bits1x8",
    "torch.bits2x4",
    "torch.bits4x2",
    "torch.bits8",
    "torch.bool",
    "torch.complex128",
    "torch.complex32",
    "torch.complex64",
    "torch.cuda.BFloat16Storage",
    "torch.cuda.BFloat16Tensor",
    "torch.cuda.BoolStorage",
    "torch.cuda.BoolTensor",
    "torch.cuda.ByteStorage",
    "torch.cuda.ByteTensor",
    "torch.cuda.CharStorage",
    "torch.cuda.CharTensor",
    "torch.cuda.ComplexDoubleStorage",
    "torch.cuda.ComplexFloatStorage",
    "torch.cuda.DoubleStorage",
    "torch.cuda.DoubleTensor",
    "torch.cuda.FloatStorage",
    "torch.cuda.FloatTensor",
    "torch.cuda.HalfStorage",
    "torch.cuda.HalfTensor",
    "torch.cuda.IntStorage",
    "torch.cuda.IntTensor",
    "torch.cuda.LongStorage",
    "torch.cuda.LongTensor",
    "torch.cuda.ShortStorage",
    "torch.cuda.ShortTensor",
    "torch.cuda.sparse.BFloat16Tensor",
    "torch.cuda.sparse.ByteTensor",
    "torch.cuda.sparse.CharTensor",
    "torch.cuda.sparse.DoubleTensor",
    "torch.cuda.sparse.FloatTensor",
    "torch.cuda.sparse.HalfTensor",
    "torch.cuda.sparse.IntTensor",
    "torch.cuda.sparse.LongTensor",
    "torch.cuda.sparse.ShortTensor",
    "torch.device",
    "torch.float16",
    "torch.float32",
    "torch.float4_e2m1fn_x2",
    "torch.float64",
    "torch.float8_e4m3fn",
    "torch.float8_e4m3fnuz",
    "torch.float8_e5m2",
    "torch.float8_e5m2fnuz",
    "torch.float8_e8m0fnu",
    "torch.int1",
    "torch.int16",
    "torch.int2",
    "torch.int3",
    "torch.int32",
    "torch.int4",
    "torch.int5",
    "torch.int6",
    "torch.int64",
    "torch.int7",
    "torch.int8",
    "torch.nn.parameter.Parameter",
    "torch.per_channel_affine",
    "torch.per_channel_affine_float_qparams",
    "torch.per_channel_symmetric",
    "torch.per_tensor_affine",
    "torch.per_tensor_symmetric",
    "torch.qint32",
    "torch.qint8",
    "torch.quint2x4",
    "torch.quint4x2",
    "torch.quint8",
    "torch.serialization._get_layout",
    "torch.sparse.BFloat16Tensor",
    "torch.sparse.ByteTensor",
    "torch.sparse.CharTensor",
    "torch.sparse.DoubleTensor",
    "torch.sparse.FloatTensor",
    "torch.sparse.HalfTensor",
    "torch.sparse.IntTensor",
    "torch.sparse.LongTensor",
    "torch.sparse.ShortTensor",
    "torch.storage.TypedStorage",
    "torch.storage.UntypedStorage",
    "torch.uint1",
    "torch.uint16",
    "torch.uint2",
    "torch.uint3",
    "torch.uint32",
    "torch.uint4",
    "torch.uint5",
    "torch.uint6",
    "torch.uint64",
    "torch.uint7",
    "torch.uint8",
];

const BLOCKED_MODULES: [&str; 4] = ["sys", "os", "posix", "nt"];

/// Splits an allowlisted `module.name` at its last dot.
pub fn split_global(full: &str) -> (&str, &str) {
    full.rsplit_once('.').unwrap_or(("", full))
}

/// The element dtype of a storage type global; `Ok(None)` for UntypedStorage.
fn storage_dtype(g: &str) -> Res<Option<DType>> {
    let name = g
        .strip_prefix("torch.cuda.")
        .or_else(|| g.strip_prefix("torch."))
        .unwrap_or(g);
    Ok(Some(match name {
        "FloatStorage" => DType::F32,
        "DoubleStorage" => DType::F64,
        "HalfStorage" => DType::F16,
        "BFloat16Storage" => DType::BF16,
        "LongStorage" => DType::I64,
        "IntStorage" => DType::I32,
        "ShortStorage" => DType::I16,
        "CharStorage" => DType::I8,
        "ByteStorage" => DType::U8,
        "BoolStorage" => DType::Bool,
        "ComplexFloatStorage" => DType::C64,
        "ComplexDoubleStorage" => DType::C128,
        "storage.UntypedStorage" => return Ok(None),
        "QInt8Storage" | "QUInt8Storage" | "QInt32Storage" | "QUInt4x2Storage"
        | "QUInt2x4Storage" => return err(format!("{g}: quantized tensors are not supported")),
        _ => {
            return err(format!(
                "persistent id names {g}, which is not a storage type"
            ))
        }
    }))
}

/// The dtype a `torch.<dtype>` global names, for `_rebuild_tensor_v3`.
fn global_dtype(g: &str) -> Res<DType> {
    g.strip_prefix("torch.")
        .and_then(DType::from_torch_name)
        .ok_or_else(|| PickleError(format!("tensor dtype {g} is not supported by rnnkit")))
}

fn opcode_name(op: u8) -> &'static str {
    match op {
        b'(' => "MARK",
        b'.' => "STOP",
        b'0' => "POP",
        b'1' => "POP_MARK",
        b'2' => "DUP",
        b'F' => "FLOAT",
        b'I' => "INT",
        b'J' => "BININT",
        b'K' => "BININT1",
        b'L' => "LONG",
        b'M' => "BININT2",
        b'N' => "NONE",
        b'P' => "PERSID",
        b'Q' => "BINPERSID",
        b'R' => "REDUCE",
        b'S' => "STRING",
        b'T' => "BINSTRING",
        b'U' => "SHORT_BINSTRING",
        b'V' => "UNICODE",
        b'X' => "BINUNICODE",
        b'a' => "APPEND",
        b'b' => "BUILD",
        b'c' => "GLOBAL",
        b'd' => "DICT",
        b'}' => "EMPTY_DICT",
        b'e' => "APPENDS",
        b'g' => "GET",
        b'h' => "BINGET",
        b'i' => "INST",
        b'j' => "LONG_BINGET",
        b'l' => "LIST",
        b']' => "EMPTY_LIST",
        b'o' => "OBJ",
        b'p' => "PUT",
        b'q' => "BINPUT",
        b'r' => "LONG_BINPUT",
        b's' => "SETITEM",
        b't' => "TUPLE",
        b')' => "EMPTY_TUPLE",
        b'u' => "SETITEMS",
        b'G' => "BINFLOAT",
        0x80 => "PROTO",
        0x81 => "NEWOBJ",
        0x82 => "EXT1",
        0x83 => "EXT2",
        0x84 => "EXT4",
        0x85 => "TUPLE1",
        0x86 => "TUPLE2",
        0x87 => "TUPLE3",
        0x88 => "NEWTRUE",
        0x89 => "NEWFALSE",
        0x8a => "LONG1",
        0x8b => "LONG4",
        b'B' => "BINBYTES",
        b'C' => "SHORT_BINBYTES",
        0x8c => "SHORT_BINUNICODE",
        0x8d => "BINUNICODE8",
        0x8e => "BINBYTES8",
        0x8f => "EMPTY_SET",
        0x90 => "ADDITEMS",
        0x91 => "FROZENSET",
        0x92 => "NEWOBJ_EX",
        0x93 => "STACK_GLOBAL",
        0x94 => "MEMOIZE",
        0x95 => "FRAME",
        0x96 => "BYTEARRAY8",
        0x97 => "NEXT_BUFFER",
        0x98 => "READONLY_BUFFER",
        _ => "unknown",
    }
}

// ------------------------------------------------------------------------------------------
// Limits and options
// ------------------------------------------------------------------------------------------

/// Hard limits that make hostile pickles fail fast in bounded memory. The defaults are far above
/// what real checkpoints need (a 1M-tensor checkpoint uses ~30M operations).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Opcodes executed.
    pub max_ops: u64,
    /// Values on the stack, all marks together.
    pub max_stack: usize,
    /// Memo entries.
    pub max_memo: usize,
    /// Objects allocated (strings, containers, tensors, …; not ints or floats).
    pub max_objects: usize,
    /// Items in one list, tuple, set or dict.
    pub max_container: usize,
    /// Container nesting depth of the result.
    pub max_depth: usize,
    /// Nodes visited when walking the result (shared sub-trees count once per reference).
    pub max_visits: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_ops: 200_000_000,
            max_stack: 10_000_000,
            max_memo: 20_000_000,
            max_objects: 20_000_000,
            max_container: 50_000_000,
            max_depth: 256,
            max_visits: 4_000_000,
        }
    }
}

/// How BINPERSID ids look: 5-tuples in zip files, 6-tuples (with view metadata) in legacy files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PidFormat {
    Zip,
    Legacy,
}

// ------------------------------------------------------------------------------------------
// The VM: an arena of objects, a stack of Copy items
// ------------------------------------------------------------------------------------------

/// A stack slot: scalars inline, everything else a reference into the arena.
#[derive(Debug, Clone, Copy)]
enum Item {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// Index into [`ALLOWED_GLOBALS`].
    Global(u16),
    Ref(u32),
}

#[derive(Debug)]
enum Node {
    Str(Box<str>),
    Bytes(Box<[u8]>),
    ByteArray(Box<[u8]>),
    Size(Box<[i64]>),
    BigInt(Box<[u8]>),
    Complex(f64, f64),
    Device(Box<str>),
    List(Vec<Item>),
    Tuple(Box<[Item]>),
    Set(Vec<Item>),
    Dict(DictNode),
    /// A storage from BINPERSID: spec index, and for legacy sub-storage views the element range.
    Storage {
        spec: usize,
        start: usize,
        len: usize,
    },
    Tensor(TensorNode),
}

#[derive(Debug)]
struct DictNode {
    kind: DictKind,
    entries: Vec<(Item, Item)>,
    index: HashMap<Key, usize>,
    attrs: Vec<(Item, Item)>,
}

#[derive(Debug, Clone)]
struct TensorNode {
    spec: usize,
    dtype: DType,
    offset: usize,
    shape: Vec<i64>,
    stride: Vec<i64>,
    requires_grad: bool,
    parameter: bool,
    neg: bool,
    conj: bool,
}

/// Hashable identity of a dict key, with Python's equalities (`1 == 1.0 == True`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    None,
    Int(i64),
    Big(Box<[u8]>),
    Float(u64),
    Complex(u64, u64),
    Str(Box<str>),
    Bytes(Box<[u8]>),
    Tuple(Vec<Key>),
    Global(u16),
    Device(Box<str>),
    /// Objects hashed by identity (tensors, storages) and NaNs (never equal to anything).
    Ident(u64),
}

/// What the storage records must provide: one entry per distinct key, in first-use order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageSpec {
    pub key: String,
    /// Element type of the storage (uint8 for UntypedStorage).
    pub dtype: DType,
    pub untyped: bool,
    pub location: String,
    /// Elements of `dtype`, as the pid says.
    pub numel: usize,
    /// `numel × dtype.size()`: the exact record length required.
    pub nbytes: usize,
}

/// A parsed pickle: objects, the root and the storages it references. Turn it into a
/// [`Value`] with [`Pickle::into_value`] once the storage bytes are loaded.
#[derive(Debug)]
pub struct Pickle {
    arena: Vec<Node>,
    root: Item,
    storages: Vec<StorageSpec>,
    limits: Limits,
    /// Protocol from PROTO (0 when absent).
    pub protocol: u8,
    /// Bytes consumed, STOP included.
    pub consumed: u64,
}

/// Reads up to `len` bytes of pickle from `r` (which must not hold more than `len` bytes before
/// STOP matters: lengths are checked against what remains, so a string can never make us
/// allocate more than the input has).
struct Input<'a, R: Read> {
    r: &'a mut R,
    pos: u64,
    len: u64,
}

impl<R: Read> Input<'_, R> {
    fn remaining(&self) -> u64 {
        self.len - self.pos
    }
    fn eof(&self) -> PickleError {
        PickleError(format!(
            "pickle data truncated at byte {} (unexpected end of data)",
            self.pos
        ))
    }
    fn fill(&mut self, buf: &mut [u8]) -> Res<()> {
        if (buf.len() as u64) > self.remaining() {
            return Err(self.eof());
        }
        self.r
            .read_exact(buf)
            .map_err(|e| PickleError(format!("reading pickle at byte {}: {e}", self.pos)))?;
        self.pos += buf.len() as u64;
        Ok(())
    }
    fn u8(&mut self) -> Res<u8> {
        let mut b = [0u8; 1];
        self.fill(&mut b)?;
        Ok(b[0])
    }
    fn arr<const N: usize>(&mut self) -> Res<[u8; N]> {
        let mut b = [0u8; N];
        self.fill(&mut b)?;
        Ok(b)
    }
    fn bytes(&mut self, n: usize) -> Res<Vec<u8>> {
        if n as u64 > self.remaining() {
            return Err(self.eof());
        }
        let mut v = vec![0u8; n];
        self.fill(&mut v)?;
        Ok(v)
    }
    /// A `\n`-terminated line (GLOBAL operands), at most 1000 bytes.
    fn line(&mut self) -> Res<String> {
        let mut v = Vec::new();
        loop {
            let b = self.u8()?;
            if b == b'\n' {
                break;
            }
            if v.len() >= 1000 {
                return err(format!(
                    "GLOBAL operand longer than 1000 bytes at byte {}",
                    self.pos
                ));
            }
            v.push(b);
        }
        String::from_utf8(v)
            .map_err(|_| PickleError(format!("GLOBAL operand is not UTF-8 at byte {}", self.pos)))
    }
}

struct Vm<'l> {
    limits: &'l Limits,
    format: PidFormat,
    arena: Vec<Node>,
    stack: Vec<Item>,
    marks: Vec<usize>,
    memo: HashMap<u32, Item>,
    storages: Vec<StorageSpec>,
    storage_index: HashMap<String, usize>,
    /// Legacy view keys → (spec, start, len), first definition wins as in torch.
    views: HashMap<String, (usize, usize, usize)>,
    ident: u64,
}

/// Parses one pickle (up to and including STOP) from `r`, which holds at most `len` more bytes.
/// Trailing bytes after STOP are left unread, as torch ignores them.
pub fn parse<R: Read>(r: &mut R, len: u64, format: PidFormat, limits: &Limits) -> Res<Pickle> {
    let mut input = Input { r, pos: 0, len };
    let mut vm = Vm {
        limits,
        format,
        arena: Vec::new(),
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        storages: Vec::new(),
        storage_index: HashMap::new(),
        views: HashMap::new(),
        ident: 0,
    };
    let mut protocol = 0u8;
    let mut ops = 0u64;
    loop {
        ops += 1;
        if ops > limits.max_ops {
            return err(format!(
                "more than {} pickle operations; refusing",
                limits.max_ops
            ));
        }
        let at = input.pos;
        let op = match input.u8() {
            Ok(op) => op,
            Err(_) if at == 0 => return err("empty pickle (no data)"),
            Err(_) => {
                return err(format!(
                    "pickle data ends at byte {at} without a STOP opcode (truncated)"
                ))
            }
        };
        let step = vm.step(op, &mut input, &mut protocol);
        match step {
            Ok(true) => {
                let root = vm
                    .pop()
                    .map_err(|e| PickleError(format!("at byte {at} (STOP): {e}")))?;
                return Ok(Pickle {
                    arena: std::mem::take(&mut vm.arena),
                    root,
                    storages: std::mem::take(&mut vm.storages),
                    limits: limits.clone(),
                    protocol,
                    consumed: input.pos,
                });
            }
            Ok(false) => {}
            Err(e) => {
                return Err(PickleError(format!(
                    "at byte {at} ({}): {}",
                    opcode_name(op),
                    e.0
                )))
            }
        }
    }
}

impl Vm<'_> {
    fn push(&mut self, item: Item) -> Res<()> {
        if self.stack.len() >= self.limits.max_stack {
            return err(format!(
                "pickle stack exceeds {} items; refusing",
                self.limits.max_stack
            ));
        }
        self.stack.push(item);
        Ok(())
    }

    fn alloc(&mut self, node: Node) -> Res<Item> {
        if self.arena.len() >= self.limits.max_objects {
            return err(format!(
                "pickle creates more than {} objects; refusing",
                self.limits.max_objects
            ));
        }
        self.arena.push(node);
        Ok(Item::Ref((self.arena.len() - 1) as u32))
    }

    fn base(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self) -> Res<Item> {
        if self.stack.len() <= self.base() {
            return err("stack underflow (malformed pickle)");
        }
        self.stack
            .pop()
            .ok_or_else(|| PickleError("stack underflow".into()))
    }

    fn top(&self) -> Res<Item> {
        if self.stack.len() <= self.base() {
            return err("stack underflow (malformed pickle)");
        }
        self.stack
            .last()
            .copied()
            .ok_or_else(|| PickleError("stack underflow".into()))
    }

    fn set_top(&mut self, item: Item) -> Res<()> {
        if self.stack.len() <= self.base() {
            return err("stack underflow (malformed pickle)");
        }
        if let Some(t) = self.stack.last_mut() {
            *t = item;
        }
        Ok(())
    }

    fn pop_mark(&mut self) -> Res<Vec<Item>> {
        let mark = self
            .marks
            .pop()
            .ok_or_else(|| PickleError("MARK missing (malformed pickle)".into()))?;
        Ok(self.stack.split_off(mark.min(self.stack.len())))
    }

    fn node(&self, item: Item) -> Option<&Node> {
        match item {
            Item::Ref(i) => self.arena.get(i as usize),
            _ => None,
        }
    }

    fn type_name(&self, item: Item) -> &'static str {
        match item {
            Item::None => "None",
            Item::Bool(_) => "bool",
            Item::Int(_) => "int",
            Item::Float(_) => "float",
            Item::Global(_) => "global",
            Item::Ref(_) => match self.node(item) {
                Some(Node::Str(_)) => "str",
                Some(Node::Bytes(_)) => "bytes",
                Some(Node::ByteArray(_)) => "bytearray",
                Some(Node::Size(_)) => "torch.Size",
                Some(Node::BigInt(_)) => "int",
                Some(Node::Complex(..)) => "complex",
                Some(Node::Device(_)) => "torch.device",
                Some(Node::List(_)) => "list",
                Some(Node::Tuple(_)) => "tuple",
                Some(Node::Set(_)) => "set",
                Some(Node::Dict(d)) => match d.kind {
                    DictKind::Dict => "dict",
                    DictKind::OrderedDict => "collections.OrderedDict",
                    DictKind::Counter => "collections.Counter",
                },
                Some(Node::Storage { .. }) => "storage",
                Some(Node::Tensor(t)) if t.parameter => "torch.nn.Parameter",
                Some(Node::Tensor(_)) => "torch.Tensor",
                None => "?",
            },
        }
    }

    fn str_of(&self, item: Item) -> Option<&str> {
        match self.node(item) {
            Some(Node::Str(s)) => Some(s),
            _ => None,
        }
    }

    /// A string, or ASCII bytes (torch's `_maybe_decode_ascii`).
    fn ascii_of(&self, item: Item) -> Option<String> {
        match self.node(item) {
            Some(Node::Str(s)) => Some(s.to_string()),
            Some(Node::Bytes(b)) if b.is_ascii() => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }

    fn int_of(&self, item: Item) -> Option<i64> {
        match item {
            Item::Int(i) => Some(i),
            Item::Bool(b) => Some(b as i64),
            _ => None,
        }
    }

    /// Items of a tuple or list (call arguments, sizes, strides).
    fn seq_of(&self, item: Item) -> Option<Vec<Item>> {
        match self.node(item) {
            Some(Node::Tuple(t)) => Some(t.to_vec()),
            Some(Node::List(l)) => Some(l.clone()),
            Some(Node::Size(v)) => Some(v.iter().map(|&i| Item::Int(i)).collect()),
            _ => None,
        }
    }

    fn key(&mut self, item: Item, depth: usize) -> Res<Key> {
        if depth > self.limits.max_depth {
            return err(format!(
                "dict key nested deeper than {} levels",
                self.limits.max_depth
            ));
        }
        Ok(match item {
            Item::None => Key::None,
            Item::Bool(b) => Key::Int(b as i64),
            Item::Int(i) => Key::Int(i),
            Item::Float(f) => {
                if f.is_nan() {
                    self.ident += 1;
                    Key::Ident(self.ident)
                } else if f.fract() == 0.0 && (-9.2e18..=9.2e18).contains(&f) {
                    Key::Int(f as i64)
                } else {
                    Key::Float(f.to_bits())
                }
            }
            Item::Global(g) => Key::Global(g),
            Item::Ref(i) => match self.arena.get(i as usize) {
                Some(Node::Str(s)) => Key::Str(s.clone()),
                Some(Node::Bytes(b)) => Key::Bytes(b.clone()),
                Some(Node::BigInt(b)) => Key::Big(b.clone()),
                Some(Node::Complex(re, im)) => Key::Complex(re.to_bits(), im.to_bits()),
                Some(Node::Device(d)) => Key::Device(d.clone()),
                Some(Node::Size(v)) => Key::Tuple(v.iter().map(|&i| Key::Int(i)).collect()),
                Some(Node::Tuple(t)) => {
                    let t = t.clone();
                    let mut keys = Vec::with_capacity(t.len());
                    for x in t.iter() {
                        keys.push(self.key(*x, depth + 1)?);
                    }
                    Key::Tuple(keys)
                }
                Some(Node::Tensor(_)) | Some(Node::Storage { .. }) => {
                    Key::Ident(u64::MAX - i as u64)
                }
                _ => {
                    return err(format!(
                        "unhashable type: '{}' used as a dict key or set item",
                        self.type_name(item)
                    ))
                }
            },
        })
    }

    fn set_item(&mut self, target: Item, k: Item, v: Item) -> Res<()> {
        let key = self.key(k, 0)?;
        let max = self.limits.max_container;
        let Item::Ref(t) = target else {
            return err("SETITEM target is not a dict");
        };
        match self.arena.get_mut(t as usize) {
            Some(Node::Dict(d)) => {
                if let Some(&i) = d.index.get(&key) {
                    // Python keeps the first key object and position, replaces the value.
                    d.entries[i].1 = v;
                } else {
                    if d.entries.len() >= max {
                        return err(format!("dict with more than {max} items; refusing"));
                    }
                    d.index.insert(key, d.entries.len());
                    d.entries.push((k, v));
                }
                Ok(())
            }
            _ => err("SETITEM target is not a dict"),
        }
    }

    fn check_dict_target(&self, op: &str) -> Res<Item> {
        let target = self.top()?;
        match self.node(target) {
            Some(Node::Dict(_)) => Ok(target),
            _ => err(format!(
                "Can only {op} for dict, collections.OrderedDict, collections.Counter, but got {}",
                self.type_name(target)
            )),
        }
    }

    fn new_dict(&mut self, kind: DictKind) -> Res<Item> {
        self.alloc(Node::Dict(DictNode {
            kind,
            entries: Vec::new(),
            index: HashMap::new(),
            attrs: Vec::new(),
        }))
    }

    fn new_tuple(&mut self, items: Vec<Item>) -> Res<Item> {
        if items.len() > self.limits.max_container {
            return err(format!(
                "tuple with more than {} items; refusing",
                self.limits.max_container
            ));
        }
        self.alloc(Node::Tuple(items.into_boxed_slice()))
    }

    /// Executes one opcode; `Ok(true)` at STOP.
    fn step<R: Read>(&mut self, op: u8, input: &mut Input<R>, protocol: &mut u8) -> Res<bool> {
        match op {
            0x80 => *protocol = input.u8()?, // PROTO (torch accepts any version, warning if ≠ 2)
            b'.' => return Ok(true),         // STOP
            b'c' => {
                let module = input.line()?;
                let name = input.line()?;
                let g = resolve_global(&module, &name)?;
                self.push(Item::Global(g))?;
            }
            b'R' => {
                let args = self.pop()?;
                let func = self.top()?;
                let Item::Global(g) = func else {
                    return err(format!(
                        "Trying to call reduce for unrecognized function of type {}",
                        self.type_name(func)
                    ));
                };
                let args = self.seq_of(args).ok_or_else(|| {
                    PickleError(format!(
                        "REDUCE arguments must be a tuple, got {}",
                        self.type_name(args)
                    ))
                })?;
                let result = self.call(ALLOWED_GLOBALS[g as usize], args, 0)?;
                self.set_top(result)?;
            }
            0x81 => {
                // NEWOBJ: cls.__new__(cls, *args)
                let args = self.pop()?;
                let cls = self.pop()?;
                let Item::Global(g) = cls else {
                    return err(format!("Can only create new object for nn.Parameter or allowlisted classes, but got {}", self.type_name(cls)));
                };
                let args = self.seq_of(args).ok_or_else(|| {
                    PickleError(format!(
                        "NEWOBJ arguments must be a tuple, got {}",
                        self.type_name(args)
                    ))
                })?;
                let result = self.new_object(ALLOWED_GLOBALS[g as usize], args)?;
                self.push(result)?;
            }
            b'b' => {
                let state = self.pop()?;
                let inst = self.top()?;
                self.build(inst, state)?;
            }
            b'Q' => {
                let pid = self.pop()?;
                let storage = self.persistent_load(pid)?;
                self.push(storage)?;
            }
            b'(' => {
                if self.marks.len() >= self.limits.max_stack {
                    return err("too many MARKs; refusing");
                }
                self.marks.push(self.stack.len());
            }
            b't' => {
                let items = self.pop_mark()?;
                let t = self.new_tuple(items)?;
                self.push(t)?;
            }
            0x85 => {
                let a = self.pop()?;
                let t = self.new_tuple(vec![a])?;
                self.push(t)?;
            }
            0x86 => {
                let b = self.pop()?;
                let a = self.pop()?;
                let t = self.new_tuple(vec![a, b])?;
                self.push(t)?;
            }
            0x87 => {
                let c = self.pop()?;
                let b = self.pop()?;
                let a = self.pop()?;
                let t = self.new_tuple(vec![a, b, c])?;
                self.push(t)?;
            }
            b')' => {
                let t = self.new_tuple(Vec::new())?;
                self.push(t)?;
            }
            b']' => {
                let l = self.alloc(Node::List(Vec::new()))?;
                self.push(l)?;
            }
            b'a' | b'e' => {
                let items = if op == b'a' {
                    vec![self.pop()?]
                } else {
                    self.pop_mark()?
                };
                let target = self.top()?;
                let max = self.limits.max_container;
                let what = if op == b'a' { "append to" } else { "extend" };
                let name = self.type_name(target);
                match target {
                    Item::Ref(i) => match self.arena.get_mut(i as usize) {
                        Some(Node::List(l)) => {
                            if l.len() + items.len() > max {
                                return err(format!("list with more than {max} items; refusing"));
                            }
                            l.extend(items);
                        }
                        _ => return err(format!("Can only {what} lists, but got {name}")),
                    },
                    _ => return err(format!("Can only {what} lists, but got {name}")),
                }
            }
            b'}' => {
                let d = self.new_dict(DictKind::Dict)?;
                self.push(d)?;
            }
            b's' => {
                let v = self.pop()?;
                let k = self.pop()?;
                let target = self.check_dict_target("SETITEM")?;
                self.set_item(target, k, v)?;
            }
            b'u' => {
                let items = self.pop_mark()?;
                let target = self.check_dict_target("SETITEMS")?;
                if items.len() % 2 != 0 {
                    return err("SETITEMS with an odd number of items (a key without a value)");
                }
                for kv in items.chunks_exact(2) {
                    self.set_item(target, kv[0], kv[1])?;
                }
            }
            0x8f => {
                let s = self.alloc(Node::Set(Vec::new()))?;
                self.push(s)?;
            }
            b'N' => self.push(Item::None)?,
            0x88 => self.push(Item::Bool(true))?,
            0x89 => self.push(Item::Bool(false))?,
            b'J' => {
                let v = i32::from_le_bytes(input.arr()?);
                self.push(Item::Int(v as i64))?;
            }
            b'K' => {
                let v = input.u8()?;
                self.push(Item::Int(v as i64))?;
            }
            b'M' => {
                let v = u16::from_le_bytes(input.arr()?);
                self.push(Item::Int(v as i64))?;
            }
            0x8a => {
                let n = input.u8()? as usize;
                let bytes = input.bytes(n)?;
                let item = self.long(bytes)?;
                self.push(item)?;
            }
            b'G' => {
                let v = f64::from_be_bytes(input.arr()?);
                self.push(Item::Float(v))?;
            }
            b'X' => {
                let n = u32::from_le_bytes(input.arr()?) as usize;
                let bytes = input.bytes(n)?;
                let s = decode_utf8_surrogatepass(bytes)?;
                let s = self.alloc(Node::Str(s.into_boxed_str()))?;
                self.push(s)?;
            }
            b'U' => {
                let n = input.u8()? as usize;
                let bytes = input.bytes(n)?;
                // torch.load decodes SHORT_BINSTRING with encoding="utf-8", strict.
                let s = String::from_utf8(bytes)
                    .map_err(|_| PickleError("SHORT_BINSTRING is not valid UTF-8".into()))?;
                let s = self.alloc(Node::Str(s.into_boxed_str()))?;
                self.push(s)?;
            }
            b'h' | b'j' => {
                let idx = if op == b'h' {
                    input.u8()? as u32
                } else {
                    u32::from_le_bytes(input.arr()?)
                };
                let item = *self
                    .memo
                    .get(&idx)
                    .ok_or_else(|| PickleError(format!("memo key {idx} not found")))?;
                self.push(item)?;
            }
            b'q' | b'r' => {
                let idx = if op == b'q' {
                    input.u8()? as u32
                } else {
                    u32::from_le_bytes(input.arr()?)
                };
                let item = self.top()?;
                if self.memo.len() >= self.limits.max_memo && !self.memo.contains_key(&idx) {
                    return err(format!(
                        "more than {} memo entries; refusing",
                        self.limits.max_memo
                    ));
                }
                self.memo.insert(idx, item);
            }
            _ => {
                let hint = match op {
                    0x95 | 0x8c | 0x94 | 0x93 => {
                        " (a pickle protocol 4+ opcode: torch.save(..., pickle_protocol=4) files are refused by \
                         torch.load(weights_only=True) too; re-save with the default protocol 2)"
                    }
                    b'B' | b'C' => " (a `bytes` object pickled with protocol 3; torch.load(weights_only=True) refuses it too)",
                    _ => "",
                };
                return err(format!(
                    "Unsupported operand {op} ({}){hint}",
                    opcode_name(op)
                ));
            }
        }
        Ok(false)
    }

    /// LONG1: two's-complement little-endian.
    fn long(&mut self, bytes: Vec<u8>) -> Res<Item> {
        if bytes.is_empty() {
            return Ok(Item::Int(0));
        }
        if bytes.len() <= 8 {
            let neg = bytes[bytes.len() - 1] & 0x80 != 0;
            let mut b = [if neg { 0xff } else { 0 }; 8];
            b[..bytes.len()].copy_from_slice(&bytes);
            return Ok(Item::Int(i64::from_le_bytes(b)));
        }
        // Normalise: drop redundant sign-extension bytes so equal values compare equal.
        let mut bytes = bytes;
        while bytes.len() > 1 {
            let last = bytes[bytes.len() - 1];
            let prev_sign = bytes[bytes.len() - 2] & 0x80;
            if (last == 0 && prev_sign == 0) || (last == 0xff && prev_sign != 0) {
                bytes.pop();
            } else {
                break;
            }
        }
        if bytes.len() <= 8 {
            return self.long(bytes);
        }
        self.alloc(Node::BigInt(bytes.into_boxed_slice()))
    }

    fn persistent_load(&mut self, pid: Item) -> Res<Item> {
        let Some(fields) = (match self.node(pid) {
            Some(Node::Tuple(t)) => Some(t.to_vec()),
            _ => None,
        }) else {
            return err(format!(
                "persistent id must be a ('storage', …) tuple, got {} (torch refuses anything else too)",
                self.type_name(pid)
            ));
        };
        let typename = fields.first().and_then(|&f| self.ascii_of(f));
        if typename.as_deref() != Some("storage") {
            return err(format!(
                "Only persistent_load of storage is allowed, but got {} (e.g. a whole-module save)",
                typename
                    .map(|t| format!("{t:?}"))
                    .unwrap_or_else(|| "a non-string".into())
            ));
        }
        let want = if self.format == PidFormat::Zip { 5 } else { 6 };
        if fields.len() != want {
            return err(format!(
                "storage persistent id has {} fields, expected {want}",
                fields.len()
            ));
        }
        let Item::Global(g) = fields[1] else {
            return err(format!(
                "storage type must be a global, got {}",
                self.type_name(fields[1])
            ));
        };
        let gname = ALLOWED_GLOBALS[g as usize];
        let dtype = storage_dtype(gname)?;
        let key = self
            .str_of(fields[2])
            .ok_or_else(|| {
                PickleError(format!(
                    "storage key must be a str, got {}",
                    self.type_name(fields[2])
                ))
            })?
            .to_string();
        let location = self.ascii_of(fields[3]).ok_or_else(|| {
            PickleError(format!(
                "storage {key:?}: location must be a str, got {}",
                self.type_name(fields[3])
            ))
        })?;
        let numel = self
            .int_of(fields[4])
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| {
                PickleError(format!("storage {key:?}: numel must be a non-negative int"))
            })?;
        let (dtype, untyped) = match dtype {
            Some(d) => (d, false),
            None => (DType::U8, true),
        };
        let nbytes = numel
            .checked_mul(dtype.size())
            .ok_or_else(|| PickleError(format!("storage {key:?}: {numel} elements overflow")))?;
        let spec = match self.storage_index.get(&key) {
            Some(&i) => {
                let s = &self.storages[i];
                if s.dtype != dtype || s.untyped != untyped {
                    return err(format!(
                        "storage {key:?} is used as both {} and {}; torch would silently reinterpret it as the first — refusing",
                        s.dtype, dtype
                    ));
                }
                if s.numel != numel {
                    return err(format!(
                        "storage {key:?} is declared with {} and with {numel} elements",
                        s.numel
                    ));
                }
                i
            }
            None => {
                self.storages.push(StorageSpec {
                    key: key.clone(),
                    dtype,
                    untyped,
                    location,
                    numel,
                    nbytes,
                });
                self.storage_index
                    .insert(key.clone(), self.storages.len() - 1);
                self.storages.len() - 1
            }
        };
        let (start, len) = if self.format == PidFormat::Legacy && !matches!(fields[5], Item::None) {
            let view = self
                .seq_of(fields[5])
                .filter(|v| v.len() == 3)
                .ok_or_else(|| {
                    PickleError(format!(
                        "storage {key:?}: view metadata must be (key, offset, size)"
                    ))
                })?;
            let view_key = self
                .str_of(view[0])
                .ok_or_else(|| PickleError(format!("storage {key:?}: view key must be a str")))?
                .to_string();
            let off = self.int_of(view[1]).and_then(|n| usize::try_from(n).ok());
            let size = self.int_of(view[2]).and_then(|n| usize::try_from(n).ok());
            let (Some(off), Some(size)) = (off, size) else {
                return err(format!(
                    "storage {key:?}: view offset and size must be non-negative ints"
                ));
            };
            match self.views.get(&view_key) {
                Some(&(s, o, l)) if s == spec => (o, l),
                Some(_) => {
                    return err(format!(
                        "storage view {view_key:?} is defined over two different storages"
                    ))
                }
                None => {
                    if off.checked_add(size).is_none_or(|end| end > numel) {
                        return err(format!(
                            "storage view {view_key:?} [{off}, {off}+{size}) reaches past storage {key:?} of {numel} elements"
                        ));
                    }
                    self.views.insert(view_key, (spec, off, size));
                    (off, size)
                }
            }
        } else {
            (0, numel)
        };
        self.alloc(Node::Storage { spec, start, len })
    }

    /// REDUCE: `func(*args)` for the allowlisted callables whose meaning is known.
    fn call(&mut self, g: &'static str, args: Vec<Item>, depth: usize) -> Res<Item> {
        if depth > 8 {
            return err("_rebuild_from_type_v2 nested too deeply");
        }
        let arity = |lo: usize, hi: usize| -> Res<()> {
            if args.len() < lo || args.len() > hi {
                let want = if lo == hi {
                    lo.to_string()
                } else {
                    format!("{lo} to {hi}")
                };
                return err(format!("{g} takes {want} arguments, got {}", args.len()));
            }
            Ok(())
        };
        match g {
            "torch._utils._rebuild_tensor" => {
                arity(4, 4)?;
                self.rebuild_tensor(g, &args[..4], false, None, Item::None)
            }
            "torch._utils._rebuild_tensor_v2" => {
                arity(6, 7)?;
                let metadata = args.get(6).copied().unwrap_or(Item::None);
                let rg = self.bool_arg(g, "requires_grad", args[4])?;
                self.rebuild_tensor(g, &args[..4], rg, None, metadata)
            }
            "torch._utils._rebuild_tensor_v3" => {
                arity(7, 8)?;
                let metadata = args.get(7).copied().unwrap_or(Item::None);
                let rg = self.bool_arg(g, "requires_grad", args[4])?;
                let Item::Global(d) = args[6] else {
                    return err(format!("{g}: dtype must be a torch dtype, got {}", self.type_name(args[6])));
                };
                let dtype = global_dtype(ALLOWED_GLOBALS[d as usize])?;
                self.rebuild_tensor(g, &args[..4], rg, Some(dtype), metadata)
            }
            "torch._utils._rebuild_parameter" | "torch._utils._rebuild_parameter_with_state" => {
                arity(if g.ends_with("state") { 4 } else { 3 }, if g.ends_with("state") { 4 } else { 3 })?;
                let rg = self.bool_arg(g, "requires_grad", args[1])?;
                self.parameter(g, args[0], rg)
            }
            "torch.nn.parameter.Parameter" => {
                arity(0, 2)?;
                self.new_object(g, args)
            }
            "torch._tensor._rebuild_from_type_v2" => {
                // (func, new_type, args, state): func(*args), cast to new_type; state holds
                // Python attributes, which carry no tensor data.
                arity(4, 4)?;
                let Item::Global(f) = args[0] else {
                    return err(format!("{g}: func must be a rebuild function, got {}", self.type_name(args[0])));
                };
                let new_type = match args[1] {
                    Item::Global(t) => ALLOWED_GLOBALS[t as usize],
                    other => return err(format!("{g}: new_type must be a class, got {}", self.type_name(other))),
                };
                let inner = self
                    .seq_of(args[2])
                    .ok_or_else(|| PickleError(format!("{g}: args must be a tuple, got {}", self.type_name(args[2]))))?;
                let t = self.call(ALLOWED_GLOBALS[f as usize], inner, depth + 1)?;
                if !matches!(self.node(t), Some(Node::Tensor(_))) {
                    return err(format!("{g}: {} did not return a tensor", ALLOWED_GLOBALS[f as usize]));
                }
                match new_type {
                    "torch.Tensor" => Ok(t),
                    "torch.nn.parameter.Parameter" => {
                        let rg = match self.node(t) {
                            Some(Node::Tensor(n)) => n.requires_grad,
                            _ => false,
                        };
                        self.parameter(g, t, rg)
                    }
                    other => err(format!("{g}: tensor subclass {other} is not supported")),
                }
            }
            "collections.OrderedDict" | "collections.Counter" => {
                arity(0, 1)?;
                let kind = if g == "collections.Counter" { DictKind::Counter } else { DictKind::OrderedDict };
                let d = self.new_dict(kind)?;
                if let Some(&src) = args.first() {
                    let pairs: Vec<(Item, Item)> = match self.node(src) {
                        Some(Node::Dict(s)) => s.entries.clone(),
                        Some(Node::List(_)) | Some(Node::Tuple(_)) if kind == DictKind::OrderedDict => {
                            let mut pairs = Vec::new();
                            for p in self.seq_of(src).unwrap_or_default() {
                                match self.seq_of(p) {
                                    Some(kv) if kv.len() == 2 => pairs.push((kv[0], kv[1])),
                                    _ => return err(format!("{g}: items must be (key, value) pairs")),
                                }
                            }
                            pairs
                        }
                        _ => return err(format!("{g}: cannot build from {}", self.type_name(src))),
                    };
                    for (k, v) in pairs {
                        self.set_item(d, k, v)?;
                    }
                }
                Ok(d)
            }
            "torch.Size" => {
                arity(0, 1)?;
                let items = match args.first() {
                    None => Vec::new(),
                    Some(&a) => self
                        .seq_of(a)
                        .ok_or_else(|| PickleError(format!("{g}: argument must be a tuple, got {}", self.type_name(a))))?,
                };
                let sizes: Option<Vec<i64>> = items.iter().map(|&i| self.int_of(i)).collect();
                let sizes = sizes.ok_or_else(|| PickleError(format!("{g}: sizes must be ints")))?;
                if sizes.len() > self.limits.max_container {
                    return err(format!("{g}: more than {} sizes", self.limits.max_container));
                }
                self.alloc(Node::Size(sizes.into_boxed_slice()))
            }
            "torch.device" => {
                arity(1, 2)?;
                let ty = match (self.str_of(args[0]), args[0]) {
                    (Some(s), _) => s.to_string(),
                    (None, Item::Int(i)) if args.len() == 1 => format!("cuda:{i}"),
                    _ => return err(format!("{g}: device type must be a str")),
                };
                let name = match args.get(1) {
                    None | Some(Item::None) => ty,
                    Some(&Item::Int(i)) if !ty.contains(':') => format!("{ty}:{i}"),
                    Some(_) => return err(format!("{g}: device index must be an int")),
                };
                self.alloc(Node::Device(name.into_boxed_str()))
            }
            "_codecs.encode" => {
                arity(1, 2)?;
                let s = self
                    .str_of(args[0])
                    .ok_or_else(|| PickleError(format!("{g}: first argument must be a str, got {}", self.type_name(args[0]))))?
                    .to_string();
                let enc = match args.get(1) {
                    None => "utf-8".to_string(),
                    Some(&e) => self.str_of(e).ok_or_else(|| PickleError(format!("{g}: encoding must be a str")))?.to_string(),
                };
                let bytes = encode(&s, &enc)?;
                self.alloc(Node::Bytes(bytes.into_boxed_slice()))
            }
            "builtins.bytearray" => {
                arity(0, 2)?;
                let bytes = match args.first() {
                    None => Vec::new(),
                    Some(&a) => match (self.node(a), args.get(1)) {
                        (Some(Node::Bytes(b)), None) | (Some(Node::ByteArray(b)), None) => b.to_vec(),
                        (Some(Node::Str(s)), Some(&e)) => {
                            let enc = self.str_of(e).ok_or_else(|| PickleError(format!("{g}: encoding must be a str")))?;
                            encode(s, enc)?
                        }
                        _ => return err(format!("{g}: unsupported arguments (expected bytes, or str and encoding)")),
                    },
                };
                self.alloc(Node::ByteArray(bytes.into_boxed_slice()))
            }
            "builtins.set" => {
                arity(0, 1)?;
                let items = match args.first() {
                    None => Vec::new(),
                    Some(&a) => match self.node(a) {
                        Some(Node::Set(s)) => s.clone(),
                        _ => self
                            .seq_of(a)
                            .ok_or_else(|| PickleError(format!("{g}: argument must be a list, got {}", self.type_name(a))))?,
                    },
                };
                let mut seen = std::collections::HashSet::new();
                let mut unique = Vec::new();
                for it in items {
                    if seen.insert(self.key(it, 0)?) {
                        unique.push(it);
                    }
                }
                self.alloc(Node::Set(unique))
            }
            "builtins.complex" => {
                arity(0, 2)?;
                let num = |vm: &Self, i: Option<&Item>| -> Res<f64> {
                    match i {
                        None => Ok(0.0),
                        Some(Item::Float(f)) => Ok(*f),
                        Some(&it) => vm.int_of(it).map(|v| v as f64).ok_or_else(|| PickleError(format!("{g}: arguments must be numbers"))),
                    }
                };
                let (re, im) = (num(self, args.first())?, num(self, args.get(1))?);
                self.alloc(Node::Complex(re, im))
            }
            "torch.serialization._get_layout" | "torch._utils._rebuild_sparse_tensor" => {
                err(format!("{g}: sparse tensors are not supported; convert with .to_dense() before saving"))
            }
            "torch._utils._rebuild_qtensor" => err(format!("{g}: quantized tensors are not supported; dequantize before saving")),
            "torch._utils._rebuild_nested_tensor" => err(format!("{g}: nested tensors are not supported")),
            "torch._utils._rebuild_meta_tensor_no_storage" => err(format!("{g}: meta tensors (no data) are not supported")),
            "torch._utils._rebuild_wrapper_subclass" => err(format!("{g}: tensor wrapper subclasses are not supported")),
            "torch._utils._rebuild_device_tensor_from_numpy" | "torch._utils._rebuild_device_tensor_from_cpu_tensor" => {
                err(format!("{g}: device tensors saved from numpy/CPU copies are not supported"))
            }
            _ => err(format!("calling {g} is not supported (it is allowlisted by torch, but rnnkit does not interpret it)")),
        }
    }

    fn bool_arg(&self, g: &str, what: &str, item: Item) -> Res<bool> {
        match item {
            Item::Bool(b) => Ok(b),
            Item::Int(i) => Ok(i != 0),
            Item::None => Ok(false),
            other => err(format!(
                "{g}: {what} must be a bool, got {}",
                self.type_name(other)
            )),
        }
    }

    fn parameter(&mut self, g: &str, data: Item, requires_grad: bool) -> Res<Item> {
        let t = match self.node(data) {
            Some(Node::Tensor(t)) => t.clone(),
            _ => {
                return err(format!(
                    "{g}: data must be a tensor, got {}",
                    self.type_name(data)
                ))
            }
        };
        self.alloc(Node::Tensor(TensorNode {
            parameter: true,
            requires_grad,
            ..t
        }))
    }

    /// `_rebuild_tensor[_v2|_v3](storage, offset, size, stride, …)`, validated as torch's
    /// `set_` does, but stricter on nothing that torch accepts.
    fn rebuild_tensor(
        &mut self,
        g: &str,
        args: &[Item],
        requires_grad: bool,
        dtype: Option<DType>,
        metadata: Item,
    ) -> Res<Item> {
        let (spec, start, len) = match self.node(args[0]) {
            Some(&Node::Storage { spec, start, len }) => (spec, start, len),
            _ => {
                return err(format!(
                    "{g}: storage argument is a {}, not a storage",
                    self.type_name(args[0])
                ))
            }
        };
        let sspec = &self.storages[spec];
        let key = sspec.key.clone();
        let sdtype = sspec.dtype;
        let dtype = dtype.unwrap_or(sdtype);
        let what = format!("tensor over storage {key:?}");
        let offset = self
            .int_of(args[1])
            .ok_or_else(|| PickleError(format!("{what}: storage_offset must be an int")))?;
        if offset < 0 {
            return err(format!("{what}: invalid storage offset {offset}"));
        }
        let ints = |vm: &Self, it: Item, name: &str| -> Res<Vec<i64>> {
            let seq = vm.seq_of(it).ok_or_else(|| {
                PickleError(format!(
                    "{what}: {name} must be a tuple, got {}",
                    vm.type_name(it)
                ))
            })?;
            seq.iter()
                .map(|&x| {
                    vm.int_of(x)
                        .ok_or_else(|| PickleError(format!("{what}: {name} must hold ints")))
                })
                .collect()
        };
        let shape = ints(self, args[2], "size")?;
        let stride = ints(self, args[3], "stride")?;
        if shape.len() != stride.len() {
            return err(format!(
                "{what}: size {shape:?} and stride {stride:?} have different ranks"
            ));
        }
        if let Some(n) = shape.iter().find(|&&n| n < 0) {
            return err(format!("{what}: negative dimension {n} in size {shape:?}"));
        }
        if stride.iter().any(|&s| s < 0) {
            return err(format!("{what}: negative stride in {stride:?}"));
        }
        let numel = checked_numel(&shape)
            .ok_or_else(|| PickleError(format!("{what}: size {shape:?} overflows")))?;
        // The view's element range, in storage bytes: legacy sub-storage views narrow it.
        let view_start = start * sdtype.size();
        let view_bytes = len * sdtype.size();
        if dtype.size() != 0 && !view_start.is_multiple_of(dtype.size()) {
            return err(format!("{what}: view start is not aligned to {dtype}"));
        }
        let offset = offset as usize;
        if numel > 0 {
            // Last element touched: offset + Σ (size_i − 1)·stride_i, all checked.
            let mut last = offset as u128;
            for (&n, &s) in shape.iter().zip(&stride) {
                last += (n as u128 - 1) * s as u128;
            }
            let need = (last + 1) * dtype.size() as u128;
            if need > view_bytes as u128 {
                return err(format!(
                    "{what}: a {dtype} view with offset {offset}, size {shape:?}, stride {stride:?} needs {need} bytes \
                     but the storage has {view_bytes} (Trying to resize storage that is not resizable)"
                ));
            }
        }
        let (mut neg, mut conj) = (false, false);
        match self.node(metadata) {
            None if matches!(metadata, Item::None) => {}
            Some(Node::Dict(d)) => {
                for &(k, v) in &d.entries {
                    let flag = self.bool_arg(g, "metadata value", v)?;
                    match self.str_of(k) {
                        Some("neg") => neg = flag,
                        Some("conj") => conj = flag,
                        Some(other) => {
                            return err(format!("{what}: unknown tensor metadata {other:?}"))
                        }
                        None => {
                            return err(format!("{what}: tensor metadata keys must be strings"))
                        }
                    }
                }
            }
            _ => {
                return err(format!(
                    "{what}: metadata must be a dict, got {}",
                    self.type_name(metadata)
                ))
            }
        }
        if conj && !matches!(dtype, DType::C32 | DType::C64 | DType::C128) {
            return err(format!("{what}: the conj bit is set on a {dtype} tensor"));
        }
        if neg && matches!(dtype, DType::Bool | DType::F8E8M0) {
            return err(format!("{what}: the neg bit is set on a {dtype} tensor"));
        }
        let offset = offset + view_start / dtype.size();
        self.alloc(Node::Tensor(TensorNode {
            spec,
            dtype,
            offset,
            shape,
            stride,
            requires_grad,
            parameter: false,
            neg,
            conj,
        }))
    }

    /// NEWOBJ: `cls.__new__(cls, *args)`.
    fn new_object(&mut self, g: &'static str, args: Vec<Item>) -> Res<Item> {
        match g {
            "torch.nn.parameter.Parameter" => {
                if args.len() > 2 {
                    return err(format!("{g} takes at most 2 arguments, got {}", args.len()));
                }
                let data = *args.first().ok_or_else(|| PickleError(format!("{g}() without data is not supported")))?;
                let rg = match args.get(1) {
                    Some(&r) => self.bool_arg(g, "requires_grad", r)?,
                    None => true,
                };
                self.parameter(g, data, rg)
            }
            // __new__ of these ignores its arguments: the object starts empty.
            "collections.OrderedDict" => self.new_dict(DictKind::OrderedDict),
            "collections.Counter" => self.new_dict(DictKind::Counter),
            "builtins.set" => self.alloc(Node::Set(Vec::new())),
            "builtins.bytearray" => self.alloc(Node::ByteArray(Box::new([]))),
            "builtins.complex" | "torch.Size" | "torch.device" => self.call(g, args, 0),
            _ => err(format!("Can only create new object for nn.Parameter or known allowlisted classes, but got {g}")),
        }
    }

    fn build(&mut self, inst: Item, state: Item) -> Res<()> {
        let name = self.type_name(inst);
        let attrs: Vec<(Item, Item)> = match self.node(state) {
            Some(Node::Dict(d)) => d.entries.clone(),
            _ if matches!(state, Item::None) => Vec::new(),
            _ => {
                return err(format!(
                    "BUILD state for {name} must be a dict, got {}",
                    self.type_name(state)
                ))
            }
        };
        let Item::Ref(i) = inst else {
            return err(format!("Can only build Tensor, Parameter, OrderedDict or allowlisted types, but got {name}"));
        };
        let keyed: Vec<(Option<String>, Item, Item)> = attrs
            .into_iter()
            .map(|(k, v)| (self.str_of(k).map(str::to_string), k, v))
            .collect();
        let names: Vec<Option<String>> = match self.arena.get(i as usize) {
            Some(Node::Dict(d)) => d
                .attrs
                .iter()
                .map(|(k, _)| self.str_of(*k).map(str::to_string))
                .collect(),
            _ => Vec::new(),
        };
        match self.arena.get_mut(i as usize) {
            Some(Node::Dict(d)) if d.kind != DictKind::Dict => {
                let mut names = names;
                for (name, k, v) in keyed {
                    // Later assignments of the same attribute replace earlier ones.
                    match names.iter().position(|n| n.is_some() && *n == name) {
                        Some(j) => d.attrs[j].1 = v,
                        None => {
                            d.attrs.push((k, v));
                            names.push(name);
                        }
                    }
                }
                Ok(())
            }
            Some(Node::Tensor(_)) => err(format!("BUILD on a {name} (legacy `set_` state) is not supported")),
            _ => err(format!("Can only build Tensor, Parameter, OrderedDict or allowlisted types, but got {name}")),
        }
    }
}

/// Maps Python 2 names as torch does (`__builtin__` → `builtins`), enforces the blocklist and
/// the allowlist, and returns the allowlist index.
fn resolve_global(module: &str, name: &str) -> Res<u16> {
    let module = match module {
        "__builtin__" | "exceptions" => "builtins",
        "copy_reg" => "copyreg",
        m => m,
    };
    let full = format!("{module}.{name}");
    if BLOCKED_MODULES.contains(&module) {
        return err(format!(
            "Trying to load unsupported GLOBAL {full} whose module {module} is blocked."
        ));
    }
    match ALLOWED_GLOBALS.iter().position(|&g| g == full) {
        Some(i) => Ok(i as u16),
        None => err(format!(
            "Unsupported global: GLOBAL {full} was not an allowed global by default"
        )),
    }
}

/// `str.encode(encoding)` for the encodings pickles use.
fn encode(s: &str, encoding: &str) -> Res<Vec<u8>> {
    let enc = encoding.to_ascii_lowercase().replace('_', "-");
    match enc.as_str() {
        "latin1" | "latin-1" | "iso-8859-1" | "iso8859-1" | "l1" => s
            .chars()
            .map(|c| {
                u8::try_from(c as u32)
                    .map_err(|_| PickleError(format!("character {c:?} is not latin-1")))
            })
            .collect(),
        "utf-8" | "utf8" => Ok(s.as_bytes().to_vec()),
        "ascii" => {
            if s.is_ascii() {
                Ok(s.as_bytes().to_vec())
            } else {
                err("non-ASCII string encoded as ascii")
            }
        }
        _ => err(format!(
            "_codecs.encode with encoding {encoding:?} is not supported"
        )),
    }
}

/// UTF-8 as torch decodes BINUNICODE (`surrogatepass`). Rust strings cannot hold lone
/// surrogates, so a string containing one is an error rather than silently altered.
fn decode_utf8_surrogatepass(bytes: Vec<u8>) -> Res<String> {
    String::from_utf8(bytes).map_err(|e| {
        let bytes = e.as_bytes();
        let at = e.utf8_error().valid_up_to();
        if bytes.get(at) == Some(&0xED) && bytes.get(at + 1).is_some_and(|b| *b >= 0xA0) {
            PickleError(
                "string contains a lone UTF-16 surrogate, which rnnkit cannot represent".into(),
            )
        } else {
            PickleError(format!(
                "BINUNICODE string is not valid UTF-8 (at byte {at} of the string)"
            ))
        }
    })
}

// ------------------------------------------------------------------------------------------
// Arena → Value
// ------------------------------------------------------------------------------------------

impl Pickle {
    /// The storages the pickle references, in first-use order; their bytes are what
    /// [`Pickle::into_value`] needs.
    pub fn storages(&self) -> &[StorageSpec] {
        &self.storages
    }

    /// The root as an integer, if it is one (legacy magic number and protocol pickles).
    pub fn root_int(&self) -> Option<i64> {
        match self.root {
            Item::Int(i) => Some(i),
            _ => None,
        }
    }

    /// The root as a list of strings (the legacy key list).
    pub fn root_str_list(&self) -> Option<Vec<String>> {
        let Item::Ref(i) = self.root else { return None };
        let Node::List(items) = self.arena.get(i as usize)? else {
            return None;
        };
        items
            .iter()
            .map(|it| match it {
                Item::Ref(j) => match self.arena.get(*j as usize) {
                    Some(Node::Str(s)) => Some(s.to_string()),
                    _ => None,
                },
                _ => None,
            })
            .collect()
    }

    /// The root as a LONG1 integer's bytes (the legacy magic number is 10 bytes).
    pub fn root_long_bytes(&self) -> Option<Vec<u8>> {
        match self.root {
            Item::Ref(i) => match self.arena.get(i as usize) {
                Some(Node::BigInt(b)) => Some(b.to_vec()),
                _ => None,
            },
            _ => None,
        }
    }

    /// Builds the value tree. `data[i]` holds the little-endian bytes of `storages()[i]` and must
    /// be exactly `nbytes` long. Shared objects stay shared; cycles and nesting deeper than
    /// `Limits::max_depth` are errors.
    pub fn into_value(self, data: Vec<Vec<u8>>) -> Res<Value> {
        if data.len() != self.storages.len() {
            return err(format!(
                "{} storages referenced but {} loaded",
                self.storages.len(),
                data.len()
            ));
        }
        let mut storages = Vec::with_capacity(data.len());
        for (spec, bytes) in self.storages.iter().zip(data) {
            if bytes.len() != spec.nbytes {
                return err(format!(
                    "storage {:?}: record has {} bytes, expected {} ({} × {})",
                    spec.key,
                    bytes.len(),
                    spec.nbytes,
                    spec.numel,
                    spec.dtype
                ));
            }
            storages.push(Arc::new(Storage {
                key: spec.key.clone(),
                dtype: spec.dtype,
                untyped: spec.untyped,
                location: spec.location.clone(),
                data: bytes,
            }));
        }
        let mut f = Freezer {
            arena: &self.arena,
            storages: &storages,
            done: vec![None; self.arena.len()],
            busy: vec![false; self.arena.len()],
            max_depth: self.limits.max_depth,
        };
        f.freeze(self.root, 0)
    }
}

struct Freezer<'a> {
    arena: &'a [Node],
    storages: &'a [Arc<Storage>],
    done: Vec<Option<Value>>,
    busy: Vec<bool>,
    max_depth: usize,
}

impl Freezer<'_> {
    fn freeze(&mut self, item: Item, depth: usize) -> Res<Value> {
        let i = match item {
            Item::None => return Ok(Value::None),
            Item::Bool(b) => return Ok(Value::Bool(b)),
            Item::Int(v) => return Ok(Value::Int(v)),
            Item::Float(v) => return Ok(Value::Float(v)),
            Item::Global(g) => return Ok(Value::Global(ALLOWED_GLOBALS[g as usize])),
            Item::Ref(i) => i as usize,
        };
        if let Some(v) = self.done.get(i).and_then(|d| d.clone()) {
            return Ok(v);
        }
        if depth > self.max_depth {
            return err(format!(
                "containers nested deeper than {} levels; refusing",
                self.max_depth
            ));
        }
        if self.busy.get(i).copied().unwrap_or(false) {
            return err("a container contains itself (recursive structure); not supported");
        }
        self.busy[i] = true;
        let seq = |f: &mut Self, items: &[Item]| -> Res<Arc<[Value]>> {
            items
                .iter()
                .map(|&x| f.freeze(x, depth + 1))
                .collect::<Res<Vec<_>>>()
                .map(Into::into)
        };
        let arena = self.arena;
        let v = match &arena[i] {
            Node::Str(s) => Value::Str(Arc::from(&**s)),
            Node::Bytes(b) => Value::Bytes(Arc::from(&**b)),
            Node::ByteArray(b) => Value::ByteArray(Arc::from(&**b)),
            Node::Size(v) => Value::Size(Arc::from(&**v)),
            Node::BigInt(b) => Value::BigInt(BigInt(Arc::from(&**b))),
            Node::Complex(re, im) => Value::Complex(*re, *im),
            Node::Device(d) => Value::Device(Arc::from(&**d)),
            Node::List(items) => Value::List(seq(self, items)?),
            Node::Tuple(items) => Value::Tuple(seq(self, items)?),
            Node::Set(items) => Value::Set(seq(self, items)?),
            Node::Dict(d) => {
                let mut entries = Vec::with_capacity(d.entries.len());
                for &(k, v) in &d.entries {
                    entries.push((self.freeze(k, depth + 1)?, self.freeze(v, depth + 1)?));
                }
                let mut attrs = Vec::with_capacity(d.attrs.len());
                for &(k, v) in &d.attrs {
                    attrs.push((self.freeze(k, depth + 1)?, self.freeze(v, depth + 1)?));
                }
                Value::Dict(Arc::new(Dict {
                    kind: d.kind,
                    entries,
                    attrs,
                }))
            }
            Node::Storage { spec, start, len } => {
                if *start != 0
                    || *len
                        != self.storages[*spec].data.len()
                            / self.storages[*spec].dtype.size().max(1)
                {
                    return err("a legacy sub-storage view saved on its own is not supported");
                }
                Value::Storage(self.storages[*spec].clone())
            }
            Node::Tensor(t) => Value::Tensor(Arc::new(Tensor {
                storage: self.storages[t.spec].clone(),
                dtype: t.dtype,
                offset: t.offset,
                shape: t.shape.clone(),
                stride: t.stride.clone(),
                requires_grad: t.requires_grad,
                parameter: t.parameter,
                neg: t.neg,
                conj: t.conj,
            })),
        };
        self.busy[i] = false;
        self.done[i] = Some(v.clone());
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(bytes: &[u8]) -> Res<Value> {
        let mut r = bytes;
        let p = parse(
            &mut r,
            bytes.len() as u64,
            PidFormat::Zip,
            &Limits::default(),
        )?;
        let data = p.storages().iter().map(|s| vec![0u8; s.nbytes]).collect();
        p.into_value(data)
    }

    fn binunicode(s: &str) -> Vec<u8> {
        let mut v = vec![b'X'];
        v.extend((s.len() as u32).to_le_bytes());
        v.extend(s.as_bytes());
        v
    }

    #[test]
    fn long1_is_sign_extended() {
        // LONG1 ff → -1; 10-byte LONG1 → BigInt in decimal.
        let v = run(b"\x80\x02\x8a\x01\xff.").unwrap();
        assert!(matches!(v, Value::Int(-1)), "{v:?}");
        let v = run(b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.").unwrap();
        match v {
            Value::BigInt(b) => assert_eq!(b.to_string(), "119547037146038801333356"),
            other => panic!("{other:?}"),
        }
        let v = run(b"\x80\x02\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\xff.").unwrap();
        match v {
            Value::BigInt(b) => assert_eq!(b.to_string(), "-18446744073709551616"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn memo_bomb_is_cheap() {
        // l0 = []; l_{i+1} = [l_i, l_i] sixty times: 2^60 leaves, 61 objects.
        let mut p = b"\x80\x02]q\x00".to_vec();
        for i in 0..60u8 {
            p.extend([b']', b'q', i + 1, b'(', b'h', i, b'h', i, b'e']);
        }
        p.push(b'.');
        let v = run(&p).unwrap();
        // Loading kept each level's two references one object (61 objects, not 2^61): no
        // timing here, the structure itself shows the cost is linear.
        let mut level = &v;
        for depth in 0..60 {
            match level {
                Value::List(items) => match &items[..] {
                    [Value::List(a), Value::List(b)] => {
                        assert!(
                            Arc::ptr_eq(a, b),
                            "level {depth}: two copies, not one object"
                        );
                        level = &items[0];
                    }
                    other => panic!("level {depth}: {other:?}"),
                },
                other => panic!("level {depth}: {other:?}"),
            }
        }
        assert!(matches!(level, Value::List(items) if items.is_empty()));
        // Tensor-free shared sub-trees are walked once: 1,000 visits suffice for 2^60 leaves.
        assert!(v.tensors(1000).unwrap().is_empty());
    }

    #[test]
    fn malicious_globals_are_refused_by_name() {
        let e = run(b"\x80\x02cposix\nsystem\nq\x00X\x04\x00\x00\x00echo\x85R.").unwrap_err();
        assert!(
            e.0.contains("GLOBAL posix.system whose module posix is blocked"),
            "{e}"
        );
        let e = run(b"\x80\x02c__builtin__\neval\n.").unwrap_err();
        assert!(
            e.0.contains("Unsupported global: GLOBAL builtins.eval"),
            "{e}"
        );
        let e = run(b"\x80\x02cbuiltins\ngetattr\n.").unwrap_err();
        assert!(e.0.contains("builtins.getattr"), "{e}");
    }

    #[test]
    fn protocol4_frame_is_refused() {
        let e = run(b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00}.").unwrap_err();
        assert!(e.0.contains("Unsupported operand 149 (FRAME)"), "{e}");
    }

    #[test]
    fn setitems_on_a_list_and_build_on_dict_fail() {
        let e = run(b"\x80\x02](K\x01K\x02u.").unwrap_err();
        assert!(e.0.contains("Can only SETITEMS"), "{e}");
        let e = run(b"\x80\x02}}b.").unwrap_err();
        assert!(e.0.contains("Can only build"), "{e}");
    }

    #[test]
    fn ordered_dict_metadata_is_an_attribute_not_a_key() {
        let mut p = b"\x80\x02ccollections\nOrderedDict\n)R".to_vec();
        p.extend(binunicode("a"));
        p.extend(b"K\x01s}");
        p.extend(binunicode("_metadata"));
        p.extend(b"}sb.");
        let v = run(&p).unwrap();
        let d = v.as_dict().unwrap();
        assert_eq!(d.kind, DictKind::OrderedDict);
        assert_eq!(d.entries.len(), 1);
        assert!(d.attr("_metadata").is_some());
    }

    #[test]
    fn int_keys_and_python_key_equality() {
        // {1: 'a', True: 'b'} is one key in Python.
        let mut p = b"\x80\x02}(K\x01".to_vec();
        p.extend(binunicode("a"));
        p.extend(b"\x88");
        p.extend(binunicode("b"));
        p.extend(b"u.");
        let v = run(&p).unwrap();
        let d = v.as_dict().unwrap();
        assert_eq!(d.entries.len(), 1);
        assert!(matches!(d.entries[0].0, Value::Int(1)));
        assert_eq!(d.entries[0].1.as_str(), Some("b"));
    }

    #[test]
    fn cycles_and_deep_nesting_are_errors_not_crashes() {
        // l = []; l.append(l)
        let e = run(b"\x80\x02]q\x00h\x00a.").unwrap_err();
        assert!(e.0.contains("contains itself"), "{e}");
        // 100k nested 1-tuples.
        let mut p = b"\x80\x02)".to_vec();
        p.extend(std::iter::repeat_n(0x85u8, 100_000));
        p.push(b'.');
        let e = run(&p).unwrap_err();
        assert!(e.0.contains("deeper than"), "{e}");
    }

    #[test]
    fn truncated_and_empty_pickles() {
        assert!(run(b"").unwrap_err().0.contains("empty"));
        assert!(run(b"\x80\x02X\xff\xff\xff\x7f")
            .unwrap_err()
            .0
            .contains("truncated"));
        assert!(run(b"\x80\x02}").unwrap_err().0.contains("without a STOP"));
    }

    fn tensor_pickle(
        storage: &str,
        numel: u8,
        offset: u8,
        size: &[u8],
        stride: &[u8],
        meta: Option<&str>,
    ) -> Vec<u8> {
        let mut p = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n((".to_vec();
        p.extend(binunicode("storage"));
        p.extend(format!("ctorch\n{storage}\n").as_bytes());
        p.extend(binunicode("0"));
        p.extend(binunicode("cpu"));
        p.extend([b'K', numel, b't', b'Q', b'K', offset, b'(']);
        for &s in size {
            p.extend([b'K', s]);
        }
        p.extend(b"t(");
        for &s in stride {
            p.extend([b'K', s]);
        }
        p.extend(b"t\x89ccollections\nOrderedDict\n)R");
        if let Some(m) = meta {
            p.push(b'}');
            p.extend(binunicode(m));
            p.extend(b"\x88s");
        }
        p.extend(b"tR.");
        p
    }

    fn load_tensor(p: &[u8], data: Vec<u8>) -> Res<Arc<Tensor>> {
        let mut r = p;
        let pk = parse(&mut r, p.len() as u64, PidFormat::Zip, &Limits::default())?;
        match pk.into_value(vec![data])? {
            Value::Tensor(t) => Ok(t),
            other => panic!("{other:?}"),
        }
    }

    fn f32s(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn neg_view_matches_the_spec_example() {
        // storage [1,2,3,-4], offset 1, stride 2, neg → [-2, 4]
        let p = tensor_pickle("FloatStorage", 4, 1, &[2], &[2], Some("neg"));
        let t = load_tensor(&p, f32s(&[1., 2., 3., -4.])).unwrap();
        assert_eq!(t.to_raw().unwrap().data, f32s(&[-2., 4.]));
    }

    #[test]
    fn strided_views_are_gathered() {
        // arange(12).reshape(3,4).t(): size (4,3) stride (1,4)
        let p = tensor_pickle("FloatStorage", 12, 0, &[4, 3], &[1, 4], None);
        let vals: Vec<f32> = (0..12).map(|x| x as f32).collect();
        let t = load_tensor(&p, f32s(&vals)).unwrap();
        assert_eq!(
            t.to_raw().unwrap().data,
            f32s(&[0., 4., 8., 1., 5., 9., 2., 6., 10., 3., 7., 11.])
        );
        // expand: size (2,3) stride (0,1) over 3 elements
        let p = tensor_pickle("FloatStorage", 3, 0, &[2, 3], &[0, 1], None);
        let t = load_tensor(&p, f32s(&[1., 2., 3.])).unwrap();
        assert_eq!(t.to_raw().unwrap().data, f32s(&[1., 2., 3., 1., 2., 3.]));
    }

    #[test]
    fn views_outside_the_storage_are_rejected() {
        let p = tensor_pickle("FloatStorage", 4, 3, &[2], &[1], None);
        let e = load_tensor(&p, f32s(&[0.; 4])).unwrap_err();
        assert!(e.0.contains("not resizable"), "{e}");
        // Empty tensors may sit at offset == numel.
        let p = tensor_pickle("FloatStorage", 4, 4, &[0], &[1], None);
        assert_eq!(
            load_tensor(&p, f32s(&[0.; 4]))
                .unwrap()
                .to_raw()
                .unwrap()
                .data
                .len(),
            0
        );
    }

    #[test]
    fn conj_on_real_tensor_is_rejected() {
        let p = tensor_pickle("FloatStorage", 2, 0, &[2], &[1], Some("conj"));
        assert!(load_tensor(&p, f32s(&[0.; 2]))
            .unwrap_err()
            .0
            .contains("conj"));
    }
}
