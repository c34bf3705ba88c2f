//! The VM on hand-made pickles: sign extension, memo bombs, refused globals and opcodes,
//! container rules, key equality, cycles, truncation, and tensor views (strided, neg, conj,
//! outside the storage).

use super::*;
use crate::error::Result;
use std::sync::Arc;

fn run(bytes: &[u8]) -> Result<Value> {
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
        e.to_string()
            .contains("GLOBAL posix.system whose module posix is blocked"),
        "{e}"
    );
    let e = run(b"\x80\x02c__builtin__\neval\n.").unwrap_err();
    assert!(
        e.to_string()
            .contains("Unsupported global: GLOBAL builtins.eval"),
        "{e}"
    );
    let e = run(b"\x80\x02cbuiltins\ngetattr\n.").unwrap_err();
    assert!(e.to_string().contains("builtins.getattr"), "{e}");
}

#[test]
fn protocol4_frame_is_refused() {
    let e = run(b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00}.").unwrap_err();
    assert!(
        e.to_string().contains("Unsupported operand 149 (FRAME)"),
        "{e}"
    );
}

#[test]
fn setitems_on_a_list_and_build_on_dict_fail() {
    let e = run(b"\x80\x02](K\x01K\x02u.").unwrap_err();
    assert!(e.to_string().contains("Can only SETITEMS"), "{e}");
    let e = run(b"\x80\x02}}b.").unwrap_err();
    assert!(e.to_string().contains("Can only build"), "{e}");
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
    assert!(e.to_string().contains("contains itself"), "{e}");
    // 100k nested 1-tuples.
    let mut p = b"\x80\x02)".to_vec();
    p.extend(std::iter::repeat_n(0x85u8, 100_000));
    p.push(b'.');
    let e = run(&p).unwrap_err();
    assert!(e.to_string().contains("deeper than"), "{e}");
}

#[test]
fn truncated_and_empty_pickles() {
    assert!(run(b"").unwrap_err().to_string().contains("empty"));
    assert!(run(b"\x80\x02X\xff\xff\xff\x7f")
        .unwrap_err()
        .to_string()
        .contains("truncated"));
    assert!(run(b"\x80\x02}")
        .unwrap_err()
        .to_string()
        .contains("without a STOP"));
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

fn load_tensor(p: &[u8], data: Vec<u8>) -> Result<Arc<Tensor>> {
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
    assert!(e.to_string().contains("not resizable"), "{e}");
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
        .to_string()
        .contains("conj"));
}
