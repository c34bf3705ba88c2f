//! WER and CER against jiwer 4.0.0 (`scripts/speech_metrics_golden.py`): on 49 corpora, rnnkit's
//! `error_rates` gives jiwer's edit and reference counts exactly and its scores to the f64 bit.

mod common;

use rnnkit::train::speech_metrics::error_rates;

const REGEN: &str = "regenerate with: .venv/bin/python scripts/speech_metrics_golden.py \
                     (scripts/test.sh does)";

#[test]
fn wer_and_cer_equal_jiwers() {
    let p = common::root().join("tests/golden/speech_metrics.json");
    let text =
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}; {REGEN}", p.display()));
    let j: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cases = j["cases"].as_array().unwrap();
    common::assert_count("speech metric corpora", cases.len(), 49, REGEN);
    let mut failures = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let strs = |k: &str| -> Vec<&str> {
            c[k].as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap())
                .collect()
        };
        let r = error_rates(&strs("refs"), &strs("hyps")).unwrap();
        let want = |k: &str| c[k].as_u64().unwrap();
        let got = [
            r.wer.to_bits(),
            r.cer.to_bits(),
            r.word_errors as u64,
            r.words as u64,
            r.char_errors as u64,
            r.chars as u64,
        ];
        let exp = [
            want("wer_bits"),
            want("cer_bits"),
            want("word_errors"),
            want("words"),
            want("char_errors"),
            want("chars"),
        ];
        if got != exp {
            failures.push(format!(
                "corpus {i}: wer {} cer {} counts {:?}; jiwer wer {} cer {} counts {:?}",
                r.wer,
                r.cer,
                &got[2..],
                f64::from_bits(exp[0]),
                f64::from_bits(exp[1]),
                &exp[2..]
            ));
        }
    }
    println!(
        "{} corpora: WER, CER and counts equal to jiwer's",
        cases.len()
    );
    assert!(failures.is_empty(), "{}\n{REGEN}", failures.join("\n"));
}
