//! The pickle subset that `torch.load(weights_only=True)` accepts, interpreted safely
//! (docs/FORMATS.md §1.4–1.8), and the value tree it produces.
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
//! come from the container ([`crate::checkpoint::pth`]); this module never touches files and never
//! needs libtorch. Every error is [`crate::error::Error::Pickle`]; the container adds the path.
//!
//! Files: `value` (the tree), `allowlist` (what may be named), `vm` (the VM and [`parse`], with
//! `vm/ops`, `vm/calls` and `vm/tensor`), `freeze` (arena → tree).

mod allowlist;
mod freeze;
mod value;
mod vm;

#[cfg(test)]
mod tests;

pub use allowlist::{split_global, ALLOWED_GLOBALS};
pub(crate) use value::resolve_neg_conj;
pub use value::{BigInt, Dict, DictKind, Storage, Tensor, Value};
pub use vm::{parse, Limits, Pickle, PidFormat, StorageSpec};
