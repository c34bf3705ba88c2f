//! `rnnkit inspect FILE`: what a checkpoint holds, without loading it into a model — the value
//! tree (`.pth`) or tensor list (`.safetensors`), dtypes, shapes, storage sharing, the parameter
//! count, and the recurrent layers the key names and shapes describe.
//!
//! Never materialises a tensor: a `.pth`'s storages are loaded (within the reading budget) but
//! no view is gathered, and a safetensors file's data is not read at all (header only). The
//! report's text is bounded too (`Limits::max_name_bytes`), however long or shared the keys.

use crate::checkpoint::pickle::{DictKind, Tensor, Value};
use crate::checkpoint::pth::{self, Format};
use crate::error::{Error, Result};
use serde::Serialize;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod recurrent;

pub use recurrent::{recognise_recurrent, RecurrentLayer};

/// One tensor, by dotted name.
#[derive(Debug, Clone, Serialize)]
pub struct TensorInfo {
    /// Dotted path in the tree (`model.encoder.weight_ih_l0`).
    pub name: String,
    /// torch's dtype name (`float32`).
    pub dtype: String,
    /// The tensor's size.
    pub shape: Vec<i64>,
    /// Elements (product of the shape).
    pub numel: u64,
    /// Storage record key (`.pth` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
    /// Storage offset in elements (`.pth` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<usize>,
    /// Strides in elements (`.pth` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stride: Option<Vec<i64>>,
    /// Whether the strides are C-contiguous.
    pub contiguous: bool,
    /// Saved as an `nn.Parameter`.
    pub parameter: bool,
    /// The Parameter's `requires_grad`.
    pub requires_grad: bool,
}

/// A storage that several tensors view.
#[derive(Debug, Clone, Serialize)]
pub struct SharedStorage {
    /// Storage record key.
    pub storage: String,
    /// Size of the storage in bytes.
    pub bytes: usize,
    /// The tensors that view it.
    pub tensors: Vec<String>,
}

/// What `inspect` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The file inspected.
    pub file: PathBuf,
    /// `zip`, `legacy` or `safetensors`.
    pub format: String,
    /// Every tensor, in tree order.
    pub tensors: Vec<TensorInfo>,
    /// Elements of all distinct tensors.
    pub parameters: u64,
    /// Bytes of all distinct storages.
    pub bytes: u64,
    /// Distinct storages.
    pub storages: usize,
    /// Storages viewed by more than one tensor.
    pub shared_storages: Vec<SharedStorage>,
    /// Recurrent layers recognised from their key names and shapes.
    pub recurrent_layers: Vec<RecurrentLayer>,
    /// safetensors `__metadata__`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<std::collections::BTreeMap<String, String>>,
    /// The value tree (`.pth`), as JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tree: Option<serde_json::Value>,
    #[serde(skip)]
    tree_text: String,
}

