//! The .pth writer against PyTorch: files rnnkit writes — every golden case re-saved, a nested
//! training checkpoint built by hand, module state_dicts — must load with
//! `torch.load(path, weights_only=True)` (and mmap=True) with identical structure and values, and
//! `load_state_dict(strict=True)` must accept the module files. scripts/check_pth_written.py does
//! the Python side; this test runs it with the project's venv.
//!
//! Needs `tests/golden/pth` (`.venv/bin/python scripts/make_pth_cases.py tests/golden/pth`) and
//! `.venv` (`scripts/setup.sh`).

use rnnkit::checkpoint::pickle::{BigInt, Dict, DictKind, Tensor, Value};
use rnnkit::checkpoint::pth;
use rnnkit::checkpoint::raw::{DType, RawTensor};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn golden_cases() -> (PathBuf, Vec<serde_json::Value>) {
    let dir = root().join("tests/golden/pth");
    let text = std::fs::read_to_string(dir.join("cases.json")).unwrap_or_else(|_| {
        panic!("missing tests/golden/pth/cases.json: run `.venv/bin/python scripts/make_pth_cases.py tests/golden/pth`")
    });
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    (dir, doc["cases"].as_array().unwrap().clone())
}

fn out_dir(name: &str) -> PathBuf {
    let d = root().join("target/pth-roundtrip").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(x: &str) -> Value {
    Value::Str(x.into())
}

fn tensor(dtype: DType, shape: &[i64], data: Vec<u8>) -> Arc<Tensor> {
    Arc::new(Tensor::from(
        RawTensor::new(dtype, shape.to_vec(), data).unwrap(),
    ))
}

fn dict(kind: DictKind, entries: Vec<(Value, Value)>) -> Value {
    Value::Dict(Arc::new(Dict {
        kind,
        entries,
        attrs: Vec::new(),
    }))
}

fn bytes_of<T: Copy, const N: usize>(v: &[T], f: impl Fn(T) -> [u8; N]) -> Vec<u8> {
    v.iter().flat_map(|&x| f(x)).collect()
}

/// The checkpoint `built_checkpoint()` in scripts/check_pth_written.py describes.
fn built_checkpoint() -> Value {
    let shared = Value::Tensor(tensor(
        DType::F32,
        &[2, 3],
        bytes_of(&[0f32, 1., 2., 3., 4., 5.], f32::to_le_bytes),
    ));
    let mut param = Tensor::from(
        RawTensor::new(
            DType::F32,
            vec![2, 2],
            bytes_of(&[1f32; 4], f32::to_le_bytes),
        )
        .unwrap(),
    );
    param.parameter = true;
    param.requires_grad = true;
    let weights = vec![
        (
            "f16",
            tensor(
                DType::F16,
                &[4],
                bytes_of(&[0u16, 0x3c00, 0x4000, 0x4200], u16::to_le_bytes),
            ),
        ),
        (
            "bf16",
            tensor(
                DType::BF16,
                &[4],
                bytes_of(&[0u16, 0x3f80, 0x4000, 0x4040], u16::to_le_bytes),
            ),
        ),
        (
            "i8",
            tensor(
                DType::I8,
                &[4],
                bytes_of(&[-2i8, -1, 0, 1], i8::to_le_bytes),
            ),
        ),
        ("bool", tensor(DType::Bool, &[2], vec![1, 0])),
        (
            "c64",
            tensor(
                DType::C64,
                &[2],
                bytes_of(&[1f32, 2., 3., -4.], f32::to_le_bytes),
            ),
        ),
        (
            "u16",
            tensor(DType::U16, &[2], bytes_of(&[1u16, 65535], u16::to_le_bytes)),
        ),
        ("f8", tensor(DType::F8E4M3, &[2], vec![0x30, 0xc0])),
        ("empty", tensor(DType::F32, &[0, 3], Vec::new())),
        (
            "scalar",
            tensor(DType::I64, &[], 7i64.to_le_bytes().to_vec()),
        ),
        ("param", Arc::new(param)),
    ];
    let weights = weights
        .into_iter()
        .map(|(k, t)| (s(k), Value::Tensor(t)))
        .collect();
    let step = Value::Tensor(tensor(DType::F32, &[], 10f32.to_le_bytes().to_vec()));
    let state = dict(
        DictKind::Dict,
        vec![
            (
                Value::Int(0),
                dict(
                    DictKind::Dict,
                    vec![(s("step"), step), (s("exp_avg"), shared.clone())],
                ),
            ),
            (
                Value::Int(1),
                dict(DictKind::Dict, vec![(s("exp_avg"), shared)]),
            ),
        ],
    );
    dict(
        DictKind::Dict,
        vec![
            (s("epoch"), Value::Int(3)),
            (s("loss"), Value::Float(0.25)),
            (s("name"), s("run1")),
            (
                s("flags"),
                Value::List(vec![Value::Bool(true), Value::Bool(false), Value::None].into()),
            ),
            (
                s("betas"),
                Value::Tuple(vec![Value::Float(0.9), Value::Float(0.999)].into()),
            ),
            (
                s("big"),
                Value::BigInt(BigInt(vec![0, 0, 0, 0, 0, 0, 0, 0, 0x40].into())),
            ),
            (s("neg"), Value::Int(-123456789012)),
            (s("nan"), Value::Float(f64::NAN)),
            (s("bytes"), Value::Bytes(vec![0u8, 0xff, b'a', b'b'].into())),
            (s("cplx"), Value::Complex(1.0, -2.0)),
            (s("tags"), Value::Set(vec![s("b"), s("a")].into())),
            (s("device"), Value::Device("cpu".into())),
            (s("dtype"), Value::Global("torch.bfloat16")),
            (s("state"), state),
            (s("weights"), dict(DictKind::OrderedDict, weights)),
        ],
    )
}

/// An `nn.LSTM(3, 4, num_layers=2, bidirectional=True)` state_dict with arbitrary values.
fn lstm_state_dict() -> rnnkit::StateDict {
    let mut sd = rnnkit::StateDict::new();
    for l in 0..2 {
        for sfx in ["", "_reverse"] {
            let input = if l == 0 { 3 } else { 8 };
            sd.insert(
                format!("weight_ih_l{l}{sfx}"),
                tch::Tensor::randn([16, input], tch::kind::FLOAT_CPU),
            )
            .unwrap();
            sd.insert(
                format!("weight_hh_l{l}{sfx}"),
                tch::Tensor::randn([16, 4], tch::kind::FLOAT_CPU),
            )
            .unwrap();
            sd.insert(
                format!("bias_ih_l{l}{sfx}"),
                tch::Tensor::randn([16], tch::kind::FLOAT_CPU),
            )
            .unwrap();
            sd.insert(
                format!("bias_hh_l{l}{sfx}"),
                tch::Tensor::randn([16], tch::kind::FLOAT_CPU),
            )
            .unwrap();
        }
    }
    sd
}

#[test]
fn files_rnnkit_writes_load_in_torch_identically() {
    let (golden, cases) = golden_cases();
    let out = out_dir("torch-check");
    let mut manifest = Vec::new();
    for case in cases.iter().filter(|c| c["rnnkit"] == "ok") {
        let name = case["name"].as_str().unwrap();
        let original = golden.join(case["file"].as_str().unwrap());
        let v = pth::load(&original).unwrap();
        pth::save(out.join(format!("{name}.pth")), &v).unwrap();
        manifest.push(serde_json::json!({"written": format!("{name}.pth"), "original": original}));
    }
    pth::save(out.join("built.pth"), &built_checkpoint()).unwrap();
    manifest.push(serde_json::json!({"written": "built.pth", "expect": "built"}));

    pth::save_state_dict(out.join("lstm.pth"), &lstm_state_dict()).unwrap();
    manifest.push(serde_json::json!({"written": "lstm.pth", "module": "LSTM",
        "kwargs": {"input_size": 3, "hidden_size": 4, "num_layers": 2, "bidirectional": true}}));
    let c01 = golden.join("c01_linear_state_dict.pth");
    pth::save_state_dict(
        out.join("linear.pth"),
        &pth::load_state_dict(&c01, None).unwrap(),
    )
    .unwrap();
    manifest.push(
        serde_json::json!({"written": "linear.pth", "original": c01, "module": "Linear",
        "kwargs": {"in_features": 4, "out_features": 3}}),
    );
    std::fs::write(
        out.join("manifest.json"),
        serde_json::to_string_pretty(&manifest).unwrap(),
    )
    .unwrap();

    let python = root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} missing: run scripts/setup.sh",
        python.display()
    );
    let run = std::process::Command::new(&python)
        .arg(root().join("scripts/check_pth_written.py"))
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "torch disagrees with files rnnkit wrote:\n{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    println!("{stdout}");
}

