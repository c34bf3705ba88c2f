//! Machine-translation metrics: corpus BLEU and chrF, equal (statistics exactly, scores to the f64
//! bit) to `sacrebleu==2.6.0`'s `corpus_bleu(hyps, refs)` and `corpus_chrf(hyps, refs)` with their
//! defaults. `refs` holds one stream per reference, as sacrebleu's `[refs1, refs2, ...]`.
//!
//! **BLEU** (tokenize `13a`, smooth_method `exp`, case-sensitive, no effective order). Each line is
//! right-stripped of whitespace and tokenized by [`tokenize_13a`]. Per sentence, the hypothesis'
//! n-grams (n = 1..4) are clipped against the per-n-gram maximum count over the references, and
//! `r` is the reference length closest to the hypothesis length `c` (the shorter one on a tie).
//! Summed over the corpus (`matches_n`, `totals_n`, `c`, `r`):
//!
//! ```text
//! p_n  = 100 · matches_n / totals_n                     (matches_n > 0)
//! p_n  = 100 / (2^k · totals_n)                         (the k-th order with matches_n = 0: exp smoothing)
//! p_n  = 0 for n and every higher order once totals_n = 0
//! BP   = 1 if c ≥ r, exp(1 − r/c) if 0 < c < r, 0 if c = 0 < r
//! BLEU = BP · exp((Σ_{n=1..4} log p_n) / 4)             (log 0 taken as −9999999999)
//! BLEU = 0 with every p_n = 0 when no n-gram matches at all
//! ratio = c / r (0 when r = 0)
//! ```
//!
//! **chrF** (char_order 6, word_order 0, beta 2, case-sensitive, whitespace removed, no eps
//! smoothing). Each line loses all its whitespace; per order n = 1..6 the statistics are
//! `[hyp_n, ref_n, match_n]`: the hypothesis' character n-gram count (0 when the reference has no
//! n-gram of that order), the reference's count and the clipped matches. With several references,
//! each sentence keeps the statistics of the reference with the highest sentence chrF (the first
//! one on a tie). Summed over the corpus, with `E` the orders where `hyp_n > 0` and `ref_n > 0`:
//!
//! ```text
//! P = (Σ_{n∈E} match_n / hyp_n) / |E|,   R = (Σ_{n∈E} match_n / ref_n) / |E|   (P = R = 0 if E = ∅)
//! chrF = 100 · (1 + β²) · P · R / (β² · P + R)                                   (0 if P + R = 0)
//! ```
//!
//! "Whitespace" is Python's (`str.split()`, `str.rstrip()`): Unicode White_Space plus U+001C–U+001F.
//! Every floating-point operation is done in sacrebleu's order, so scores agree bit for bit with
//! sacrebleu on CPython ≤ 3.11, whose `sum()` adds the four `log p_n` left to right as here. CPython
//! 3.12+ compensates `sum()` (Neumaier), which can move BLEU's score by a few ulps (relative ~1e-15);
//! precisions, BP, ratio and chrF do not use `sum()` and stay bit-identical. An empty corpus, or no
//! reference stream, is an error, as sacrebleu raises on one.

use std::collections::HashMap;

use crate::error::{Error, Result};

/// Highest word n-gram order of BLEU (sacrebleu's `MAX_NGRAM_ORDER`).
pub const MAX_NGRAM_ORDER: usize = 4;
/// Highest character n-gram order of chrF (sacrebleu's `CHRF.CHAR_ORDER`).
pub const CHAR_ORDER: usize = 6;
/// chrF's recall weight β (sacrebleu's `CHRF.BETA`).
pub const BETA: u32 = 2;

/// What sacrebleu's `my_log` returns for `log(0)`.
const LOG_ZERO: f64 = -9999999999.0;

/// The sufficient statistics of corpus BLEU, summed over sentences.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BleuStats {
    /// Clipped n-gram matches per order 1..4 (sacrebleu's `counts`).
    pub matches: [u64; 4],
    /// Hypothesis n-grams per order 1..4 (sacrebleu's `totals`).
    pub totals: [u64; 4],
    /// Hypothesis tokens (sacrebleu's `sys_len`).
    pub hyp_len: u64,
    /// Closest-reference tokens (sacrebleu's `ref_len`).
    pub ref_len: u64,
}

