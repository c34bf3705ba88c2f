//! From the parsed arena to a [`Value`] tree: [`Pickle::into_value`] attaches the storage bytes
//! and freezes each object once, so shared references stay shared (`Arc`); cycles and nesting
//! deeper than `Limits::max_depth` are errors. Also the root's shape for the legacy format's
//! small pickles (magic number, protocol, key list).

use super::vm::{Item, Node, Pickle, StorageSpec};
use crate::checkpoint::pickle::allowlist::ALLOWED_GLOBALS;
use crate::checkpoint::pickle::value::{BigInt, Dict, Storage, Tensor, Value};
use crate::error::{Error, Result};
use std::sync::Arc;

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
    pub fn into_value(self, data: Vec<Vec<u8>>) -> Result<Value> {
        if data.len() != self.storages.len() {
            return Err(Error::pickle(format!(
                "{} storages referenced but {} loaded",
                self.storages.len(),
                data.len()
            )));
        }
        let mut storages = Vec::with_capacity(data.len());
        for (spec, bytes) in self.storages.iter().zip(data) {
            if bytes.len() != spec.nbytes {
                return Err(Error::pickle(format!(
                    "storage {:?}: record has {} bytes, expected {} ({} × {})",
                    spec.key,
                    bytes.len(),
                    spec.nbytes,
                    spec.numel,
                    spec.dtype
                )));
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
    fn freeze(&mut self, item: Item, depth: usize) -> Result<Value> {
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
            return Err(Error::pickle(format!(
                "containers nested deeper than {} levels; refusing",
                self.max_depth
            )));
        }
        if self.busy.get(i).copied().unwrap_or(false) {
            return Err(Error::pickle(
                "a container contains itself (recursive structure); not supported",
            ));
        }
        self.busy[i] = true;
        let seq = |f: &mut Self, items: &[Item]| -> Result<Arc<[Value]>> {
            items
                .iter()
                .map(|&x| f.freeze(x, depth + 1))
                .collect::<Result<Vec<_>>>()
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
                    return Err(Error::pickle(
                        "a legacy sub-storage view saved on its own is not supported",
                    ));
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
