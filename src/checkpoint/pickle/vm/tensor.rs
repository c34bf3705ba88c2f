//! Storages and tensors: BINPERSID storage ids (zip and legacy forms, legacy sub-storage views)
//! and `_rebuild_tensor[_v2|_v3]`, validated as torch's `set_` validates a view (dtype, ranks,
//! non-negative sizes, strides and offset, every element inside the storage, neg/conj bits).

use super::{Item, Node, PidFormat, StorageSpec, TensorNode, Vm};
use crate::checkpoint::pickle::allowlist::{storage_dtype, ALLOWED_GLOBALS};
use crate::checkpoint::raw::{checked_numel, DType};
use crate::error::{Error, Result};

impl Vm<'_> {
    /// BINPERSID: a `('storage', type, key, location, numel[, view])` id becomes a storage
    /// node; each distinct key is one [`StorageSpec`] the container must provide.
    pub(super) fn persistent_load(&mut self, pid: Item) -> Result<Item> {
        let Some(fields) = (match self.node(pid) {
            Some(Node::Tuple(t)) => Some(t.to_vec()),
            _ => None,
        }) else {
            return Err(Error::pickle(format!(
                "persistent id must be a ('storage', …) tuple, got {} (torch refuses anything else too)",
                self.type_name(pid)
            )));
        };
        let typename = fields.first().and_then(|&f| self.ascii_of(f));
        if typename.as_deref() != Some("storage") {
            return Err(Error::pickle(format!(
                "Only persistent_load of storage is allowed, but got {} (e.g. a whole-module save)",
                typename
                    .map(|t| format!("{t:?}"))
                    .unwrap_or_else(|| "a non-string".into())
            )));
        }
        let want = if self.format == PidFormat::Zip { 5 } else { 6 };
        if fields.len() != want {
            return Err(Error::pickle(format!(
                "storage persistent id has {} fields, expected {want}",
                fields.len()
            )));
        }
        let Item::Global(g) = fields[1] else {
            return Err(Error::pickle(format!(
                "storage type must be a global, got {}",
                self.type_name(fields[1])
            )));
        };
        let gname = ALLOWED_GLOBALS[g as usize];
        let dtype = storage_dtype(gname)?;
        let key = self
            .str_of(fields[2])
            .ok_or_else(|| {
                Error::pickle(format!(
                    "storage key must be a str, got {}",
                    self.type_name(fields[2])
                ))
            })?
            .to_string();
        let location = self.ascii_of(fields[3]).ok_or_else(|| {
            Error::pickle(format!(
                "storage {key:?}: location must be a str, got {}",
                self.type_name(fields[3])
            ))
        })?;
        let numel = self
            .int_of(fields[4])
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| {
                Error::pickle(format!("storage {key:?}: numel must be a non-negative int"))
            })?;
        let (dtype, untyped) = match dtype {
            Some(d) => (d, false),
            None => (DType::U8, true),
        };
        let nbytes = numel
            .checked_mul(dtype.size())
            .ok_or_else(|| Error::pickle(format!("storage {key:?}: {numel} elements overflow")))?;
        let spec = match self.storage_index.get(&key) {
            Some(&i) => {
                let s = &self.storages[i];
                if s.dtype != dtype || s.untyped != untyped {
                    return Err(Error::pickle(format!(
                        "storage {key:?} is used as both {} and {}; torch would silently reinterpret it as the first — refusing",
                        s.dtype, dtype
                    )));
                }
                if s.numel != numel {
                    return Err(Error::pickle(format!(
                        "storage {key:?} is declared with {} and with {numel} elements",
                        s.numel
                    )));
                }
                i
            }
            None => {
                self.charge_heap(
                    (std::mem::size_of::<StorageSpec>() + 2 * key.len() + location.len() + 64)
                        as u64,
                )?;
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
                    Error::pickle(format!(
                        "storage {key:?}: view metadata must be (key, offset, size)"
                    ))
                })?;
            let view_key = self
                .str_of(view[0])
                .ok_or_else(|| Error::pickle(format!("storage {key:?}: view key must be a str")))?
                .to_string();
            let off = self.int_of(view[1]).and_then(|n| usize::try_from(n).ok());
            let size = self.int_of(view[2]).and_then(|n| usize::try_from(n).ok());
            let (Some(off), Some(size)) = (off, size) else {
                return Err(Error::pickle(format!(
                    "storage {key:?}: view offset and size must be non-negative ints"
                )));
            };
            match self.views.get(&view_key) {
                Some(&(s, o, l)) if s == spec => (o, l),
                Some(_) => {
                    return Err(Error::pickle(format!(
                        "storage view {view_key:?} is defined over two different storages"
                    )))
                }
                None => {
                    if off.checked_add(size).is_none_or(|end| end > numel) {
                        return Err(Error::pickle(format!(
                            "storage view {view_key:?} [{off}, {off}+{size}) reaches past storage {key:?} of {numel} elements"
                        )));
                    }
                    self.charge_heap(view_key.len() as u64 + 64)?;
                    self.views.insert(view_key, (spec, off, size));
                    (off, size)
                }
            }
        } else {
            (0, numel)
        };
        self.alloc(Node::Storage { spec, start, len })
    }

    /// `nn.Parameter(data, requires_grad)`: the tensor node marked as a parameter.
    pub(super) fn parameter(&mut self, g: &str, data: Item, requires_grad: bool) -> Result<Item> {
        let t = match self.node(data) {
            Some(Node::Tensor(t)) => t.clone(),
            _ => {
                return Err(Error::pickle(format!(
                    "{g}: data must be a tensor, got {}",
                    self.type_name(data)
                )))
            }
        };
        self.alloc(Node::Tensor(Box::new(TensorNode {
            parameter: true,
            requires_grad,
            ..*t
        })))
    }

    /// `_rebuild_tensor[_v2|_v3](storage, offset, size, stride, …)`, validated as torch's
    /// `set_` does, but stricter on nothing that torch accepts.
    pub(super) fn rebuild_tensor(
        &mut self,
        g: &str,
        args: &[Item],
        requires_grad: bool,
        dtype: Option<DType>,
        metadata: Item,
    ) -> Result<Item> {
        let (spec, start, len) = match self.node(args[0]) {
            Some(&Node::Storage { spec, start, len }) => (spec, start, len),
            _ => {
                return Err(Error::pickle(format!(
                    "{g}: storage argument is a {}, not a storage",
                    self.type_name(args[0])
                )))
            }
        };
        let sspec = &self.storages[spec];
        let key = sspec.key.clone();
        let sdtype = sspec.dtype;
        let dtype = dtype.unwrap_or(sdtype);
        let what = format!("tensor over storage {key:?}");
        let offset = self
            .int_of(args[1])
            .ok_or_else(|| Error::pickle(format!("{what}: storage_offset must be an int")))?;
        if offset < 0 {
            return Err(Error::pickle(format!(
                "{what}: invalid storage offset {offset}"
            )));
        }
        let ints = |vm: &Self, it: Item, name: &str| -> Result<Vec<i64>> {
            let seq = vm.seq_of(it).ok_or_else(|| {
                Error::pickle(format!(
                    "{what}: {name} must be a tuple, got {}",
                    vm.type_name(it)
                ))
            })?;
            seq.iter()
                .map(|&x| {
                    vm.int_of(x)
                        .ok_or_else(|| Error::pickle(format!("{what}: {name} must hold ints")))
                })
                .collect()
        };
        let shape = ints(self, args[2], "size")?;
        let stride = ints(self, args[3], "stride")?;
        if shape.len() != stride.len() {
            return Err(Error::pickle(format!(
                "{what}: size {shape:?} and stride {stride:?} have different ranks"
            )));
        }
        if let Some(n) = shape.iter().find(|&&n| n < 0) {
            return Err(Error::pickle(format!(
                "{what}: negative dimension {n} in size {shape:?}"
            )));
        }
        if stride.iter().any(|&s| s < 0) {
            return Err(Error::pickle(format!(
                "{what}: negative stride in {stride:?}"
            )));
        }
        let numel = checked_numel(&shape)
            .ok_or_else(|| Error::pickle(format!("{what}: size {shape:?} overflows")))?;
        // The view's element range, in storage bytes: legacy sub-storage views narrow it.
        let view_start = start * sdtype.size();
        let view_bytes = len * sdtype.size();
        if dtype.size() != 0 && !view_start.is_multiple_of(dtype.size()) {
            return Err(Error::pickle(format!(
                "{what}: view start is not aligned to {dtype}"
            )));
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
                return Err(Error::pickle(format!(
                    "{what}: a {dtype} view with offset {offset}, size {shape:?}, stride {stride:?} needs {need} bytes \
                     but the storage has {view_bytes} (Trying to resize storage that is not resizable)"
                )));
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
                            return Err(Error::pickle(format!(
                                "{what}: unknown tensor metadata {other:?}"
                            )))
                        }
                        None => {
                            return Err(Error::pickle(format!(
                                "{what}: tensor metadata keys must be strings"
                            )))
                        }
                    }
                }
            }
            _ => {
                return Err(Error::pickle(format!(
                    "{what}: metadata must be a dict, got {}",
                    self.type_name(metadata)
                )))
            }
        }
        if conj && !matches!(dtype, DType::C32 | DType::C64 | DType::C128) {
            return Err(Error::pickle(format!(
                "{what}: the conj bit is set on a {dtype} tensor"
            )));
        }
        if neg && matches!(dtype, DType::Bool | DType::F8E8M0) {
            return Err(Error::pickle(format!(
                "{what}: the neg bit is set on a {dtype} tensor"
            )));
        }
        let offset = offset + view_start / dtype.size();
        self.alloc(Node::Tensor(Box::new(TensorNode {
            spec,
            dtype,
            offset,
            shape,
            stride,
            requires_grad,
            parameter: false,
            neg,
            conj,
        })))
    }
}
