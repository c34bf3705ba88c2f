//! Calls of allowlisted globals: REDUCE (`func(*args)`), NEWOBJ (`cls.__new__(cls, *args)`)
//! and BUILD, interpreted only for the callables whose meaning is known, with arity and type
//! checks. Nothing is imported or executed; every other global is refused by name.

use super::{Item, Node, Vm};
use crate::checkpoint::pickle::allowlist::{global_dtype, ALLOWED_GLOBALS};
use crate::checkpoint::pickle::value::DictKind;
use crate::error::{Error, Result};
use std::collections::HashMap;

impl Vm<'_> {
    /// REDUCE: `func(*args)` for the allowlisted callables whose meaning is known.
    pub(super) fn call(&mut self, g: &'static str, args: Vec<Item>, depth: usize) -> Result<Item> {
        if depth > 8 {
            return Err(Error::pickle("_rebuild_from_type_v2 nested too deeply"));
        }
        match g {
            "torch._utils._rebuild_tensor"
            | "torch._utils._rebuild_tensor_v2"
            | "torch._utils._rebuild_tensor_v3"
            | "torch._utils._rebuild_parameter"
            | "torch._utils._rebuild_parameter_with_state"
            | "torch.nn.parameter.Parameter"
            | "torch._tensor._rebuild_from_type_v2" => self.call_tensor(g, args, depth),
            "collections.OrderedDict" | "collections.Counter" | "builtins.set" => {
                self.call_collection(g, args)
            }
            "torch.Size" | "torch.device" | "_codecs.encode" | "builtins.bytearray"
            | "builtins.complex" => self.call_value(g, args),
            _ => Err(unsupported_call(g)),
        }
    }

    /// The tensor rebuild functions and `Parameter`.
    fn call_tensor(&mut self, g: &'static str, args: Vec<Item>, depth: usize) -> Result<Item> {
        match g {
            "torch._utils._rebuild_tensor" => {
                arity(g, &args, 4, 4)?;
                self.rebuild_tensor(g, &args[..4], false, None, Item::None)
            }
            "torch._utils._rebuild_tensor_v2" => {
                arity(g, &args, 6, 7)?;
                let metadata = args.get(6).copied().unwrap_or(Item::None);
                let rg = self.bool_arg(g, "requires_grad", args[4])?;
                self.rebuild_tensor(g, &args[..4], rg, None, metadata)
            }
            "torch._utils._rebuild_tensor_v3" => {
                arity(g, &args, 7, 8)?;
                let metadata = args.get(7).copied().unwrap_or(Item::None);
                let rg = self.bool_arg(g, "requires_grad", args[4])?;
                let Item::Global(d) = args[6] else {
                    return Err(Error::pickle(format!(
                        "{g}: dtype must be a torch dtype, got {}",
                        self.type_name(args[6])
                    )));
                };
                let dtype = global_dtype(ALLOWED_GLOBALS[d as usize])?;
                self.rebuild_tensor(g, &args[..4], rg, Some(dtype), metadata)
            }
            "torch._utils._rebuild_parameter" | "torch._utils._rebuild_parameter_with_state" => {
                arity(
                    g,
                    &args,
                    if g.ends_with("state") { 4 } else { 3 },
                    if g.ends_with("state") { 4 } else { 3 },
                )?;
                let rg = self.bool_arg(g, "requires_grad", args[1])?;
                self.parameter(g, args[0], rg)
            }
            "torch.nn.parameter.Parameter" => {
                arity(g, &args, 0, 2)?;
                self.new_object(g, args)
            }
            "torch._tensor._rebuild_from_type_v2" => {
                // (func, new_type, args, state): func(*args), cast to new_type; state holds
                // Python attributes, which carry no tensor data.
                arity(g, &args, 4, 4)?;
                let Item::Global(f) = args[0] else {
                    return Err(Error::pickle(format!(
                        "{g}: func must be a rebuild function, got {}",
                        self.type_name(args[0])
                    )));
                };
                let new_type = match args[1] {
                    Item::Global(t) => ALLOWED_GLOBALS[t as usize],
                    other => {
                        return Err(Error::pickle(format!(
                            "{g}: new_type must be a class, got {}",
                            self.type_name(other)
                        )))
                    }
                };
                let inner = self.seq_of(args[2]).ok_or_else(|| {
                    Error::pickle(format!(
                        "{g}: args must be a tuple, got {}",
                        self.type_name(args[2])
                    ))
                })?;
                let t = self.call(ALLOWED_GLOBALS[f as usize], inner, depth + 1)?;
                if !matches!(self.node(t), Some(Node::Tensor(_))) {
                    return Err(Error::pickle(format!(
                        "{g}: {} did not return a tensor",
                        ALLOWED_GLOBALS[f as usize]
                    )));
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
                    other => Err(Error::pickle(format!(
                        "{g}: tensor subclass {other} is not supported"
                    ))),
                }
            }
            _ => Err(unsupported_call(g)),
        }
    }

    /// `OrderedDict(…)`, `Counter(…)` and `set(…)`.
    fn call_collection(&mut self, g: &'static str, args: Vec<Item>) -> Result<Item> {
        match g {
            "collections.OrderedDict" | "collections.Counter" => {
                arity(g, &args, 0, 1)?;
                let kind = if g == "collections.Counter" {
                    DictKind::Counter
                } else {
                    DictKind::OrderedDict
                };
                let d = self.new_dict(kind)?;
                if let Some(&src) = args.first() {
                    let pairs: Vec<(Item, Item)> = match self.node(src) {
                        Some(Node::Dict(s)) => s.entries.clone(),
                        Some(Node::List(_)) | Some(Node::Tuple(_))
                            if kind == DictKind::OrderedDict =>
                        {
                            let mut pairs = Vec::new();
                            for p in self.seq_of(src).unwrap_or_default() {
                                match self.seq_of(p) {
                                    Some(kv) if kv.len() == 2 => pairs.push((kv[0], kv[1])),
                                    _ => {
                                        return Err(Error::pickle(format!(
                                            "{g}: items must be (key, value) pairs"
                                        )))
                                    }
                                }
                            }
                            pairs
                        }
                        _ => {
                            return Err(Error::pickle(format!(
                                "{g}: cannot build from {}",
                                self.type_name(src)
                            )))
                        }
                    };
                    for (k, v) in pairs {
                        self.set_item(d, k, v)?;
                    }
                }
                Ok(d)
            }
            "builtins.set" => {
                arity(g, &args, 0, 1)?;
                let items = match args.first() {
                    None => Vec::new(),
                    Some(&a) => match self.node(a) {
                        Some(Node::Set(s)) => s.clone(),
                        _ => self.seq_of(a).ok_or_else(|| {
                            Error::pickle(format!(
                                "{g}: argument must be a list, got {}",
                                self.type_name(a)
                            ))
                        })?,
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
            _ => Err(unsupported_call(g)),
        }
    }

    /// `torch.Size`, `torch.device`, `_codecs.encode`, `bytearray` and `complex`.
    fn call_value(&mut self, g: &'static str, args: Vec<Item>) -> Result<Item> {
        match g {
            "torch.Size" => {
                arity(g, &args, 0, 1)?;
                let items = match args.first() {
                    None => Vec::new(),
                    Some(&a) => self.seq_of(a).ok_or_else(|| {
                        Error::pickle(format!(
                            "{g}: argument must be a tuple, got {}",
                            self.type_name(a)
                        ))
                    })?,
                };
                let sizes: Option<Vec<i64>> = items.iter().map(|&i| self.int_of(i)).collect();
                let sizes =
                    sizes.ok_or_else(|| Error::pickle(format!("{g}: sizes must be ints")))?;
                if sizes.len() > self.limits.max_container {
                    return Err(Error::pickle(format!(
                        "{g}: more than {} sizes",
                        self.limits.max_container
                    )));
                }
                self.alloc(Node::Size(sizes.into_boxed_slice()))
            }
            "torch.device" => {
                arity(g, &args, 1, 2)?;
                let ty = match (self.str_of(args[0]), args[0]) {
                    (Some(s), _) => s.to_string(),
                    (None, Item::Int(i)) if args.len() == 1 => format!("cuda:{i}"),
                    _ => return Err(Error::pickle(format!("{g}: device type must be a str"))),
                };
                let name = match args.get(1) {
                    None | Some(Item::None) => ty,
                    Some(&Item::Int(i)) if !ty.contains(':') => format!("{ty}:{i}"),
                    Some(_) => {
                        return Err(Error::pickle(format!("{g}: device index must be an int")))
                    }
                };
                self.alloc(Node::Device(name.into_boxed_str()))
            }
            "_codecs.encode" => {
                arity(g, &args, 1, 2)?;
                let s = self
                    .str_of(args[0])
                    .ok_or_else(|| {
                        Error::pickle(format!(
                            "{g}: first argument must be a str, got {}",
                            self.type_name(args[0])
                        ))
                    })?
                    .to_string();
                let enc = match args.get(1) {
                    None => "utf-8".to_string(),
                    Some(&e) => self
                        .str_of(e)
                        .ok_or_else(|| Error::pickle(format!("{g}: encoding must be a str")))?
                        .to_string(),
                };
                let bytes = encode(&s, &enc)?;
                self.alloc(Node::Bytes(bytes.into_boxed_slice()))
            }
            "builtins.bytearray" => {
                arity(g, &args, 0, 2)?;
                let bytes = match args.first() {
                    None => Vec::new(),
                    Some(&a) => match (self.node(a), args.get(1)) {
                        (Some(Node::Bytes(b)), None) | (Some(Node::ByteArray(b)), None) => {
                            b.to_vec()
                        }
                        (Some(Node::Str(s)), Some(&e)) => {
                            let enc = self.str_of(e).ok_or_else(|| {
                                Error::pickle(format!("{g}: encoding must be a str"))
                            })?;
                            encode(s, enc)?
                        }
                        _ => {
                            return Err(Error::pickle(format!(
                                "{g}: unsupported arguments (expected bytes, or str and encoding)"
                            )))
                        }
                    },
                };
                self.alloc(Node::ByteArray(bytes.into_boxed_slice()))
            }
            "builtins.complex" => {
                arity(g, &args, 0, 2)?;
                let num = |vm: &Self, i: Option<&Item>| -> Result<f64> {
                    match i {
                        None => Ok(0.0),
                        Some(Item::Float(f)) => Ok(*f),
                        Some(&it) => vm.int_of(it).map(|v| v as f64).ok_or_else(|| {
                            Error::pickle(format!("{g}: arguments must be numbers"))
                        }),
                    }
                };
                let (re, im) = (num(self, args.first())?, num(self, args.get(1))?);
                self.alloc(Node::Complex(re, im))
            }
            _ => Err(unsupported_call(g)),
        }
    }

    /// NEWOBJ: `cls.__new__(cls, *args)`.
    pub(super) fn new_object(&mut self, g: &'static str, args: Vec<Item>) -> Result<Item> {
        match g {
            "torch.nn.parameter.Parameter" => {
                if args.len() > 2 {
                    return Err(Error::pickle(format!("{g} takes at most 2 arguments, got {}", args.len())));
                }
                let data = *args.first().ok_or_else(|| Error::pickle(format!("{g}() without data is not supported")))?;
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
            _ => Err(Error::pickle(format!("Can only create new object for nn.Parameter or known allowlisted classes, but got {g}"))),
        }
    }

    pub(super) fn build(&mut self, inst: Item, state: Item) -> Result<()> {
        let name = self.type_name(inst);
        let attrs: Vec<(Item, Item)> = match self.node(state) {
            Some(Node::Dict(d)) => d.entries.clone(),
            _ if matches!(state, Item::None) => Vec::new(),
            _ => {
                return Err(Error::pickle(format!(
                    "BUILD state for {name} must be a dict, got {}",
                    self.type_name(state)
                )))
            }
        };
        let Item::Ref(i) = inst else {
            return Err(Error::pickle(format!("Can only build Tensor, Parameter, OrderedDict or allowlisted types, but got {name}")));
        };
        // Attributes by name: later assignments of the same attribute replace earlier ones.
        // Looked up in a map (a state of n attributes costs n, not n²), and counted as work.
        let existing = match self.arena.get(i as usize) {
            Some(Node::Dict(d)) => d.attrs.len(),
            _ => 0,
        };
        self.tick((attrs.len() + existing) as u64)?;
        let keyed: Vec<(Option<String>, Item, Item)> = attrs
            .into_iter()
            .map(|(k, v)| (self.str_of(k).map(str::to_string), k, v))
            .collect();
        let mut names: HashMap<String, usize> = HashMap::new();
        if let Some(Node::Dict(d)) = self.arena.get(i as usize) {
            for (j, (k, _)) in d.attrs.iter().enumerate() {
                if let Some(n) = self.str_of(*k) {
                    names.entry(n.to_string()).or_insert(j);
                }
            }
        }
        let copied: usize = keyed
            .iter()
            .filter_map(|(n, _, _)| n.as_ref())
            .map(String::len)
            .sum::<usize>()
            + names.keys().map(String::len).sum::<usize>();
        self.tick(copied as u64 / 64)?;
        let mut added = 0u64;
        match self.arena.get_mut(i as usize) {
            Some(Node::Dict(d)) if d.kind != DictKind::Dict => {
                for (name, k, v) in keyed {
                    match name.as_ref().and_then(|n| names.get(n)) {
                        Some(&j) => d.attrs[j].1 = v,
                        None => {
                            if let Some(n) = name {
                                names.insert(n, d.attrs.len());
                            }
                            d.attrs.push((k, v));
                            added += 2 * std::mem::size_of::<Item>() as u64;
                        }
                    }
                }
                self.charge_heap(added)
            }
            Some(Node::Tensor(_)) => Err(Error::pickle(format!("BUILD on a {name} (legacy `set_` state) is not supported"))),
            _ => Err(Error::pickle(format!("Can only build Tensor, Parameter, OrderedDict or allowlisted types, but got {name}"))),
        }
    }
}

/// Checks that a call has `lo` to `hi` arguments.
fn arity(g: &str, args: &[Item], lo: usize, hi: usize) -> Result<()> {
    if args.len() < lo || args.len() > hi {
        let want = if lo == hi {
            lo.to_string()
        } else {
            format!("{lo} to {hi}")
        };
        return Err(Error::pickle(format!(
            "{g} takes {want} arguments, got {}",
            args.len()
        )));
    }
    Ok(())
}

/// Why an allowlisted callable that rnnkit does not interpret is refused.
fn unsupported_call(g: &str) -> Error {
    Error::pickle(match g {
        "torch.serialization._get_layout" | "torch._utils._rebuild_sparse_tensor" => {
            format!("{g}: sparse tensors are not supported; convert with .to_dense() before saving")
        }
        "torch._utils._rebuild_qtensor" => format!("{g}: quantized tensors are not supported; dequantize before saving"),
        "torch._utils._rebuild_nested_tensor" => format!("{g}: nested tensors are not supported"),
        "torch._utils._rebuild_meta_tensor_no_storage" => format!("{g}: meta tensors (no data) are not supported"),
        "torch._utils._rebuild_wrapper_subclass" => format!("{g}: tensor wrapper subclasses are not supported"),
        "torch._utils._rebuild_device_tensor_from_numpy" | "torch._utils._rebuild_device_tensor_from_cpu_tensor" => {
            format!("{g}: device tensors saved from numpy/CPU copies are not supported")
        }
        _ => format!("calling {g} is not supported (it is allowlisted by torch, but rnnkit does not interpret it)"),
    })
}

/// `str.encode(encoding)` for the encodings pickles use.
fn encode(s: &str, encoding: &str) -> Result<Vec<u8>> {
    let enc = encoding.to_ascii_lowercase().replace('_', "-");
    match enc.as_str() {
        "latin1" | "latin-1" | "iso-8859-1" | "iso8859-1" | "l1" => s
            .chars()
            .map(|c| {
                u8::try_from(c as u32)
                    .map_err(|_| Error::pickle(format!("character {c:?} is not latin-1")))
            })
            .collect(),
        "utf-8" | "utf8" => Ok(s.as_bytes().to_vec()),
        "ascii" => {
            if s.is_ascii() {
                Ok(s.as_bytes().to_vec())
            } else {
                Err(Error::pickle("non-ASCII string encoded as ascii"))
            }
        }
        _ => Err(Error::pickle(format!(
            "_codecs.encode with encoding {encoding:?} is not supported"
        ))),
    }
}
