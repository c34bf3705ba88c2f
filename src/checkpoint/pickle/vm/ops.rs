//! Opcode execution: [`Vm::step`] dispatches each of the 34 opcodes torch's weights_only
//! unpickler accepts to one group (globals and calls, tuples, containers, scalars, memo); any
//! other opcode is an error naming it.

use super::{Input, Item, Node, Vm};
use crate::checkpoint::pickle::allowlist::{opcode_name, resolve_global, ALLOWED_GLOBALS};
use crate::checkpoint::pickle::value::DictKind;
use crate::error::{Error, Result};
use std::io::Read;

impl Vm<'_> {
    /// Executes one opcode; `Ok(true)` at STOP.
    pub(super) fn step<R: Read>(
        &mut self,
        op: u8,
        input: &mut Input<R>,
        protocol: &mut u8,
    ) -> Result<bool> {
        match op {
            0x80 => *protocol = input.u8()?, // PROTO (torch accepts any version, warning if ≠ 2)
            b'.' => return Ok(true),         // STOP
            b'c' | b'R' | 0x81 | b'b' | b'Q' => self.call_op(op, input)?,
            b'(' | b't' | 0x85 | 0x86 | 0x87 | b')' => self.tuple_op(op)?,
            b']' | b'a' | b'e' | b'}' | b's' | b'u' | 0x8f => self.container_op(op)?,
            b'N' | 0x88 | 0x89 | b'J' | b'K' | b'M' | 0x8a | b'G' | b'X' | b'U' => {
                self.scalar_op(op, input)?
            }
            b'h' | b'j' | b'q' | b'r' => self.memo_op(op, input)?,
            _ => return Err(unsupported(op)),
        }
        Ok(false)
    }

    /// GLOBAL, REDUCE, NEWOBJ, BUILD and BINPERSID.
    fn call_op<R: Read>(&mut self, op: u8, input: &mut Input<R>) -> Result<()> {
        match op {
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
                    return Err(Error::pickle(format!(
                        "Trying to call reduce for unrecognized function of type {}",
                        self.type_name(func)
                    )));
                };
                let args = self.seq_of(args).ok_or_else(|| {
                    Error::pickle(format!(
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
                    return Err(Error::pickle(format!("Can only create new object for nn.Parameter or allowlisted classes, but got {}", self.type_name(cls))));
                };
                let args = self.seq_of(args).ok_or_else(|| {
                    Error::pickle(format!(
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
            _ => return Err(unsupported(op)),
        }
        Ok(())
    }

    /// MARK, TUPLE, TUPLE1–3 and EMPTY_TUPLE.
    fn tuple_op(&mut self, op: u8) -> Result<()> {
        match op {
            b'(' => {
                if self.marks.len() >= self.limits.max_stack {
                    return Err(Error::pickle("too many MARKs; refusing"));
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
            _ => return Err(unsupported(op)),
        }
        Ok(())
    }

    /// EMPTY_LIST, APPEND(S), EMPTY_DICT, SETITEM(S) and EMPTY_SET.
    fn container_op(&mut self, op: u8) -> Result<()> {
        match op {
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
                // Items, with the slack of a growing vector.
                self.charge_heap((items.len() * std::mem::size_of::<Item>() * 3 / 2) as u64)?;
                let max = self.limits.max_container;
                let what = if op == b'a' { "append to" } else { "extend" };
                let name = self.type_name(target);
                match target {
                    Item::Ref(i) => match self.arena.get_mut(i as usize) {
                        Some(Node::List(l)) => {
                            if l.len() + items.len() > max {
                                return Err(Error::pickle(format!(
                                    "list with more than {max} items; refusing"
                                )));
                            }
                            l.extend(items);
                        }
                        _ => {
                            return Err(Error::pickle(format!(
                                "Can only {what} lists, but got {name}"
                            )))
                        }
                    },
                    _ => {
                        return Err(Error::pickle(format!(
                            "Can only {what} lists, but got {name}"
                        )))
                    }
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
                    return Err(Error::pickle(
                        "SETITEMS with an odd number of items (a key without a value)",
                    ));
                }
                for kv in items.chunks_exact(2) {
                    self.set_item(target, kv[0], kv[1])?;
                }
            }
            0x8f => {
                let s = self.alloc(Node::Set(Vec::new()))?;
                self.push(s)?;
            }
            _ => return Err(unsupported(op)),
        }
        Ok(())
    }

    /// NONE, NEWTRUE/NEWFALSE, the integers, BINFLOAT and the two string opcodes.
    fn scalar_op<R: Read>(&mut self, op: u8, input: &mut Input<R>) -> Result<()> {
        match op {
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
                    .map_err(|_| Error::pickle("SHORT_BINSTRING is not valid UTF-8"))?;
                let s = self.alloc(Node::Str(s.into_boxed_str()))?;
                self.push(s)?;
            }
            _ => return Err(unsupported(op)),
        }
        Ok(())
    }

    /// BINGET, LONG_BINGET, BINPUT and LONG_BINPUT.
    fn memo_op<R: Read>(&mut self, op: u8, input: &mut Input<R>) -> Result<()> {
        match op {
            b'h' | b'j' => {
                let idx = if op == b'h' {
                    input.u8()? as u32
                } else {
                    u32::from_le_bytes(input.arr()?)
                };
                let item = *self
                    .memo
                    .get(&idx)
                    .ok_or_else(|| Error::pickle(format!("memo key {idx} not found")))?;
                self.push(item)?;
            }
            b'q' | b'r' => {
                let idx = if op == b'q' {
                    input.u8()? as u32
                } else {
                    u32::from_le_bytes(input.arr()?)
                };
                let item = self.top()?;
                if !self.memo.contains_key(&idx) {
                    if self.memo.len() >= self.limits.max_memo {
                        return Err(Error::pickle(format!(
                            "more than {} memo entries; refusing",
                            self.limits.max_memo
                        )));
                    }
                    self.charge_heap(MEMO_ENTRY_BYTES)?;
                }
                self.memo.insert(idx, item);
            }
            _ => return Err(unsupported(op)),
        }
        Ok(())
    }

    /// LONG1: two's-complement little-endian.
    fn long(&mut self, bytes: Vec<u8>) -> Result<Item> {
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
}

/// Estimated bytes of a memo entry (key, item and hash-table overhead).
const MEMO_ENTRY_BYTES: u64 = 32;

/// The error for an opcode outside the accepted 34, with a hint for the usual causes.
fn unsupported(op: u8) -> Error {
    let hint = match op {
        0x95 | 0x8c | 0x94 | 0x93 => {
            " (a pickle protocol 4+ opcode: torch.save(..., pickle_protocol=4) files are refused by \
             torch.load(weights_only=True) too; re-save with the default protocol 2)"
        }
        b'B' | b'C' => " (a `bytes` object pickled with protocol 3; torch.load(weights_only=True) refuses it too)",
        _ => "",
    };
    Error::pickle(format!(
        "Unsupported operand {op} ({}){hint}",
        opcode_name(op)
    ))
}

/// UTF-8 as torch decodes BINUNICODE (`surrogatepass`). Rust strings cannot hold lone
/// surrogates, so a string containing one is an error rather than silently altered.
fn decode_utf8_surrogatepass(bytes: Vec<u8>) -> Result<String> {
    String::from_utf8(bytes).map_err(|e| {
        let bytes = e.as_bytes();
        let at = e.utf8_error().valid_up_to();
        if bytes.get(at) == Some(&0xED) && bytes.get(at + 1).is_some_and(|b| *b >= 0xA0) {
            Error::pickle("string contains a lone UTF-16 surrogate, which rnnkit cannot represent")
        } else {
            Error::pickle(format!(
                "BINUNICODE string is not valid UTF-8 (at byte {at} of the string)"
            ))
        }
    })
}
