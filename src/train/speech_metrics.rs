//! Speech-recognition metrics: corpus word and character error rates, equal to `jiwer==4.0.0`'s
//! `wer(refs, hyps)` and `cer(refs, hyps)` with their default transforms (checked against jiwer
//! itself by `scripts/speech_metrics_golden.py` and tests/speech_metrics_parity.rs).
//!
//! ```text
//! words(s) = split(strip(collapse(s)), " ") without empty pieces
//!            collapse: every run of ≥ 2 whitespace characters → one " "; strip: Python's str.strip()
//! chars(s) = the characters (code points) of strip(s)
//! E = Σ_i levenshtein(ref_i, hyp_i)   (S + D + I of the minimal alignment, unit costs)
//! N = Σ_i |ref_i|                      (H + S + D)
//! WER, CER = E / N, or, when N = 0, the number of inserted units (jiwer's edge case)
//! ```
//! "Whitespace" is Python's (`\s` in `re`, `str.strip()`).

use super::translation_metrics::is_py_space;
use crate::error::{Error, Result};

/// Corpus WER and CER, with their counts.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ErrorRates {
    /// Word error rate (a fraction, not a percentage).
    pub wer: f64,
    /// Character error rate.
    pub cer: f64,
    /// Word edits (S + D + I).
    pub word_errors: usize,
    /// Reference words.
    pub words: usize,
    /// Character edits.
    pub char_errors: usize,
    /// Reference characters.
    pub chars: usize,
}

fn collapse(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut run: Vec<char> = Vec::new();
    let flush = |run: &mut Vec<char>, out: &mut String| {
        if run.len() >= 2 {
            out.push(' ');
        } else {
            out.extend(run.iter());
        }
        run.clear();
    };
    for c in s.chars() {
        if is_py_space(c) {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

fn strip(s: &str) -> &str {
    s.trim_matches(is_py_space)
}

/// jiwer's default word transform.
pub fn words(s: &str) -> Vec<String> {
    strip(&collapse(s))
        .split(' ')
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// Levenshtein distance with unit costs.
pub fn edit_distance<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, x) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, y) in b.iter().enumerate() {
            cur[j + 1] = (prev[j + 1] + 1)
                .min(cur[j] + 1)
                .min(prev[j] + usize::from(x != y));
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

fn rate(errors: usize, n: usize, inserted: usize) -> f64 {
    if n == 0 {
        inserted as f64
    } else {
        errors as f64 / n as f64
    }
}

/// Corpus WER and CER of `hyps` against `refs` (same length, at least one pair).
pub fn error_rates(refs: &[&str], hyps: &[&str]) -> Result<ErrorRates> {
    if refs.is_empty() || refs.len() != hyps.len() {
        return Err(Error::invalid(format!(
            "error rates: {} references and {} hypotheses (the same number, at least one, is needed)",
            refs.len(),
            hyps.len()
        )));
    }
    let (mut we, mut wn, mut wi, mut ce, mut cn, mut ci) = (0, 0, 0, 0, 0, 0);
    for (r, h) in refs.iter().zip(hyps) {
        let (rw, hw) = (words(r), words(h));
        we += edit_distance(&rw, &hw);
        wn += rw.len();
        wi += hw.len();
        let (rc, hc): (Vec<char>, Vec<char>) =
            (strip(r).chars().collect(), strip(h).chars().collect());
        ce += edit_distance(&rc, &hc);
        cn += rc.len();
        ci += hc.len();
    }
    Ok(ErrorRates {
        wer: rate(we, wn, wi),
        cer: rate(ce, cn, ci),
        word_errors: we,
        words: wn,
        char_errors: ce,
        chars: cn,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_substitutions_insertions_and_deletions() {
        let r = error_rates(&["a b c", "d e"], &["a x c", "d e f"]).unwrap();
        assert_eq!((r.word_errors, r.words), (2, 5));
        assert_eq!(r.wer, 0.4);
        let r = error_rates(&[" a  b "], &["ab"]).unwrap();
        assert_eq!((r.char_errors, r.chars, r.cer), (2, 4, 0.5));
        assert_eq!(words("a\t\tb  c\td"), vec!["a", "b", "c\td"]);
    }
}
