//! The pickle VM and [`parse`]. Objects live in an arena and the stack holds `Copy` items
//! (scalars inline, everything else an arena index), so BINGET shares instead of copying and the
//! arena drops without recursion. [`Limits`] bounds every resource hostile input could grow.
//! Opcodes are executed in `ops`, calls of allowlisted globals in `calls`, storages and tensors
//! are built in `tensor`; [`Pickle::into_value`] (in `freeze`) turns the arena into a value tree.

mod calls;
mod ops;
mod tensor;

use crate::checkpoint::pickle::allowlist::opcode_name;
use crate::checkpoint::pickle::value::DictKind;
use crate::checkpoint::raw::DType;
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::io::Read;

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
    /// Bytes of dotted tensor names produced when flattening the result.
    pub max_name_bytes: u64,
    /// The VM's working memory (objects with their strings and items, dict entries, memo),
    /// estimated as it grows: at most this many bytes…
    pub max_heap_bytes: u64,
    /// …and at most 32 MiB plus this many bytes per byte of pickle, so that a small pickle cannot
    /// claim much memory by copying shared containers (`OrderedDict(d)` a million times).
    pub heap_per_pickle_byte: u64,
}

/// The part of the working-memory limit that does not depend on the pickle's size.
pub const HEAP_FLOOR: u64 = 32 << 20;

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
            max_name_bytes: crate::checkpoint::pickle::value::DEFAULT_MAX_NAME_BYTES,
            max_heap_bytes: 4 << 30,
            heap_per_pickle_byte: 64,
        }
    }
}

/// How BINPERSID ids look: 5-tuples in zip files, 6-tuples (with view metadata) in legacy files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PidFormat {
    /// `('storage', storage_type, key, location, numel)`.
    Zip,
    /// `('storage', storage_type, key, location, numel, view_metadata)`.
    Legacy,
}

/// A stack slot: scalars inline, everything else a reference into the arena.
#[derive(Debug, Clone, Copy)]
pub(super) enum Item {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// Index into [`crate::checkpoint::pickle::ALLOWED_GLOBALS`].
    Global(u16),
    Ref(u32),
}

/// An object in the arena.
#[derive(Debug)]
pub(super) enum Node {
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
    /// Boxed, as is `Tensor`: every node costs the size of the largest variant.
    Dict(Box<DictNode>),
    /// A storage from BINPERSID: spec index, and for legacy sub-storage views the element range.
    Storage {
        spec: usize,
        start: usize,
        len: usize,
    },
    Tensor(Box<TensorNode>),
}

#[derive(Debug)]
pub(super) struct DictNode {
    pub(super) kind: DictKind,
    pub(super) entries: Vec<(Item, Item)>,
    index: HashMap<Key, usize>,
    pub(super) attrs: Vec<(Item, Item)>,
}

#[derive(Debug, Clone)]
pub(super) struct TensorNode {
    pub(super) spec: usize,
    pub(super) dtype: DType,
    pub(super) offset: usize,
    pub(super) shape: Vec<i64>,
    pub(super) stride: Vec<i64>,
    pub(super) requires_grad: bool,
    pub(super) parameter: bool,
    pub(super) neg: bool,
    pub(super) conj: bool,
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
    /// The record key the persistent id names.
    pub key: String,
    /// Element type of the storage (uint8 for UntypedStorage).
    pub dtype: DType,
    /// The pid names `torch.storage.UntypedStorage`.
    pub untyped: bool,
    /// The device string of the pid (`cpu`, `cuda:0`), kept as metadata.
    pub location: String,
    /// Elements of `dtype`, as the pid says.
    pub numel: usize,
    /// `numel × dtype.size()`: the exact record length required.
    pub nbytes: usize,
}

