//! CTC decoding of one utterance's log-probabilities `(T', V)` (class 0 = blank), as
//! `scripts/rnnkit_ctc.py` decodes: the same arithmetic in f64 in the same order, so texts are
//! identical and scores equal to the f64 bit.
//!
//! ```text
//! greedy:  k_t = argmax_v lp[t, v]; collapse repeats, drop blanks;
//!          score = Σ_t lp[t, k_t]
//! prefix beam search (Hannun et al. 2014), per prefix ℓ: p_b (ends in blank), p_nb (ends in
//! its last symbol), log domain; start {∅: (0, −∞)}. At step t, for each kept ℓ and each class c:
//!     c = blank:       p_b(ℓ)   ⊕= lp[t, 0] + (p_b(ℓ) ⊕ p_nb(ℓ))
//!     c = last(ℓ):     p_nb(ℓ)  ⊕= lp[t, c] + p_nb(ℓ);   then p_nb(ℓc) ⊕= lp[t, c] + p_b(ℓ)
//!     otherwise:       p_nb(ℓc) ⊕= lp[t, c] + (p_b(ℓ) ⊕ p_nb(ℓ))
//! then keep the `beam` prefixes of highest p_b ⊕ p_nb (ties: first created first).
//! a ⊕ b = max(a, b) + log1p(exp(−|a − b|)).
//! word list: a symbol may extend ℓ only if the word it is in stays a prefix of a listed word,
//! " " only after a complete listed word; at the end, only prefixes whose last word is complete
//! (or empty) count; none left: the empty text with score −∞.
//! ```
//! Times: a symbol's frame is the step where its prefix was created (greedy: the first step of
//! its run); a word spans [first symbol's frame, last symbol's frame + 1) × seconds per step.

use std::collections::{BTreeMap, HashMap};

/// One word and where it was spoken.
#[derive(Debug, Clone, PartialEq)]
pub struct Word {
    /// The word's text.
    pub word: String,
    /// Start in seconds.
    pub start: f64,
    /// End in seconds.
    pub end: f64,
}

/// A decoded utterance.
#[derive(Debug, Clone, PartialEq)]
pub struct Hypothesis {
    /// Class ids (1..), blanks and repeats removed.
    pub tokens: Vec<usize>,
    /// The step at which each token was emitted.
    pub frames: Vec<usize>,
    /// Greedy: the best path's log-probability; beam: log P(text) summed over the kept paths.
    pub score: f64,
}

/// `max(a, b) + log1p(exp(−|a − b|))`, with −∞ as the identity.
pub fn log_add(a: f64, b: f64) -> f64 {
    if a == f64::NEG_INFINITY {
        return b;
    }
    if b == f64::NEG_INFINITY {
        return a;
    }
    a.max(b) + (-(a - b).abs()).exp().ln_1p()
}

/// Greedy decoding of `lp` (`T'` rows of `V` log-probabilities).
pub fn greedy(lp: &[Vec<f64>]) -> Hypothesis {
    let mut g = Greedy::default();
    for row in lp {
        g.push(row);
    }
    g.hypothesis
}

/// Greedy decoding one step at a time (streaming): after pushing rows 0..T' its hypothesis is
/// [`greedy`]'s of those rows, bit for bit.
#[derive(Debug, Clone)]
pub struct Greedy {
    /// The decoding so far.
    pub hypothesis: Hypothesis,
    prev: usize,
    steps: usize,
}

impl Default for Greedy {
    fn default() -> Self {
        Self {
            hypothesis: Hypothesis {
                tokens: Vec::new(),
                frames: Vec::new(),
                score: 0.0,
            },
            prev: 0,
            steps: 0,
        }
    }
}

impl Greedy {
    /// Decodes the next step's row of `V` log-probabilities.
    pub fn push(&mut self, row: &[f64]) {
        // The first maximum, as torch.argmax returns it.
        let mut k = 0;
        for (v, &x) in row.iter().enumerate() {
            if x > row[k] {
                k = v;
            }
        }
        let h = &mut self.hypothesis;
        h.score += row[k];
        if k != 0 && k != self.prev {
            h.tokens.push(k);
            h.frames.push(self.steps);
        }
        self.prev = k;
        self.steps += 1;
    }
}

