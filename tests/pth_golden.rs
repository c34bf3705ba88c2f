//! The .pth reader against PyTorch itself: every case scripts/make_pth_cases.py wrote (FORMATS.md
//! §6 and more) must load with the structure and bitwise values `torch.load(weights_only=True)`
//! returned, or fail with an error that names the file and says why.
//!
//! Regenerate the cases with `.venv/bin/python scripts/make_pth_cases.py tests/golden/pth`.

use rnnkit::checkpoint::pickle::{DictKind, Value};
use rnnkit::checkpoint::pth;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

type Json = serde_json::Value;

fn golden_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/pth");
    assert!(
        dir.join("cases.json").exists(),
        "missing {}/cases.json: generate it with `.venv/bin/python scripts/make_pth_cases.py tests/golden/pth` \
         (scripts/test.sh does this)",
        dir.display()
    );
    dir
}

fn cases() -> (PathBuf, Vec<Json>) {
    let dir = golden_dir();
    let text = std::fs::read_to_string(dir.join("cases.json")).unwrap();
    let doc: Json = serde_json::from_str(&text).unwrap();
    let cases = doc["cases"].as_array().unwrap().clone();
    (dir, cases)
}

/// Identity maps between the JSON's ids and the Rust tree's Arc pointers.
struct Ctx {
    ids: HashMap<u64, usize>,
    storages: HashMap<u64, usize>,
    storages_back: HashMap<usize, u64>,
    values: HashMap<String, Vec<u8>>,
}