/// A parsed pickle: objects, the root and the storages it references. Turn it into a
/// [`Value`](crate::checkpoint::pickle::Value) with [`Pickle::into_value`] once the storage bytes are loaded.
#[derive(Debug)]
pub struct Pickle {
    pub(super) arena: Vec<Node>,
    pub(super) root: Item,
    pub(super) storages: Vec<StorageSpec>,
    pub(super) limits: Limits,
    /// Protocol from PROTO (0 when absent).
    pub protocol: u8,
    /// Bytes consumed, STOP included.
    pub consumed: u64,
    /// The working memory the parse was charged (an estimate of its peak, in bytes).
    pub working_memory: u64,
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
    fn eof(&self) -> Error {
        Error::pickle(format!(
            "pickle data truncated at byte {} (unexpected end of data)",
            self.pos
        ))
    }
    fn fill(&mut self, buf: &mut [u8]) -> Result<()> {
        if (buf.len() as u64) > self.remaining() {
            return Err(self.eof());
        }
        self.r
            .read_exact(buf)
            .map_err(|e| Error::pickle(format!("reading pickle at byte {}: {e}", self.pos)))?;
        self.pos += buf.len() as u64;
        Ok(())
    }
    fn u8(&mut self) -> Result<u8> {
        let mut b = [0u8; 1];
        self.fill(&mut b)?;
        Ok(b[0])
    }
    fn arr<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut b = [0u8; N];
        self.fill(&mut b)?;
        Ok(b)
    }
    fn bytes(&mut self, n: usize) -> Result<Vec<u8>> {
        if n as u64 > self.remaining() {
            return Err(self.eof());
        }
        let mut v = vec![0u8; n];
        self.fill(&mut v)?;
        Ok(v)
    }
    /// A `\n`-terminated line (GLOBAL operands), at most 1000 bytes.
    fn line(&mut self) -> Result<String> {
        let mut v = Vec::new();
        loop {
            let b = self.u8()?;
            if b == b'\n' {
                break;
            }
            if v.len() >= 1000 {
                return Err(Error::pickle(format!(
                    "GLOBAL operand longer than 1000 bytes at byte {}",
                    self.pos
                )));
            }
            v.push(b);
        }
        String::from_utf8(v)
            .map_err(|_| Error::pickle(format!("GLOBAL operand is not UTF-8 at byte {}", self.pos)))
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
    /// Work done: one per opcode, plus the items a call copies and the nodes a dict key hashes.
    ops: std::cell::Cell<u64>,
    /// Estimated bytes of working memory, and its limit for this pickle.
    heap: u64,
    max_heap: u64,
}

/// Parses one pickle (up to and including STOP) from `r`, which holds at most `len` more bytes.
/// Trailing bytes after STOP are left unread, as torch ignores them.
pub fn parse<R: Read>(r: &mut R, len: u64, format: PidFormat, limits: &Limits) -> Result<Pickle> {
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
        ops: std::cell::Cell::new(0),
        heap: 0,
        max_heap: limits
            .max_heap_bytes
            .min(HEAP_FLOOR.saturating_add(limits.heap_per_pickle_byte.saturating_mul(len))),
    };
    let mut protocol = 0u8;
    loop {
        vm.tick(1)?;
        let at = input.pos;
        let op = match input.u8() {
            Ok(op) => op,
            Err(_) if at == 0 => return Err(Error::pickle("empty pickle (no data)")),
            Err(_) => {
                return Err(Error::pickle(format!(
                    "pickle data ends at byte {at} without a STOP opcode (truncated)"
                )))
            }
        };
        let step = vm.step(op, &mut input, &mut protocol);
        match step {
            Ok(true) => {
                let root = vm
                    .pop()
                    .map_err(|e| Error::pickle(format!("at byte {at} (STOP): {e}")))?;
                return Ok(Pickle {
                    arena: std::mem::take(&mut vm.arena),
                    root,
                    storages: std::mem::take(&mut vm.storages),
                    limits: limits.clone(),
                    protocol,
                    consumed: input.pos,
                    working_memory: vm.heap,
                });
            }
            Ok(false) => {}
            Err(e) => {
                return Err(Error::pickle(format!(
                    "at byte {at} ({}): {}",
                    opcode_name(op),
                    e
                )))
            }
        }
    }
}