/// A word list as a trie over class ids, for constrained beam search.
#[derive(Debug, Default)]
pub struct WordList {
    children: Vec<BTreeMap<usize, usize>>,
    complete: Vec<bool>,
}

impl WordList {
    /// The words, spelled in class ids (each word non-empty, without the space class).
    pub fn new(words: &[Vec<usize>]) -> Self {
        let mut w = WordList {
            children: vec![BTreeMap::new()],
            complete: vec![false],
        };
        for word in words {
            let mut node = 0;
            for &c in word {
                node = match w.children[node].get(&c) {
                    Some(&n) => n,
                    None => {
                        w.children.push(BTreeMap::new());
                        w.complete.push(false);
                        let n = w.children.len() - 1;
                        w.children[node].insert(c, n);
                        n
                    }
                };
            }
            w.complete[node] = true;
        }
        w
    }

    /// The trie node of the word being spelled at the end of `prefix`, if it is a listed prefix.
    fn node(&self, prefix: &[usize], space: Option<usize>) -> Option<usize> {
        let start = prefix
            .iter()
            .rposition(|&c| Some(c) == space)
            .map_or(0, |i| i + 1);
        let mut node = 0;
        for c in &prefix[start..] {
            node = *self.children[node].get(c)?;
        }
        Some(node)
    }

    fn allows(&self, prefix: &[usize], c: usize, space: Option<usize>) -> bool {
        let Some(node) = self.node(prefix, space) else {
            return false;
        };
        if Some(c) == space {
            node != 0 && self.complete[node]
        } else {
            self.children[node].contains_key(&c)
        }
    }

    fn ends_well(&self, prefix: &[usize], space: Option<usize>) -> bool {
        matches!(self.node(prefix, space), Some(n) if n == 0 || self.complete[n])
    }
}

#[derive(Clone)]
struct Entry {
    prefix: Vec<usize>,
    frames: Vec<usize>,
    p_b: f64,
    p_nb: f64,
}

impl Entry {
    fn total(&self) -> f64 {
        log_add(self.p_b, self.p_nb)
    }
}