fn ptr_of(v: &Value) -> Option<usize> {
    match v {
        Value::Tensor(t) => Some(Arc::as_ptr(t) as usize),
        Value::Dict(d) => Some(Arc::as_ptr(d) as usize),
        Value::List(l) => Some(Arc::as_ptr(l) as *const Value as usize),
        _ => None,
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn compare(v: &Value, j: &Json, cx: &mut Ctx, at: &str) -> Result<(), String> {
    if let Some(r) = j.get("ref") {
        let want = cx.ids.get(&r.as_u64().unwrap()).copied();
        return if ptr_of(v).is_some() && ptr_of(v) == want {
            Ok(())
        } else {
            Err(format!(
                "{at}: torch shares this object with an earlier one; rnnkit does not"
            ))
        };
    }
    if let Some(id) = j.get("id").and_then(Json::as_u64) {
        let p = ptr_of(v)
            .ok_or_else(|| format!("{at}: expected a {}, got {}", j["t"], v.type_name()))?;
        if cx.ids.values().any(|&q| q == p) {
            return Err(format!(
                "{at}: rnnkit shares this object with an earlier one; torch does not"
            ));
        }
        cx.ids.insert(id, p);
    }
    let t = j["t"].as_str().unwrap();
    let mismatch = || format!("{at}: expected {t} {j}, got {} {v:?}", v.type_name());
    match (t, v) {
        ("none", Value::None) => Ok(()),
        ("bool", Value::Bool(b)) if j["v"].as_bool() == Some(*b) => Ok(()),
        ("int", Value::Int(i)) if j["v"].as_str() == Some(&i.to_string()) => Ok(()),
        ("int", Value::BigInt(b)) if j["v"].as_str() == Some(&b.to_string()) => Ok(()),
        ("float", Value::Float(f)) if j["bits"].as_str() == Some(&hex(&f.to_be_bytes())) => Ok(()),
        ("complex", Value::Complex(re, im))
            if j["re"].as_str() == Some(&hex(&re.to_be_bytes()))
                && j["im"].as_str() == Some(&hex(&im.to_be_bytes())) =>
        {
            Ok(())
        }
        ("str", Value::Str(s)) if j["v"].as_str() == Some(s) => Ok(()),
        ("bytes", Value::Bytes(b)) | ("bytearray", Value::ByteArray(b))
            if j["hex"].as_str() == Some(&hex(b)) =>
        {
            Ok(())
        }
        ("size", Value::Size(v))
            if j["v"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_i64())
                .collect::<Vec<_>>()
                == v.iter().map(|&n| Some(n)).collect::<Vec<_>>() =>
        {
            Ok(())
        }
        ("device", Value::Device(d)) if j["v"].as_str() == Some(d) => Ok(()),
        ("global", Value::Global(g)) if j["v"].as_str() == Some(g) => Ok(()),
        ("list", Value::List(items)) | ("tuple", Value::Tuple(items)) => {
            let want = j["items"].as_array().unwrap();
            if want.len() != items.len() {
                return Err(format!(
                    "{at}: {} items, expected {}",
                    items.len(),
                    want.len()
                ));
            }
            for (i, (x, w)) in items.iter().zip(want).enumerate() {
                compare(x, w, cx, &format!("{at}[{i}]"))?;
            }
            Ok(())
        }
        ("set", Value::Set(items)) => {
            let want = j["items"].as_array().unwrap();
            if want.len() != items.len() {
                return Err(mismatch());
            }
            for w in want {
                if !items.iter().any(|x| compare(x, w, cx, at).is_ok()) {
                    return Err(format!("{at}: set item {w} missing"));
                }
            }
            Ok(())
        }
        ("dict" | "OrderedDict" | "Counter", Value::Dict(d)) => {
            let kind = match t {
                "dict" => DictKind::Dict,
                "OrderedDict" => DictKind::OrderedDict,
                _ => DictKind::Counter,
            };
            if d.kind != kind {
                return Err(mismatch());
            }
            let want = j["items"].as_array().unwrap();
            if want.len() != d.entries.len() {
                return Err(format!(
                    "{at}: {} keys, expected {}",
                    d.entries.len(),
                    want.len()
                ));
            }
            for (i, ((k, x), w)) in d.entries.iter().zip(want).enumerate() {
                compare(k, &w[0], cx, &format!("{at}.<key {i}>"))?;
                let name = k.key_string().unwrap_or_else(|| format!("<{i}>"));
                compare(x, &w[1], cx, &format!("{at}.{name}"))?;
            }
            let mut attrs: Vec<String> = d
                .attrs
                .iter()
                .filter_map(|(k, _)| k.as_str().map(String::from))
                .collect();
            attrs.sort();
            let want_attrs: Vec<String> = j["attrs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_string())
                .collect();
            if attrs != want_attrs {
                return Err(format!(
                    "{at}: attributes {attrs:?}, expected {want_attrs:?}"
                ));
            }
            Ok(())
        }
        ("tensor", Value::Tensor(x)) => {
            let ints = |k: &str| {
                j[k].as_array()
                    .unwrap()
                    .iter()
                    .map(|n| n.as_i64().unwrap())
                    .collect::<Vec<_>>()
            };
            let checks = [
                ("dtype", j["dtype"].as_str() == Some(x.dtype.torch_name())),
                ("shape", ints("shape") == x.shape),
                ("stride", ints("stride") == x.stride),
                ("offset", j["offset"].as_u64() == Some(x.offset as u64)),
                ("param", j["param"].as_bool() == Some(x.parameter)),
                (
                    "requires_grad",
                    j["requires_grad"].as_bool() == Some(x.requires_grad),
                ),
                ("neg", j["neg"].as_bool() == Some(x.neg)),
                ("conj", j["conj"].as_bool() == Some(x.conj)),
            ];
            for (what, ok) in checks {
                if !ok {
                    return Err(format!(
                        "{at}: tensor {what} differs: torch {j}, rnnkit {} {:?}/{:?} offset {} param {} rg {} neg {} conj {}",
                        x.dtype, x.shape, x.stride, x.offset, x.parameter, x.requires_grad, x.neg, x.conj
                    ));
                }
            }
            if let Some(sid) = j["storage"].as_u64() {
                let p = Arc::as_ptr(&x.storage) as usize;
                let a = *cx.storages.entry(sid).or_insert(p);
                let b = *cx.storages_back.entry(p).or_insert(sid);
                if a != p || b != sid {
                    return Err(format!("{at}: storage sharing differs from torch's"));
                }
            }
            let raw = x.to_raw().map_err(|e| format!("{at}: {e}"))?;
            let want = &cx.values[j["data"].as_str().unwrap()];
            if &raw.data != want {
                let first = raw.data.iter().zip(want.iter()).position(|(a, b)| a != b);
                return Err(format!(
                    "{at}: values differ (rnnkit {} bytes, torch {}; first differing byte {first:?})",
                    raw.data.len(),
                    want.len()
                ));
            }
            Ok(())
        }
        _ => Err(mismatch()),
    }
}

fn check_case(dir: &Path, case: &Json) -> Result<(), String> {
    let name = case["name"].as_str().unwrap();
    let file = dir.join(case["file"].as_str().unwrap());
    let result = pth::load(&file);
    match (case["rnnkit"].as_str().unwrap(), result) {
        ("ok", Ok(v)) => {
            let values = rnnkit::checkpoint::safetensors::read(
                dir.join(format!("{name}.values.safetensors")),
            )
            .map_err(|e| e.to_string())?
            .tensors
            .into_iter()
            .map(|(k, t)| (k, t.data))
            .collect();
            let mut cx = Ctx {
                ids: HashMap::new(),
                storages: HashMap::new(),
                storages_back: HashMap::new(),
                values,
            };
            compare(&v, &case["tree"], &mut cx, "root")
        }
        ("ok", Err(e)) => Err(format!("torch loads it but rnnkit fails: {e}")),
        (_, Ok(_)) => Err(format!(
            "rnnkit loads it but should fail ({})",
            case["torch_error"]
        )),
        (_, Err(e)) => {
            let msg = e.to_string();
            if !msg.contains(case["file"].as_str().unwrap()) {
                return Err(format!("the error does not name the file: {msg}"));
            }
            for want in case["error_contains"].as_array().unwrap() {
                if !msg.contains(want.as_str().unwrap()) {
                    return Err(format!("the error should mention {want}: {msg}"));
                }
            }
            Ok(())
        }
    }
}

/// How many cases `scripts/make_pth_cases.py` writes (its `CASES`), and how many of them rnnkit
/// is to load (`"rnnkit": "ok"`); the rest it is to refuse.
const PTH_CASES: usize = 59;
const PTH_CASES_LOADED: usize = 31;

#[test]
fn every_case_matches_torch() {
    let (dir, cases) = cases();
    let regen = "regenerate with `.venv/bin/python scripts/make_pth_cases.py tests/golden/pth`";
    assert_eq!(
        cases.len(),
        PTH_CASES,
        "cases.json lists {} cases, expected exactly {PTH_CASES}; {regen}",
        cases.len()
    );
    let loaded = cases.iter().filter(|c| c["rnnkit"] == "ok").count();
    assert_eq!(
        loaded, PTH_CASES_LOADED,
        "cases.json has {loaded} cases rnnkit is to load, expected exactly {PTH_CASES_LOADED}; {regen}"
    );
    let mut names: Vec<&str> = cases.iter().map(|c| c["name"].as_str().unwrap()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), PTH_CASES, "case names are not unique");
    let mut failures = Vec::new();
    for case in &cases {
        if let Err(e) = check_case(&dir, case) {
            failures.push(format!("{}: {e}", case["name"].as_str().unwrap()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from torch.load(weights_only=True):\n{}\n(regenerate with `.venv/bin/python scripts/make_pth_cases.py tests/golden/pth`)",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    println!(
        "{} cases match torch.load(weights_only=True): {loaded} loaded, {} refused",
        cases.len(),
        cases.len() - loaded
    );
    // The FORMATS.md §6 cases must all be there.
    for want in [
        "c01_", "c02_", "c03_", "c04_", "c05_", "c07_", "c10_", "c11_", "c13_", "c15_", "c16_",
        "c17_", "c20_", "c21_", "c22_", "c24_",
    ] {
        assert!(
            cases
                .iter()
                .any(|c| c["name"].as_str().unwrap().starts_with(want)),
            "case {want}* missing"
        );
    }
}

#[test]
fn malicious_payload_never_runs() {
    let dir = golden_dir();
    for name in [
        "c22_os_system",
        "os_system_direct",
        "eval_global",
        "getattr_global",
    ] {
        let e = pth::load(dir.join(format!("{name}.pth")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("GLOBAL"), "{name}: {e}");
    }
    assert!(!dir.join("pwned.txt").exists(), "a payload ran");
}

/// How many nested levels of `[x, x]` hold one shared object `x` rather than two copies.
fn shared_levels(mut v: &Value) -> usize {
    let mut n = 0;
    while let Value::List(items) = v {
        let same = match &items[..] {
            [Value::List(a), Value::List(b)] => Arc::ptr_eq(a, b),
            [Value::Tensor(a), Value::Tensor(b)] => Arc::ptr_eq(a, b),
            _ => false,
        };
        if !same {
            break;
        }
        n += 1;
        v = &items[0];
    }
    n
}

#[test]
fn memo_bomb_loads_shared_and_flattening_is_bounded() {
    // No timings (they belong in benchmarks): loading is linear because every level's two
    // references stay one object, and flattening is bounded by a count of visits.
    let dir = golden_dir();
    for name in ["memo_bomb", "memo_bomb_with_tensor"] {
        let v = pth::load(dir.join(format!("{name}.pth"))).unwrap();
        assert_eq!(
            shared_levels(&v),
            60,
            "2^60 memo bomb {name}: memo references were copied, not shared"
        );
        let e = pth::flatten(&v, Path::new(name)).unwrap_err().to_string();
        let want = if name == "memo_bomb" {
            "holds no tensors"
        } else {
            "expands to more than"
        };
        assert!(e.contains(want), "{e}");
    }
}

#[test]
fn state_dict_selection_and_prefix_stripping() {
    let dir = golden_dir();
    let sd = pth::load_state_dict(
        dir.join("c15_training_checkpoint.pth"),
        Some("model_state_dict"),
    )
    .unwrap();
    assert_eq!(sd.keys().collect::<Vec<_>>(), ["weight", "bias"]);
    // Dotted paths reach into nested dicts with int keys.
    let sd = pth::load_state_dict(
        dir.join("c15_training_checkpoint.pth"),
        Some("optimizer_state_dict.state.0"),
    )
    .unwrap();
    assert_eq!(
        sd.keys().collect::<Vec<_>>(),
        ["step", "exp_avg", "exp_avg_sq"]
    );
    assert_eq!(sd.require("step").unwrap().size(), Vec::<i64>::new());
    // The whole checkpoint flattens with dotted names; non-tensors are skipped.
    let all = pth::load_state_dict(dir.join("c15_training_checkpoint.pth"), None).unwrap();
    assert!(
        all.get("model_state_dict.weight").is_some()
            && all.get("optimizer_state_dict.state.1.exp_avg").is_some()
    );
    let e = pth::load_state_dict(dir.join("c15_training_checkpoint.pth"), Some("loss"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("holds no tensors"), "{e}");
    let e = pth::load_state_dict(dir.join("c15_training_checkpoint.pth"), Some("nope"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no key \"nope\"") && e.contains("model_state_dict"),
        "{e}"
    );

    let sd = pth::load_state_dict(dir.join("c02_data_parallel.pth"), None)
        .unwrap()
        .strip_prefix("module.")
        .unwrap();
    assert_eq!(sd.keys().collect::<Vec<_>>(), ["weight", "bias"]);
    let names =
        pth::strip_wrapper_prefixes(pth::load_tensors(dir.join("c03_compiled.pth"), None).unwrap());
    assert_eq!(
        names.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        ["weight", "bias"]
    );
    // `_metadata` is an attribute, never a tensor name.
    let sd = pth::load_state_dict(dir.join("c01_linear_state_dict.pth"), None).unwrap();
    assert_eq!(sd.len(), 2);
    // Legacy files load the same way.
    let sd = pth::load_state_dict(dir.join("c20_legacy.pth"), None).unwrap();
    assert_eq!(sd.keys().collect::<Vec<_>>(), ["weight", "bias"]);
}