impl Vm<'_> {
    fn push(&mut self, item: Item) -> Result<()> {
        if self.stack.len() >= self.limits.max_stack {
            return Err(Error::pickle(format!(
                "pickle stack exceeds {} items; refusing",
                self.limits.max_stack
            )));
        }
        self.stack.push(item);
        Ok(())
    }

    /// Counts `n` units of work; past `max_ops` the pickle is refused.
    fn tick(&self, n: u64) -> Result<()> {
        let ops = self.ops.get().saturating_add(n);
        self.ops.set(ops);
        if ops > self.limits.max_ops {
            return Err(Error::pickle(format!(
                "more than {} pickle operations; refusing",
                self.limits.max_ops
            )));
        }
        Ok(())
    }

    /// Counts `bytes` of working memory; past the limit the pickle is refused.
    pub(super) fn charge_heap(&mut self, bytes: u64) -> Result<()> {
        self.heap = self.heap.saturating_add(bytes);
        if self.heap > self.max_heap {
            return Err(Error::pickle(format!(
                "the pickle needs more than {} bytes of working memory (Limits::max_heap_bytes {}, \
                 or {} bytes plus {} per byte of pickle); refusing",
                self.max_heap,
                self.limits.max_heap_bytes,
                HEAP_FLOOR,
                self.limits.heap_per_pickle_byte
            )));
        }
        Ok(())
    }

    fn alloc(&mut self, node: Node) -> Result<Item> {
        self.charge_heap(node_bytes(&node))?;
        if self.arena.len() >= self.limits.max_objects {
            return Err(Error::pickle(format!(
                "pickle creates more than {} objects; refusing",
                self.limits.max_objects
            )));
        }
        self.arena.push(node);
        Ok(Item::Ref((self.arena.len() - 1) as u32))
    }

    fn base(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self) -> Result<Item> {
        if self.stack.len() <= self.base() {
            return Err(Error::pickle("stack underflow (malformed pickle)"));
        }
        self.stack
            .pop()
            .ok_or_else(|| Error::pickle("stack underflow"))
    }

    fn top(&self) -> Result<Item> {
        if self.stack.len() <= self.base() {
            return Err(Error::pickle("stack underflow (malformed pickle)"));
        }
        self.stack
            .last()
            .copied()
            .ok_or_else(|| Error::pickle("stack underflow"))
    }

    fn set_top(&mut self, item: Item) -> Result<()> {
        if self.stack.len() <= self.base() {
            return Err(Error::pickle("stack underflow (malformed pickle)"));
        }
        if let Some(t) = self.stack.last_mut() {
            *t = item;
        }
        Ok(())
    }

    fn pop_mark(&mut self) -> Result<Vec<Item>> {
        let mark = self
            .marks
            .pop()
            .ok_or_else(|| Error::pickle("MARK missing (malformed pickle)"))?;
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

    /// Items of a tuple or list (call arguments, sizes, strides); the copy counts as work.
    fn seq_of(&self, item: Item) -> Option<Vec<Item>> {
        let n = match self.node(item) {
            Some(Node::Tuple(t)) => t.len(),
            Some(Node::List(l)) => l.len(),
            Some(Node::Size(v)) => v.len(),
            _ => 0,
        };
        self.ops.set(self.ops.get().saturating_add(n as u64));
        match self.node(item) {
            Some(Node::Tuple(t)) => Some(t.to_vec()),
            Some(Node::List(l)) => Some(l.clone()),
            Some(Node::Size(v)) => Some(v.iter().map(|&i| Item::Int(i)).collect()),
            _ => None,
        }
    }

    /// The hashable identity of a dict key or set item.
    fn key(&mut self, item: Item, depth: usize) -> Result<Key> {
        let mut size = KeySize::default();
        self.key_within(item, depth, &mut size)
    }

    fn key_within(&mut self, item: Item, depth: usize, size: &mut KeySize) -> Result<Key> {
        // Each node hashed (and each 64 bytes of a string copied) is work, and a key is copied
        // whole: a tuple key built from shared sub-tuples expands exponentially, so one key may
        // have at most MAX_KEY_NODES parts and MAX_KEY_BYTES bytes.
        // (Checked before anything is copied: a tuple's or size's parts count up front.)
        let (payload, parts) = match self.node(item) {
            Some(Node::Str(s)) => (s.len(), 0),
            Some(Node::Bytes(b)) | Some(Node::BigInt(b)) => (b.len(), 0),
            Some(Node::Size(v)) => (v.len() * 8, v.len()),
            Some(Node::Tuple(t)) => (0, t.len()),
            _ => (0, 0),
        };
        self.tick(1 + payload as u64 / 64)?;
        size.nodes += 1 + parts as u64;
        size.bytes += payload as u64;
        if size.nodes > MAX_KEY_NODES || size.bytes > MAX_KEY_BYTES {
            return Err(Error::pickle(format!(
                "a dict key or set item with more than {MAX_KEY_NODES} parts or {MAX_KEY_BYTES} bytes \
                 (shared tuples expand when hashed); refusing"
            )));
        }
        if depth > self.limits.max_depth {
            return Err(Error::pickle(format!(
                "dict key nested deeper than {} levels",
                self.limits.max_depth
            )));
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
                        size.nodes -= 1; // counted above, with the tuple
                        keys.push(self.key_within(*x, depth + 1, size)?);
                    }
                    Key::Tuple(keys)
                }
                Some(Node::Tensor(_)) | Some(Node::Storage { .. }) => {
                    Key::Ident(u64::MAX - i as u64)
                }
                _ => {
                    return Err(Error::pickle(format!(
                        "unhashable type: '{}' used as a dict key or set item",
                        self.type_name(item)
                    )))
                }
            },
        })
    }

    fn set_item(&mut self, target: Item, k: Item, v: Item) -> Result<()> {
        let key = self.key(k, 0)?;
        let max = self.limits.max_container;
        let Item::Ref(t) = target else {
            return Err(Error::pickle("SETITEM target is not a dict"));
        };
        match self.arena.get_mut(t as usize) {
            Some(Node::Dict(d)) => {
                if let Some(&i) = d.index.get(&key) {
                    // Python keeps the first key object and position, replaces the value.
                    d.entries[i].1 = v;
                } else {
                    if d.entries.len() >= max {
                        return Err(Error::pickle(format!(
                            "dict with more than {max} items; refusing"
                        )));
                    }
                    let cost = ENTRY_BYTES + key_bytes(&key);
                    d.index.insert(key, d.entries.len());
                    d.entries.push((k, v));
                    self.charge_heap(cost)?;
                }
                Ok(())
            }
            _ => Err(Error::pickle("SETITEM target is not a dict")),
        }
    }

    fn check_dict_target(&self, op: &str) -> Result<Item> {
        let target = self.top()?;
        match self.node(target) {
            Some(Node::Dict(_)) => Ok(target),
            _ => Err(Error::pickle(format!(
                "Can only {op} for dict, collections.OrderedDict, collections.Counter, but got {}",
                self.type_name(target)
            ))),
        }
    }

    fn new_dict(&mut self, kind: DictKind) -> Result<Item> {
        self.alloc(Node::Dict(Box::new(DictNode {
            kind,
            entries: Vec::new(),
            index: HashMap::new(),
            attrs: Vec::new(),
        })))
    }

    fn new_tuple(&mut self, items: Vec<Item>) -> Result<Item> {
        if items.len() > self.limits.max_container {
            return Err(Error::pickle(format!(
                "tuple with more than {} items; refusing",
                self.limits.max_container
            )));
        }
        self.alloc(Node::Tuple(items.into_boxed_slice()))
    }

    /// A flag argument: bool, int (Python truthiness) or None (false).
    fn bool_arg(&self, g: &str, what: &str, item: Item) -> Result<bool> {
        match item {
            Item::Bool(b) => Ok(b),
            Item::Int(i) => Ok(i != 0),
            Item::None => Ok(false),
            other => Err(Error::pickle(format!(
                "{g}: {what} must be a bool, got {}",
                self.type_name(other)
            ))),
        }
    }
}

