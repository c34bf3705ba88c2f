//! `rnnkit::train::translation_metrics` equals sacrebleu 2.6.0: golden values written by
//! `scripts/translation_metrics_golden.py` for 15 corpora (English and Spanish messages, numbers,
//! URLs, CJK, emoji, whitespace, entities, empty lines, 1 to 3 reference streams, an empty corpus,
//! 200 randomly perturbed sentences) and 34 tokenizer strings.
//!
//! Asserted: every integer statistic (BLEU counts, totals, sys_len, ref_len; chrF's 18
//! `[hyp, ref, match]` counts) and every `tokenize_13a` output exactly; every score, precision,
//! brevity penalty and ratio as identical f64 bits (BLEU = BP · exp(Σ log p_n / 4),
//! chrF = 100 · 5PR / (4P + R)); an error where sacrebleu raises. One exception: golden files
//! written by CPython 3.12+, whose `sum()` is compensated, get BLEU's score compared within a
//! relative 1e-14 (the worst difference is printed); CPython ≤ 3.11 (this project's venv) is exact.

use std::path::PathBuf;

use rnnkit::train::translation_metrics::{corpus_bleu, corpus_chrf, tokenize_13a};
use serde_json::Value;

/// Corpora in the golden file (`corpora()` in the script).
const N_CORPORA: usize = 15;
/// Strings in the golden file's tokenizer list (`TOKENIZER_CASES` in the script).
const N_TOKENIZER: usize = 34;

fn bits(v: &Value) -> u64 {
    v["bits"].as_u64().expect("float entry has u64 bits")
}

fn u64s(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect()
}

/// Relative tolerance on BLEU's score against a golden file from CPython 3.12+ (compensated `sum()`).
const COMPENSATED_SUM_RTOL: f64 = 1e-14;

/// Records float comparisons: by bits, or within `rtol` (relative) where one is given; a mismatch
/// keeps both values and their difference.
struct Floats {
    compared: usize,
    mismatches: Vec<String>,
    worst: f64,
}

impl Floats {
    fn check(&mut self, what: String, got: f64, want: &Value) {
        self.check_within(what, got, want, None);
    }

    fn check_within(&mut self, what: String, got: f64, want: &Value, rtol: Option<f64>) {
        self.compared += 1;
        let want_bits = bits(want);
        if got.to_bits() != want_bits {
            let w = f64::from_bits(want_bits);
            let diff = (got - w).abs();
            self.worst = self.worst.max(diff);
            if rtol.is_some_and(|r| diff <= r * w.abs()) {
                return;
            }
            self.mismatches.push(format!(
                "{what}: rust {got:e} sacrebleu {w:e} (|diff| {diff:e})"
            ));
        }
    }
}

/// Whether the golden file's CPython (`"3.11.7"`) compensates `sum()` of floats (3.12+).
fn compensated_sum(python: &str) -> bool {
    let mut parts = python.split('.').map(|p| p.parse::<u32>().unwrap());
    let (major, minor) = (parts.next().unwrap(), parts.next().unwrap());
    (major, minor) >= (3, 12)
}