/// Corpus BLEU as sacrebleu's `BLEUScore`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bleu {
    /// BLEU, 0 to 100.
    pub score: f64,
    /// The smoothed n-gram precisions p_1..p_4, 0 to 100.
    pub precisions: [f64; 4],
    /// The brevity penalty, 0 to 1.
    pub bp: f64,
    /// `hyp_len / ref_len` (0 when `ref_len` is 0).
    pub ratio: f64,
    /// The statistics the score was computed from.
    pub stats: BleuStats,
}

/// The sufficient statistics of corpus chrF, summed over sentences; index `n − 1` is order `n`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChrfStats {
    /// Hypothesis character n-grams per order (0 for a sentence whose chosen reference has none).
    pub hyp: [u64; CHAR_ORDER],
    /// Reference character n-grams per order.
    pub refs: [u64; CHAR_ORDER],
    /// Clipped matches per order.
    pub matches: [u64; CHAR_ORDER],
}

impl ChrfStats {
    /// The statistics in sacrebleu's flat layout: `[hyp_1, ref_1, match_1, hyp_2, ...]`.
    pub fn to_sacrebleu(&self) -> [u64; 3 * CHAR_ORDER] {
        let mut flat = [0; 3 * CHAR_ORDER];
        for n in 0..CHAR_ORDER {
            flat[3 * n] = self.hyp[n];
            flat[3 * n + 1] = self.refs[n];
            flat[3 * n + 2] = self.matches[n];
        }
        flat
    }

    fn add(&mut self, other: &ChrfStats) {
        for n in 0..CHAR_ORDER {
            self.hyp[n] += other.hyp[n];
            self.refs[n] += other.refs[n];
            self.matches[n] += other.matches[n];
        }
    }
}

/// Corpus chrF as sacrebleu's `CHRFScore` (chrF2).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Chrf {
    /// chrF, 0 to 100.
    pub score: f64,
    /// The character n-gram order (6).
    pub char_order: usize,
    /// The recall weight β (2).
    pub beta: u32,
    /// The statistics the score was computed from.
    pub stats: ChrfStats,
}

/// Whitespace as CPython's `str.isspace()`: Unicode White_Space plus the separators U+001C–U+001F.
pub(crate) fn is_py_space(c: char) -> bool {
    matches!(
        c,
        '\t'..='\r'
            | '\u{1c}'..='\u{20}'
            | '\u{85}'
            | '\u{a0}'
            | '\u{1680}'
            | '\u{2000}'..='\u{200a}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{202f}'
            | '\u{205f}'
            | '\u{3000}'
    )
}

/// Python's `s.split()`: the non-empty runs between whitespace.
fn py_split(s: &str) -> impl Iterator<Item = &str> {
    s.split(is_py_space).filter(|w| !w.is_empty())
}

/// Python's `' '.join(s.split())`.
fn py_normalize_space(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for w in py_split(s) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(w);
    }
    out
}

/// The characters of sacrebleu's `TokenizerRegexp` first rule,
/// `[\{-\~\[-\` -\&\(-\+\:-\@\/]`: ASCII symbols except `'`, `,`, `-` and `.`, and the space.
fn is_13a_symbol(c: char) -> bool {
    matches!(c, '{'..='~' | '['..='`' | ' '..='&' | '('..='+' | ':'..='@' | '/')
}