/// Estimated bytes of a dict entry besides its key's payload: the (key, value) pair and the
/// index slot, each with the slack of a growing vector or hash table (half again, and the
/// table's load factor).
pub(super) const ENTRY_BYTES: u64 =
    3 * std::mem::size_of::<Item>() as u64 + 2 * (std::mem::size_of::<Key>() as u64 + 8);

/// Heap bytes a key owns.
fn key_bytes(k: &Key) -> u64 {
    match k {
        Key::Str(s) | Key::Device(s) => s.len() as u64,
        Key::Big(b) | Key::Bytes(b) => b.len() as u64,
        Key::Tuple(t) => t
            .iter()
            .map(|k| std::mem::size_of::<Key>() as u64 + key_bytes(k))
            .sum(),
        _ => 0,
    }
}

/// Estimated bytes an arena node takes: the node (half again for the arena's growth) and what
/// it owns.
fn node_bytes(node: &Node) -> u64 {
    let item = std::mem::size_of::<Item>();
    let owned = match node {
        Node::Str(s) | Node::Device(s) => s.len(),
        Node::Bytes(b) | Node::ByteArray(b) | Node::BigInt(b) => b.len(),
        Node::Size(v) => v.len() * 8,
        Node::List(v) | Node::Set(v) => v.capacity() * item,
        Node::Tuple(v) => v.len() * item,
        Node::Dict(d) => {
            std::mem::size_of::<DictNode>()
                + d.entries.capacity() * 2 * item
                + d.attrs.capacity() * 2 * item
        }
        Node::Tensor(t) => std::mem::size_of::<TensorNode>() + (t.shape.len() + t.stride.len()) * 8,
        Node::Complex(..) | Node::Storage { .. } => 0,
    };
    (std::mem::size_of::<Node>() * 3 / 2 + owned) as u64
}

/// Parts (tuple items, recursively) of one dict key or set item, at most.
pub const MAX_KEY_NODES: u64 = 1 << 16;
/// Bytes (strings, bytes and sizes inside it) of one dict key or set item, at most.
pub const MAX_KEY_BYTES: u64 = 64 << 20;

/// What a key being hashed has cost so far.
#[derive(Default)]
struct KeySize {
    nodes: u64,
    bytes: u64,
}