#[test]
fn bleu_and_chrf_equal_sacrebleu() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let golden = root.join("tests/golden/translation_metrics.json");
    let regen = "regenerate with: .venv/bin/python scripts/translation_metrics_golden.py \
                 (scripts/test.sh does)";
    let text = std::fs::read_to_string(&golden)
        .unwrap_or_else(|e| panic!("{}: {e}; {regen}", golden.display()));
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        doc["sacrebleu"], "2.6.0",
        "golden sacrebleu version; {regen}"
    );
    let python = doc["python"]
        .as_str()
        .expect("golden records its Python version");
    let score_rtol = compensated_sum(python).then_some(COMPENSATED_SUM_RTOL);

    let corpora = doc["corpora"].as_array().unwrap();
    assert_eq!(corpora.len(), N_CORPORA, "golden corpus count; {regen}");
    let mut floats = Floats {
        compared: 0,
        mismatches: Vec::new(),
        worst: 0.0,
    };
    let mut ints = 0usize;
    let mut errors = 0usize;
    let mut sentences = 0usize;
    for c in corpora {
        let name = c["name"].as_str().unwrap();
        let hyps = strs(&c["hyps"]);
        let refs: Vec<Vec<&str>> = c["refs"].as_array().unwrap().iter().map(strs).collect();
        sentences += hyps.len();
        if !c["error"].is_null() {
            // sacrebleu raises (an empty corpus): so must we, without panicking.
            assert!(
                corpus_bleu(&hyps, &refs).is_err(),
                "{name}: BLEU should fail"
            );
            assert!(
                corpus_chrf(&hyps, &refs).is_err(),
                "{name}: chrF should fail"
            );
            errors += 1;
            continue;
        }

        let want = &c["bleu"];
        let bleu = corpus_bleu(&hyps, &refs).unwrap();
        assert_eq!(
            bleu.stats.matches.to_vec(),
            u64s(&want["counts"]),
            "{name}: BLEU counts"
        );
        assert_eq!(
            bleu.stats.totals.to_vec(),
            u64s(&want["totals"]),
            "{name}: BLEU totals"
        );
        assert_eq!(
            bleu.stats.hyp_len,
            want["sys_len"].as_u64().unwrap(),
            "{name}: sys_len"
        );
        assert_eq!(
            bleu.stats.ref_len,
            want["ref_len"].as_u64().unwrap(),
            "{name}: ref_len"
        );
        ints += 10;
        floats.check_within(
            format!("{name}: BLEU score"),
            bleu.score,
            &want["score"],
            score_rtol,
        );
        for (n, (p, w)) in bleu
            .precisions
            .iter()
            .zip(want["precisions"].as_array().unwrap())
            .enumerate()
        {
            floats.check(format!("{name}: BLEU precision {}", n + 1), *p, w);
        }
        floats.check(format!("{name}: BLEU bp"), bleu.bp, &want["bp"]);
        floats.check(format!("{name}: BLEU ratio"), bleu.ratio, &want["ratio"]);

        let want = &c["chrf"];
        let chrf = corpus_chrf(&hyps, &refs).unwrap();
        assert_eq!(
            chrf.stats.to_sacrebleu().to_vec(),
            u64s(&want["stats"]),
            "{name}: chrF statistics [hyp, ref, match] per order"
        );
        ints += 18;
        floats.check(format!("{name}: chrF score"), chrf.score, &want["score"]);
    }

    let tok_cases = doc["tokenize_13a"].as_array().unwrap();
    assert_eq!(
        tok_cases.len(),
        N_TOKENIZER,
        "golden tokenizer case count; {regen}"
    );
    let mut tok_mismatches = Vec::new();
    for t in tok_cases {
        let text = t["text"].as_str().unwrap();
        let want = t["tokens"].as_str().unwrap();
        let got = tokenize_13a(text);
        if got != want {
            tok_mismatches.push(format!("{text:?}: rust {got:?} sacrebleu {want:?}"));
        }
    }

    println!(
        "{} corpora ({} sentences, {} where sacrebleu raises): {} floats compared by bits{}, \
         {} integer statistics; {} tokenizer strings; {} float mismatches (worst |diff| {:e})",
        corpora.len(),
        sentences,
        errors,
        floats.compared,
        match score_rtol {
            Some(r) => format!(
                " (BLEU scores within relative {r:e}: golden from CPython {python}, compensated sum())"
            ),
            None => String::new(),
        },
        ints,
        tok_cases.len(),
        floats.mismatches.len(),
        floats.worst
    );
    assert!(
        tok_mismatches.is_empty(),
        "tokenize_13a differs:\n{}",
        tok_mismatches.join("\n")
    );
    assert!(
        floats.mismatches.is_empty(),
        "scores differ from sacrebleu:\n{}",
        floats.mismatches.join("\n")
    );
}