/// Builds the report for any checkpoint file.
pub fn inspect(path: &Path, key: Option<&str>, max_items: usize) -> Result<Report> {
    let mut head = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(512).read_to_end(&mut head))
        .map_err(|e| Error::io(path, e))?;
    if pth::sniff(&head) == Format::Safetensors {
        return inspect_safetensors(path, key);
    }
    let (root, info) = pth::load_with(path, &pth::ReadOptions::default())?;
    let value = pth::select(&root, key, path)?;
    let format = match info.format {
        Format::Legacy => format!(
            "torch.save legacy format (pickle protocol {})",
            info.protocol
        ),
        _ => format!(
            "torch.save zip archive {:?} (version {}, {}-endian, pickle protocol {})",
            info.archive_name.as_deref().unwrap_or(""),
            info.version,
            info.byteorder,
            info.protocol
        ),
    };
    let mut w = TreeWriter {
        max_items,
        seen: HashMap::new(),
        text: String::new(),
        tensors: Vec::new(),
        bytes: 0,
        max_bytes: pth::ReadOptions::default().limits.max_name_bytes,
    };
    let tree = w.node(value, "", 0);
    if w.bytes > w.max_bytes {
        return Err(Error::format(
            path,
            format!(
                "the report would exceed {} bytes of names and text (long keys, deep nesting or \
                 a shared sub-tree reached many times); refusing",
                w.max_bytes
            ),
        ));
    }
    let mut tensors = Vec::new();
    let mut by_storage: HashMap<
        *const crate::checkpoint::pickle::Storage,
        (String, usize, Vec<String>),
    > = HashMap::new();
    let mut seen_tensors = std::collections::HashSet::new();
    let mut parameters = 0u64;
    for (name, t) in &w.tensors {
        let numel = t.numel() as u64;
        if seen_tensors.insert(Arc::as_ptr(t)) {
            parameters = parameters.saturating_add(numel);
        }
        let e = by_storage
            .entry(Arc::as_ptr(&t.storage))
            .or_insert_with(|| (t.storage.key.clone(), t.storage.data.len(), Vec::new()));
        e.2.push(name.clone());
        tensors.push(TensorInfo {
            name: name.clone(),
            dtype: t.dtype.to_string(),
            shape: t.shape.clone(),
            numel,
            storage: Some(t.storage.key.clone()),
            offset: Some(t.offset),
            stride: Some(t.stride.clone()),
            contiguous: t.is_contiguous(),
            parameter: t.parameter,
            requires_grad: t.requires_grad,
        });
    }
    let bytes = by_storage.values().map(|s| s.1 as u64).sum();
    let mut shared: Vec<SharedStorage> = by_storage
        .into_values()
        .filter(|s| s.2.len() > 1)
        .map(|(storage, bytes, tensors)| SharedStorage {
            storage,
            bytes,
            tensors,
        })
        .collect();
    shared.sort_by(|a, b| a.storage.cmp(&b.storage));
    let shapes: Vec<(String, Vec<i64>)> = tensors
        .iter()
        .map(|t| (t.name.clone(), t.shape.clone()))
        .collect();
    Ok(Report {
        file: path.to_path_buf(),
        format,
        storages: seen_storage_count(&w.tensors),
        tensors,
        parameters,
        bytes,
        shared_storages: shared,
        recurrent_layers: recognise_recurrent(&shapes),
        metadata: None,
        tree: Some(tree),
        tree_text: w.text,
    })
}

fn seen_storage_count(tensors: &[(String, Arc<Tensor>)]) -> usize {
    tensors
        .iter()
        .map(|(_, t)| Arc::as_ptr(&t.storage))
        .collect::<std::collections::HashSet<_>>()
        .len()
}

fn inspect_safetensors(path: &Path, key: Option<&str>) -> Result<Report> {
    // The header alone: inspect never reads (or allocates) tensor data.
    let st = crate::checkpoint::safetensors::read_header_only(path)?;
    let prefix = key.map(|k| format!("{k}."));
    let mut tensors = Vec::new();
    let mut bytes = 0u64;
    for t in &st.tensors {
        let name = &t.name;
        let name = match &prefix {
            Some(p) => match name.strip_prefix(p.as_str()) {
                Some(rest) => rest.to_string(),
                None => continue,
            },
            None => name.clone(),
        };
        bytes += t.end - t.begin;
        tensors.push(TensorInfo {
            name,
            dtype: t.dtype.to_string(),
            shape: t.shape.clone(),
            numel: crate::checkpoint::raw::checked_numel(&t.shape).unwrap_or(0) as u64,
            storage: None,
            offset: None,
            stride: None,
            contiguous: true,
            parameter: false,
            requires_grad: false,
        });
    }
    if tensors.is_empty() && key.is_some() {
        return Err(Error::format(
            path,
            format!(
                "no tensor names start with {:?}",
                prefix.unwrap_or_default()
            ),
        ));
    }
    let mut text = String::new();
    for t in &tensors {
        let _ = writeln!(text, "{}: {} {:?}", t.name, t.dtype, t.shape);
    }
    let shapes: Vec<(String, Vec<i64>)> = tensors
        .iter()
        .map(|t| (t.name.clone(), t.shape.clone()))
        .collect();
    Ok(Report {
        file: path.to_path_buf(),
        format: "safetensors".into(),
        parameters: tensors.iter().fold(0u64, |a, t| a.saturating_add(t.numel)),
        bytes,
        storages: tensors.len(),
        tensors,
        shared_storages: Vec::new(),
        recurrent_layers: recognise_recurrent(&shapes),
        metadata: Some(st.metadata),
        tree: None,
        tree_text: text,
    })
}

/// Renders the tree as indented text and JSON, each shared object once.
struct TreeWriter {
    max_items: usize,
    /// Containers and tensors already shown, by pointer, with where they were shown.
    seen: HashMap<usize, String>,
    text: String,
    tensors: Vec<(String, Arc<Tensor>)>,
    /// Bytes of names built so far (text, `seen`, tensor names); past `max_bytes` the walk
    /// stops and `inspect` refuses.
    bytes: u64,
    max_bytes: u64,
}

