//! The Rust `tokenizers` crate encodes exactly as Python's `tokenizers` with the embedded
//! tokenizer.json: ids written by `scripts/tokenizer_golden.py` (movie-review sentences and
//! unicode, punctuation, empty and over-long edge cases).

use std::path::PathBuf;

#[test]
fn rust_token_ids_equal_python_token_ids() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let golden = root.join("tests/golden/tokenizer.json");
    let regen =
        "regenerate with: .venv/bin/python scripts/tokenizer_golden.py (scripts/test.sh does)";
    let text = std::fs::read_to_string(&golden)
        .unwrap_or_else(|e| panic!("{}: {e}; {regen}", golden.display()));
    let cases: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    // 160 movie-review sentences + 34 edge cases (N_MR and EDGE_CASES in the script).
    assert_eq!(cases.len(), 194, "golden case count; {regen}");
    let tok = rnnkit::models::tokenizer::Tokenizer::from_file(
        &root.join("weights/sentiment/tokenizer.json"),
        usize::MAX,
        0,
    )
    .unwrap();
    let mut mismatches = Vec::new();
    for c in &cases {
        let text = c["text"].as_str().unwrap();
        let want: Vec<u32> = c["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        let got = tok.encode_raw(text).unwrap();
        if got != want {
            mismatches.push(format!("{text:?}: rust {got:?} python {want:?}"));
        }
    }
    println!("{} texts, {} mismatches", cases.len(), mismatches.len());
    assert!(
        mismatches.is_empty(),
        "token ids differ:\n{}",
        mismatches.join("\n")
    );
}