#[test]
fn rnnkit_reads_back_what_it_wrote() {
    let (golden, cases) = golden_cases();
    let out = out_dir("self");
    for case in cases.iter().filter(|c| c["rnnkit"] == "ok") {
        let original = golden.join(case["file"].as_str().unwrap());
        let path = out.join(case["file"].as_str().unwrap());
        let v = pth::load(&original).unwrap();
        pth::save(&path, &v).unwrap();
        let back = pth::load(&path).unwrap();
        let a = v.tensors(1 << 20);
        let b = back.tensors(1 << 20);
        match (a, b) {
            (Ok(a), Ok(b)) => {
                assert_eq!(a.len(), b.len(), "{path:?}");
                for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
                    assert_eq!(na, nb);
                    assert_eq!(ta.to_raw().unwrap(), tb.to_raw().unwrap(), "{path:?} {na}");
                    assert_eq!(
                        (ta.parameter, ta.requires_grad),
                        (tb.parameter, tb.requires_grad),
                        "{path:?} {na}"
                    );
                }
            }
            (Err(_), Err(_)) => {} // the memo bomb: too large to walk either way
            (a, b) => panic!(
                "{path:?}: {:?} vs {:?}",
                a.map(|x| x.len()),
                b.map(|x| x.len())
            ),
        }
    }
}

#[test]
fn views_keep_sharing_one_storage_when_rewritten() {
    let (golden, _) = golden_cases();
    let out = out_dir("sharing");
    let v = pth::load(golden.join("c05_views_of_one_storage.pth")).unwrap();
    pth::save(out.join("c05.pth"), &v).unwrap();
    let back = pth::load(out.join("c05.pth")).unwrap();
    let ts = back.tensors(100).unwrap();
    assert_eq!(ts.len(), 3);
    assert!(
        ts.iter()
            .all(|(_, t)| Arc::ptr_eq(&t.storage, &ts[0].1.storage)),
        "one storage, three views"
    );
    assert_eq!(ts[2].1.offset, 4);
}