fn scalar(v: &Value) -> Option<String> {
    Some(match v {
        Value::None => "None".into(),
        Value::Bool(b) => if *b { "True" } else { "False" }.into(),
        Value::Int(i) => i.to_string(),
        Value::BigInt(b) => b.to_string(),
        Value::Float(f) => python_float(*f),
        Value::Complex(re, im) => format!(
            "({}{}{}j)",
            python_float(*re),
            if *im < 0.0 { "" } else { "+" },
            python_float(*im)
        ),
        Value::Str(s) => format!("{:?}", &**s),
        Value::Bytes(b) => format!("bytes of length {}", b.len()),
        Value::ByteArray(b) => format!("bytearray of length {}", b.len()),
        Value::Size(v) => format!("torch.Size({v:?})"),
        Value::Device(d) => format!("device({d:?})"),
        Value::Global(g) => g.to_string(),
        Value::Storage(s) => format!("{} storage {:?} ({} bytes)", s.dtype, s.key, s.data.len()),
        _ => return None,
    })
}

fn python_float(f: f64) -> String {
    if f.is_nan() {
        "nan".into()
    } else if f.is_infinite() {
        if f > 0.0 { "inf" } else { "-inf" }.into()
    } else if f == f.trunc() && f.abs() < 1e16 {
        format!("{f:.1}")
    } else if f != 0.0 && (f.abs() < 1e-4 || f.abs() >= 1e16) {
        // Python's repr: shortest digits, exponent with at least two digits (1e-08).
        let e = format!("{f:e}");
        match e.split_once('e') {
            Some((m, x)) => {
                let (sign, digits) = x.strip_prefix('-').map(|d| ("-", d)).unwrap_or(("+", x));
                format!("{m}e{sign}{digits:0>2}")
            }
            None => e,
        }
    } else {
        format!("{f}")
    }
}

fn tensor_line(t: &Tensor) -> String {
    let kind = if t.parameter { "Parameter" } else { "Tensor" };
    let mut s = format!(
        "{kind} {} {:?} storage {:?}",
        t.dtype, t.shape, t.storage.key
    );
    if t.offset != 0 {
        let _ = write!(s, " offset {}", t.offset);
    }
    if !t.is_contiguous() {
        let _ = write!(s, " stride {:?}", t.stride);
    }
    if t.requires_grad && !t.parameter {
        s.push_str(" requires_grad");
    }
    if t.neg {
        s.push_str(" neg");
    }
    if t.conj {
        s.push_str(" conj");
    }
    s
}