/// Prefix beam search over `lp` keeping `beam` prefixes; `words` constrains the output to
/// listed words separated by the `space` class. The best `n_best` hypotheses, best first.
pub fn prefix_beam_search(
    lp: &[Vec<f64>],
    beam: usize,
    n_best: usize,
    words: Option<&WordList>,
    space: Option<usize>,
) -> Vec<Hypothesis> {
    let mut beams = vec![Entry {
        prefix: Vec::new(),
        frames: Vec::new(),
        p_b: 0.0,
        p_nb: f64::NEG_INFINITY,
    }];
    for (t, row) in lp.iter().enumerate() {
        let mut next: Vec<Entry> = Vec::new();
        let mut index: HashMap<Vec<usize>, usize> = HashMap::new();
        let mut slot =
            |next: &mut Vec<Entry>, prefix: Vec<usize>, frames: &dyn Fn() -> Vec<usize>| {
                *index.entry(prefix.clone()).or_insert_with(|| {
                    next.push(Entry {
                        frames: frames(),
                        prefix,
                        p_b: f64::NEG_INFINITY,
                        p_nb: f64::NEG_INFINITY,
                    });
                    next.len() - 1
                })
            };
        for e in &beams {
            let last = e.prefix.last().copied();
            for (c, &p) in row.iter().enumerate() {
                if c == 0 {
                    let i = slot(&mut next, e.prefix.clone(), &|| e.frames.clone());
                    next[i].p_b = log_add(next[i].p_b, p + e.total());
                    continue;
                }
                if Some(c) == last {
                    // The repeat collapses into ℓ whatever the word list says of extending it.
                    let j = slot(&mut next, e.prefix.clone(), &|| e.frames.clone());
                    next[j].p_nb = log_add(next[j].p_nb, p + e.p_nb);
                }
                if words.is_some_and(|w| !w.allows(&e.prefix, c, space)) {
                    continue;
                }
                let mut extended = e.prefix.clone();
                extended.push(c);
                let frames = || {
                    let mut f = e.frames.clone();
                    f.push(t);
                    f
                };
                if Some(c) == last {
                    let i = slot(&mut next, extended, &frames);
                    next[i].p_nb = log_add(next[i].p_nb, p + e.p_b);
                } else {
                    let i = slot(&mut next, extended, &frames);
                    next[i].p_nb = log_add(next[i].p_nb, p + e.total());
                }
            }
        }
        // Stable: equal totals keep their creation order.
        next.sort_by(|a, b| {
            b.total()
                .partial_cmp(&a.total())
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        next.truncate(beam.max(1));
        beams = next;
    }
    let mut out: Vec<Hypothesis> = beams
        .into_iter()
        .filter(|e| words.is_none_or(|w| w.ends_well(&e.prefix, space)))
        .map(|e| Hypothesis {
            score: e.total(),
            tokens: e.prefix,
            frames: e.frames,
        })
        .collect();
    if out.is_empty() {
        out.push(Hypothesis {
            tokens: Vec::new(),
            frames: Vec::new(),
            score: f64::NEG_INFINITY,
        });
    }
    out.truncate(n_best.max(1));
    out
}

/// The words of a hypothesis with their times: tokens mapped through `alphabet` (class i + 1 =
/// `alphabet[i]`), split at `" "`.
pub fn words(h: &Hypothesis, alphabet: &[String], seconds_per_step: f64) -> Vec<Word> {
    let mut out = Vec::new();
    let mut cur: Option<(String, usize, usize)> = None;
    for (&k, &f) in h.tokens.iter().zip(&h.frames) {
        let ch = &alphabet[k - 1];
        if ch == " " {
            out.extend(cur.take());
            continue;
        }
        match &mut cur {
            Some((w, _, end)) => {
                w.push_str(ch);
                *end = f;
            }
            None => cur = Some((ch.clone(), f, f)),
        }
    }
    out.extend(cur);
    out.into_iter()
        .map(|(word, s, e)| Word {
            word,
            start: s as f64 * seconds_per_step,
            end: (e + 1) as f64 * seconds_per_step,
        })
        .collect()
}

/// The text of class ids (class i + 1 = `alphabet[i]`).
pub fn text(tokens: &[usize], alphabet: &[String]) -> String {
    tokens.iter().map(|&k| alphabet[k - 1].as_str()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ln(p: &[f64]) -> Vec<f64> {
        p.iter().map(|x| x.ln()).collect()
    }

    #[test]
    fn greedy_collapses_repeats_and_blanks() {
        // classes: blank, a, b
        let lp = vec![
            ln(&[0.1, 0.8, 0.1]),
            ln(&[0.1, 0.8, 0.1]),
            ln(&[0.8, 0.1, 0.1]),
            ln(&[0.1, 0.8, 0.1]),
            ln(&[0.1, 0.1, 0.8]),
        ];
        let h = greedy(&lp);
        assert_eq!(h.tokens, vec![1, 1, 2]);
        assert_eq!(h.frames, vec![0, 3, 4]);
    }

    #[test]
    fn beam_sums_paths_that_greedy_splits() {
        // Two frames: greedy picks blank,blank ("" at 0.36) but "a" has 0.6·0.4·2 + 0.4·0.4 = 0.64.
        let lp = vec![ln(&[0.6, 0.4]), ln(&[0.6, 0.4])];
        assert!(greedy(&lp).tokens.is_empty());
        let best = &prefix_beam_search(&lp, 4, 1, None, None)[0];
        assert_eq!(best.tokens, vec![1]);
        assert!(
            (best.score.exp() - 0.64).abs() < 1e-12,
            "{}",
            best.score.exp()
        );
    }

    #[test]
    fn word_list_constrains_output() {
        // classes: blank, " ", a, b; the list holds "ab" only.
        let w = WordList::new(&[vec![2, 3]]);
        let lp = vec![ln(&[0.1, 0.1, 0.7, 0.1]), ln(&[0.1, 0.1, 0.7, 0.1])];
        let free = &prefix_beam_search(&lp, 8, 1, None, Some(1))[0];
        assert_eq!(free.tokens, vec![2]);
        let held = &prefix_beam_search(&lp, 8, 1, Some(&w), Some(1))[0];
        assert_eq!(held.tokens, vec![2, 3]);
    }
}