/// `re.sub` of a two-character pattern `(A)(B)`: scans left to right, and where `a(x) && b(y)`
/// for the pair `xy` writes `repl(x, y)` and resumes after `y`, as Python's non-overlapping
/// leftmost matching does.
fn sub_pairs(
    s: &str,
    a: impl Fn(char) -> bool,
    b: impl Fn(char) -> bool,
    repl: impl Fn(&mut String, char, char),
) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len() + s.len() / 2);
    let mut i = 0;
    while i < chars.len() {
        if i + 1 < chars.len() && a(chars[i]) && b(chars[i + 1]) {
            repl(&mut out, chars[i], chars[i + 1]);
            i += 2;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// sacrebleu's `Tokenizer13a` (mteval-v13a): drops `<skipped>`, joins `-\n`, turns newlines into
/// spaces, decodes `&quot;`, `&amp;`, `&lt;`, `&gt;` (in that order), then, on `' ' + line + ' '`,
/// `TokenizerRegexp`'s rules: spaces around ASCII symbols other than `'`, `,`, `-`, `.`; around
/// `.`/`,` unless both neighbours are ASCII digits (one rule for the left, one for the right side);
/// after a `-` that follows a digit; finally single spaces between the whitespace-separated words.
/// BLEU right-strips a line before this; the tokenizer itself does not.
pub fn tokenize_13a(line: &str) -> String {
    let mut line = line
        .replace("<skipped>", "")
        .replace("-\n", "")
        .replace('\n', " ");
    if line.contains('&') {
        line = line
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">");
    }
    // ([\{-\~\[-\` -\&\(-\+\:-\@\/]) -> " \1 "
    let mut spaced = String::with_capacity(3 * line.len() + 2);
    for c in std::iter::once(' ')
        .chain(line.chars())
        .chain(std::iter::once(' '))
    {
        if is_13a_symbol(c) {
            spaced.push(' ');
            spaced.push(c);
            spaced.push(' ');
        } else {
            spaced.push(c);
        }
    }
    let digit = |c: char| c.is_ascii_digit();
    let period_comma = |c: char| c == '.' || c == ',';
    // ([^0-9])([\.,]) -> "\1 \2 "
    let s = sub_pairs(
        &spaced,
        |c| !digit(c),
        period_comma,
        |o, x, y| {
            o.push(x);
            o.push(' ');
            o.push(y);
            o.push(' ');
        },
    );
    // ([\.,])([^0-9]) -> " \1 \2"
    let s = sub_pairs(
        &s,
        period_comma,
        |c| !digit(c),
        |o, x, y| {
            o.push(' ');
            o.push(x);
            o.push(' ');
            o.push(y);
        },
    );
    // ([0-9])(-) -> "\1 \2 "
    let s = sub_pairs(
        &s,
        digit,
        |c| c == '-',
        |o, x, y| {
            o.push(x);
            o.push(' ');
            o.push(y);
            o.push(' ');
        },
    );
    py_normalize_space(&s)
}

/// Python's `s.rstrip()`.
fn py_rstrip(s: &str) -> &str {
    s.trim_end_matches(is_py_space)
}

/// Checks what sacrebleu needs (or silently truncates): at least one hypothesis and one reference
/// stream, and every stream as long as the hypotheses.
fn check_corpus(metric: &str, hyps: &[&str], refs: &[Vec<&str>]) -> Result<()> {
    if hyps.is_empty() {
        return Err(Error::invalid(format!(
            "{metric}: no hypotheses (the score of an empty corpus is undefined; sacrebleu raises)"
        )));
    }
    if refs.is_empty() {
        return Err(Error::invalid(format!(
            "{metric}: no reference streams for {} hypotheses",
            hyps.len()
        )));
    }
    for (k, stream) in refs.iter().enumerate() {
        if stream.len() != hyps.len() {
            return Err(Error::invalid(format!(
                "{metric}: {} hypotheses but reference stream {k} has {} lines",
                hyps.len(),
                stream.len()
            )));
        }
    }
    Ok(())
}

/// Counts of every word n-gram of order 1..=4 (sacrebleu's `extract_all_word_ngrams`).
fn word_ngrams<'a>(tokens: &'a [&'a str]) -> HashMap<&'a [&'a str], u64> {
    let mut counts = HashMap::new();
    for n in 1..=MAX_NGRAM_ORDER {
        for gram in tokens.windows(n) {
            *counts.entry(gram).or_insert(0) += 1;
        }
    }
    counts
}

/// sacrebleu's `_get_closest_ref_len`: the reference length nearest `hyp_len`, the shorter one on
/// a tie.
fn closest_ref_len(hyp_len: u64, ref_lens: &[u64]) -> u64 {
    let mut best: Option<(u64, u64)> = None; // (diff, len)
    for &len in ref_lens {
        let diff = hyp_len.abs_diff(len);
        best = match best {
            Some((d, l)) if diff > d || (diff == d && len >= l) => Some((d, l)),
            _ => Some((diff, len)),
        };
    }
    best.map_or(0, |(_, l)| l)
}

/// The statistics of one sentence against its references (sacrebleu's
/// `_compute_segment_statistics`), added to `stats`.
fn bleu_segment(hyp: &str, refs: &[&str], stats: &mut BleuStats) {
    let ref_lines: Vec<String> = refs.iter().map(|r| tokenize_13a(py_rstrip(r))).collect();
    let ref_tokens: Vec<Vec<&str>> = ref_lines.iter().map(|l| py_split(l).collect()).collect();
    let mut ref_ngrams: HashMap<&[&str], u64> = HashMap::new();
    let mut ref_lens = Vec::with_capacity(refs.len());
    for tokens in &ref_tokens {
        ref_lens.push(tokens.len() as u64);
        for (gram, count) in word_ngrams(tokens) {
            let max = ref_ngrams.entry(gram).or_insert(0);
            *max = (*max).max(count);
        }
    }
    let hyp_line = tokenize_13a(py_rstrip(hyp));
    let hyp_tokens: Vec<&str> = py_split(&hyp_line).collect();
    let hyp_len = hyp_tokens.len() as u64;
    for (gram, count) in word_ngrams(&hyp_tokens) {
        let n = gram.len() - 1;
        stats.totals[n] += count;
        if let Some(&r) = ref_ngrams.get(gram) {
            stats.matches[n] += count.min(r);
        }
    }
    stats.hyp_len += hyp_len;
    stats.ref_len += closest_ref_len(hyp_len, &ref_lens);
}

/// sacrebleu's `my_log`: `ln(x)`, with `log(0)` floored to −9999999999.
fn my_log(x: f64) -> f64 {
    if x == 0.0 {
        LOG_ZERO
    } else {
        x.ln()
    }
}

/// BLEU from summed statistics (sacrebleu's `BLEU.compute_bleu` with smooth_method `exp` and
/// effective_order off), in its order of operations.
pub fn compute_bleu(stats: BleuStats) -> Bleu {
    let (sys_len, ref_len) = (stats.hyp_len, stats.ref_len);
    let mut bp = 1.0;
    if sys_len < ref_len {
        bp = if sys_len > 0 {
            (1.0 - ref_len as f64 / sys_len as f64).exp()
        } else {
            0.0
        };
    }
    let ratio = if ref_len != 0 {
        sys_len as f64 / ref_len as f64
    } else {
        0.0
    };
    let mut precisions = [0.0; MAX_NGRAM_ORDER];
    let done = |score, precisions| Bleu {
        score,
        precisions,
        bp,
        ratio,
        stats,
    };
    if stats.matches.iter().all(|&m| m == 0) {
        return done(0.0, precisions);
    }
    let mut smooth_mteval = 1.0_f64;
    for n in 0..MAX_NGRAM_ORDER {
        let total = stats.totals[n];
        if total == 0 {
            break;
        }
        if stats.matches[n] == 0 {
            smooth_mteval *= 2.0;
            precisions[n] = 100.0 / (smooth_mteval * total as f64);
        } else {
            precisions[n] = 100.0 * stats.matches[n] as f64 / total as f64;
        }
    }
    // Python's `sum([...])` on CPython ≤ 3.11: 0 + log p_1 + ... + log p_4, left to right.
    let log_sum = precisions.iter().fold(0.0, |sum, &p| sum + my_log(p));
    let score = bp * (log_sum / MAX_NGRAM_ORDER as f64).exp();
    done(score, precisions)
}

/// Corpus BLEU of `hyps` against the reference streams `refs` (each as long as `hyps`), as
/// `sacrebleu.corpus_bleu(hyps, refs)`: tokenize 13a, exp smoothing, case-sensitive.
pub fn corpus_bleu(hyps: &[&str], refs: &[Vec<&str>]) -> Result<Bleu> {
    check_corpus("corpus_bleu", hyps, refs)?;
    let mut stats = BleuStats::default();
    let mut sentence_refs = Vec::with_capacity(refs.len());
    for (i, hyp) in hyps.iter().enumerate() {
        sentence_refs.clear();
        sentence_refs.extend(refs.iter().map(|stream| stream[i]));
        bleu_segment(hyp, &sentence_refs, &mut stats);
    }
    Ok(compute_bleu(stats))
}

/// The line without whitespace, as characters (`''.join(line.split())`).
fn chrf_chars(line: &str) -> Vec<char> {
    line.chars().filter(|&c| !is_py_space(c)).collect()
}

/// Counts of the character n-grams of each order 1..=6 (sacrebleu's `extract_all_char_ngrams`).
fn char_ngrams(chars: &[char]) -> Vec<HashMap<&[char], u64>> {
    (1..=CHAR_ORDER)
        .map(|n| {
            let mut counts = HashMap::new();
            for gram in chars.windows(n) {
                *counts.entry(gram).or_insert(0) += 1;
            }
            counts
        })
        .collect()
}

/// chrF from (summed or sentence) statistics (sacrebleu's `CHRF._compute_f_score` with
/// eps_smoothing off), in its order of operations.
pub fn compute_chrf(stats: &ChrfStats) -> f64 {
    const EPS: f64 = 1e-16;
    let factor = (BETA * BETA) as f64;
    let (mut avg_prec, mut avg_rec) = (0.0_f64, 0.0_f64);
    let mut effective_order = 0u32;
    for n in 0..CHAR_ORDER {
        let (n_hyp, n_ref, n_match) = (stats.hyp[n], stats.refs[n], stats.matches[n]);
        let prec = if n_hyp > 0 {
            n_match as f64 / n_hyp as f64
        } else {
            EPS
        };
        let rec = if n_ref > 0 {
            n_match as f64 / n_ref as f64
        } else {
            EPS
        };
        if n_hyp > 0 && n_ref > 0 {
            avg_prec += prec;
            avg_rec += rec;
            effective_order += 1;
        }
    }
    if effective_order == 0 {
        avg_prec = 0.0;
        avg_rec = 0.0;
    } else {
        avg_prec /= effective_order as f64;
        avg_rec /= effective_order as f64;
    }
    if avg_prec + avg_rec != 0.0 {
        let mut score = (1.0 + factor) * avg_prec * avg_rec;
        score /= factor * avg_prec + avg_rec;
        100.0 * score
    } else {
        0.0
    }
}

/// The statistics of one sentence against its best reference (sacrebleu's
/// `CHRF._compute_segment_statistics`).
fn chrf_segment(hyp: &str, refs: &[&str]) -> ChrfStats {
    let hyp_chars = chrf_chars(hyp);
    let hyp_ngrams = char_ngrams(&hyp_chars);
    let mut best = ChrfStats::default();
    let mut best_f = -1.0;
    for r in refs {
        let ref_chars = chrf_chars(r);
        let ref_ngrams = char_ngrams(&ref_chars);
        let mut stats = ChrfStats::default();
        for n in 0..CHAR_ORDER {
            let (h, r) = (&hyp_ngrams[n], &ref_ngrams[n]);
            let mut hyp_count = 0;
            let mut match_count = 0;
            for (gram, &count) in h {
                hyp_count += count;
                if let Some(&rc) = r.get(gram) {
                    match_count += count.min(rc);
                }
            }
            // sacrebleu counts no hypothesis n-grams of an order the reference lacks.
            stats.hyp[n] = if r.is_empty() { 0 } else { hyp_count };
            stats.refs[n] = r.values().sum();
            stats.matches[n] = match_count;
        }
        let f = compute_chrf(&stats);
        if f > best_f {
            best_f = f;
            best = stats;
        }
    }
    best
}

/// Corpus chrF of `hyps` against the reference streams `refs` (each as long as `hyps`), as
/// `sacrebleu.corpus_chrf(hyps, refs)`: chrF2 over character 1..6-grams, whitespace removed.
pub fn corpus_chrf(hyps: &[&str], refs: &[Vec<&str>]) -> Result<Chrf> {
    check_corpus("corpus_chrf", hyps, refs)?;
    let mut stats = ChrfStats::default();
    let mut sentence_refs = Vec::with_capacity(refs.len());
    for (i, hyp) in hyps.iter().enumerate() {
        sentence_refs.clear();
        sentence_refs.extend(refs.iter().map(|stream| stream[i]));
        stats.add(&chrf_segment(hyp, &sentence_refs));
    }
    Ok(Chrf {
        score: compute_chrf(&stats),
        char_order: CHAR_ORDER,
        beta: BETA,
        stats,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenize_13a_hand_checked() {
        let cases = [
            ("Hello, world!", "Hello , world !"),
            ("It's 1,000.5 km.", "It's 1,000.5 km ."),
            ("e.g. 3.14, x", "e . g . 3.14 , x"),
            ("pages 10-20 and a-b", "pages 10 - 20 and a-b"),
            ("&quot;a&quot; &amp;amp; &lt;b&gt;", "\" a \" & amp ; < b >"),
            ("a<skipped>b hy-\nphen\nnext", "ab hyphen next"),
            ("%s: %d files (ok)", "% s : % d files ( ok )"),
            ("¿Qué? ¡Sí!", "¿Qué ? ¡Sí !"),
            (
                "tab\tand  spaces\u{3000}ideo\u{1c}sep",
                "tab and spaces ideo sep",
            ),
            ("東京。😀.", "東京。😀 ."),
            ("", ""),
            ("   ", ""),
        ];
        for (text, want) in cases {
            assert_eq!(tokenize_13a(text), want, "{text:?}");
        }
    }

    #[test]
    fn tokenize_13a_overlapping_pairs_resume_after_match() {
        // "a.," : "a." matches the first rule, so "," is not re-examined with "." on its left.
        assert_eq!(tokenize_13a("a.,b"), "a . , b");
        assert_eq!(tokenize_13a("1.,2"), "1 . , 2");
        assert_eq!(tokenize_13a("1-2-3"), "1 - 2 - 3");
    }

    #[test]
    fn mismatched_or_empty_corpora_are_errors() {
        let e = corpus_bleu(&["a", "b"], &[vec!["a"]]).unwrap_err();
        assert!(e.to_string().contains("2 hypotheses"), "{e}");
        assert!(e.to_string().contains("has 1 lines"), "{e}");
        let e = corpus_chrf(&["a"], &[vec!["a"], vec!["a", "b"]]).unwrap_err();
        assert!(e.to_string().contains("reference stream 1 has 2"), "{e}");
        assert!(corpus_bleu(&[], &[vec![]]).is_err());
        assert!(corpus_chrf(&[], &[vec![]]).is_err());
        assert!(corpus_bleu(&["a"], &[]).is_err());
    }

    #[test]
    fn empty_lines_give_zero_scores() {
        let b = corpus_bleu(&[""], &[vec![""]]).unwrap();
        assert_eq!((b.score, b.bp, b.ratio), (0.0, 1.0, 0.0));
        let b = corpus_bleu(&["", ""], &[vec!["x y", "z"]]).unwrap();
        assert_eq!((b.score, b.bp, b.stats.ref_len), (0.0, 0.0, 3));
        assert_eq!(corpus_chrf(&[""], &[vec!["abc"]]).unwrap().score, 0.0);
    }

    #[test]
    fn closest_reference_length_prefers_shorter_on_tie() {
        assert_eq!(closest_ref_len(5, &[7, 3]), 3);
        assert_eq!(closest_ref_len(5, &[3, 7]), 3);
        assert_eq!(closest_ref_len(5, &[9, 6, 4]), 4);
    }
}