impl TreeWriter {
    fn node(&mut self, v: &Value, name: &str, depth: usize) -> serde_json::Value {
        use serde_json::json;
        self.bytes = self.bytes.saturating_add(name.len() as u64);
        if self.bytes > self.max_bytes || self.text.len() as u64 > self.max_bytes {
            self.bytes = self.max_bytes.saturating_add(1);
            return serde_json::Value::Null;
        }
        let ptr = match v {
            Value::Dict(d) => Some(Arc::as_ptr(d) as usize),
            Value::List(l) | Value::Tuple(l) | Value::Set(l) => {
                Some(Arc::as_ptr(l) as *const Value as usize)
            }
            Value::Tensor(t) => Some(Arc::as_ptr(t) as usize),
            _ => None,
        };
        if let Some(p) = ptr {
            if let Some(first) = self.seen.get(&p) {
                let first = if first.is_empty() {
                    "<root>".to_string()
                } else {
                    first.clone()
                };
                self.text
                    .push_str(&format!(" (same {} as {first})\n", v.type_name()));
                if let Value::Tensor(t) = v {
                    self.tensors.push((name.to_string(), t.clone()));
                }
                return json!({"type": v.type_name(), "same_as": first});
            }
            self.seen.insert(p, name.to_string());
        }
        let indent = "  ".repeat(depth + 1);
        let join = |k: &str| {
            if name.is_empty() {
                k.to_string()
            } else {
                format!("{name}.{k}")
            }
        };
        match v {
            Value::Tensor(t) => {
                self.tensors.push((name.to_string(), t.clone()));
                self.text.push_str(&format!(" {}\n", tensor_line(t)));
                json!({"type": v.type_name(), "dtype": t.dtype.torch_name(), "shape": t.shape, "stride": t.stride,
                       "offset": t.offset, "storage": t.storage.key, "requires_grad": t.requires_grad,
                       "neg": t.neg, "conj": t.conj})
            }
            Value::Dict(d) => {
                let attrs: Vec<String> = d
                    .attrs
                    .iter()
                    .filter_map(|(k, _)| k.as_str().map(String::from))
                    .collect();
                let attr_note = if attrs.is_empty() {
                    String::new()
                } else {
                    format!(", attributes {attrs:?}")
                };
                self.text.push_str(&format!(
                    " {} ({} items{attr_note})\n",
                    v.type_name(),
                    d.entries.len()
                ));
                let mut items = serde_json::Map::new();
                for (k, x) in &d.entries {
                    let ks = k.key_string().unwrap_or_else(|| {
                        scalar(k).unwrap_or_else(|| format!("<{}>", k.type_name()))
                    });
                    self.text.push_str(&format!(
                        "{indent}{}:",
                        if matches!(k, Value::Str(_)) {
                            ks.clone()
                        } else {
                            format!("[{ks}]")
                        }
                    ));
                    let child = self.node(x, &join(&ks), depth + 1);
                    items.insert(ks, child);
                }
                let kind = match d.kind {
                    DictKind::Dict => "dict",
                    DictKind::OrderedDict => "OrderedDict",
                    DictKind::Counter => "Counter",
                };
                json!({"type": kind, "items": items, "attributes": attrs})
            }
            Value::List(items) | Value::Tuple(items) | Value::Set(items) => {
                self.text
                    .push_str(&format!(" {} ({} items)\n", v.type_name(), items.len()));
                let mut out = Vec::new();
                for (i, x) in items.iter().enumerate() {
                    if i == self.max_items {
                        self.text
                            .push_str(&format!("{indent}… {} more\n", items.len() - i));
                        // Still collect the tensors beyond the cut, for counts and sharing.
                        for (j, y) in items.iter().enumerate().skip(i) {
                            let mut quiet = TreeWriter {
                                max_items: 0,
                                seen: std::mem::take(&mut self.seen),
                                text: String::new(),
                                tensors: Vec::new(),
                                bytes: self.bytes,
                                max_bytes: self.max_bytes,
                            };
                            quiet.node(y, &join(&j.to_string()), depth + 1);
                            self.seen = quiet.seen;
                            self.bytes = quiet.bytes.saturating_add(quiet.text.len() as u64);
                            self.tensors.extend(quiet.tensors);
                        }
                        break;
                    }
                    self.text.push_str(&format!("{indent}[{i}]:"));
                    out.push(self.node(x, &join(&i.to_string()), depth + 1));
                }
                json!({"type": v.type_name(), "len": items.len(), "items": out})
            }
            other => {
                let s = scalar(other).unwrap_or_default();
                self.text.push_str(&format!(" {s}\n"));
                json!({"type": other.type_name(), "value": s})
            }
        }
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{}: {}", self.file.display(), self.format)?;
        writeln!(
            f,
            "{} tensors in {} storages, {} parameters, {} bytes",
            self.tensors.len(),
            self.storages,
            self.parameters,
            self.bytes
        )?;
        if let Some(m) = &self.metadata {
            if !m.is_empty() {
                writeln!(f, "metadata: {m:?}")?;
            }
        }
        writeln!(f)?;
        if self.tree.is_some() {
            write!(f, "<root>:{}", self.tree_text)?;
        } else {
            write!(f, "{}", self.tree_text)?;
        }
        if !self.shared_storages.is_empty() {
            writeln!(f, "\nshared storages:")?;
            for s in &self.shared_storages {
                writeln!(
                    f,
                    "  storage {:?} ({} bytes): {}",
                    s.storage,
                    s.bytes,
                    s.tensors.join(", ")
                )?;
            }
        }
        if !self.recurrent_layers.is_empty() {
            writeln!(f, "\nrecurrent layers:")?;
            for l in &self.recurrent_layers {
                let name = if l.prefix.is_empty() {
                    "<root>"
                } else {
                    l.prefix.trim_end_matches('.')
                };
                write!(
                    f,
                    "  {name}: {} input_size={} hidden_size={}",
                    l.mode, l.input_size, l.hidden_size
                )?;
                if !l.mode.ends_with("Cell") {
                    write!(
                        f,
                        " num_layers={} bidirectional={} proj_size={}",
                        l.num_layers, l.bidirectional, l.proj_size
                    )?;
                }
                writeln!(f, " bias={}", l.bias)?;
                for p in &l.problems {
                    writeln!(f, "    warning: {p}")?;
                }
            }
        }
        Ok(())
    }
}
