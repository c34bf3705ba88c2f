//! Decoding a [`Seq2Seq`]: greedy, beam search and sampling, batched over sentences. Each is the
//! reference decoder of the same name in `scripts/rnnkit_seq2seq.py`, operation for operation,
//! so the tokens and scores are PyTorch's bit for bit (`tests/seq2seq_parity.rs`).
//!
//! ```text
//! log p_t = log_softmax(logits_t)                   f32, per step
//! max_len_n = max(1, min(cap, ⌊a · S_n + b⌋))       tokens, EOS included
//! beam:   candidates = score(hyp) + log p_t(v)      over beam × V per sentence (topk 2·beam)
//!         finished score = score / lp(|y|),  lp(L) = ((5 + L) / 6)^α   (GNMT, Wu et al. 2016)
//! sample: p = softmax(logits / temperature), kept to the top_k tokens, then to the smallest
//!         prefix (by descending p) whose mass reaches top_p; the token at the first index whose
//!         cumulative p ≥ u · total, u from sentence i's SplitMix64 stream (seed + i)
//! ```

use super::{DecoderState, Memory, Seq2Seq};
use crate::error::{Error, Result};
use crate::rng::SplitMix64;
use tch::{Device, Kind, Tensor};

/// How long outputs may grow: `max(1, min(cap, ⌊a · source length + b⌋))` tokens, EOS included.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MaxLength {
    /// Tokens per source token.
    pub a: f64,
    /// Tokens added.
    pub b: f64,
    /// The hard limit.
    pub cap: usize,
}

impl Default for MaxLength {
    fn default() -> Self {
        MaxLength {
            a: 2.0,
            b: 10.0,
            cap: 256,
        }
    }
}

impl MaxLength {
    /// Each sentence's limit.
    pub fn of(&self, src_len: &[i64]) -> Vec<usize> {
        src_len
            .iter()
            .map(|&n| {
                let l = (self.a * n as f64 + self.b).floor();
                (l.max(0.0) as usize).min(self.cap).max(1)
            })
            .collect()
    }
}

/// One output: its tokens (ending in EOS unless cut at the maximum length) and scores.
#[derive(Debug, Clone, PartialEq)]
pub struct Hypothesis {
    /// Target ids, EOS included when produced.
    pub tokens: Vec<i64>,
    /// Sum of the tokens' log-probabilities, divided by the length penalty (beam search).
    pub score: f64,
    /// Sum of the tokens' log-probabilities.
    pub raw_score: f64,
}

/// GNMT's length penalty `((5 + length) / 6)^alpha` (1 when alpha is 0).
pub fn length_penalty(length: usize, alpha: f64) -> f64 {
    ((5.0 + length as f64) / 6.0).powf(alpha)
}

/// The values of a 1-D or 2-D f32 tensor, row-major, as f64.
fn values_f64(t: &Tensor) -> Result<Vec<f64>> {
    let t = t.f_to_kind(Kind::Float)?.f_contiguous()?.f_view([-1])?;
    let v: Vec<f32> = Vec::<f32>::try_from(&t)?;
    Ok(v.into_iter().map(f64::from).collect())
}

fn values_i64(t: &Tensor) -> Result<Vec<i64>> {
    Ok(Vec::<i64>::try_from(&t.f_contiguous()?.f_view([-1])?)?)
}

fn check_lengths(src: &Tensor, src_len: &[i64], max_len: &[usize]) -> Result<()> {
    let n = src.size().first().copied().unwrap_or(0) as usize;
    if src_len.len() != n || max_len.len() != n {
        return Err(Error::invalid(format!(
            "decode: {} source lengths and {} maximum lengths for {n} sentences",
            src_len.len(),
            max_len.len()
        )));
    }
    Ok(())
}

impl Seq2Seq {
    fn start(&self, n: i64, device: Device) -> Tensor {
        Tensor::full([n], self.s2s().bos_id, (Kind::Int64, device))
    }

    /// Greedy decoding: the most probable token each step until EOS (kept) or the sentence's
    /// maximum length; `raw_score` = `score` = the sum of the chosen tokens' log-probabilities.
    pub fn greedy(
        &self,
        src: &Tensor,
        src_len: &[i64],
        max_len: &[usize],
    ) -> Result<Vec<Hypothesis>> {
        check_lengths(src, src_len, max_len)?;
        let _guard = tch::no_grad_guard();
        let eos = self.s2s().eos_id;
        let (mem, mut state) = self.encode(src, src_len)?;
        let n = src_len.len();
        let mut y = self.start(n as i64, src.device());
        let mut out: Vec<Hypothesis> = (0..n)
            .map(|_| Hypothesis {
                tokens: Vec::new(),
                score: 0.0,
                raw_score: 0.0,
            })
            .collect();
        let mut done = vec![false; n];
        for _ in 0..max_len.iter().copied().max().unwrap_or(0) {
            let (step, next) = self.step(&y, &state, &mem)?;
            state = next;
            let logp = step.logits.f_log_softmax(1, None::<Kind>)?;
            let best = logp.f_argmax(1, false)?;
            let lp = values_f64(
                &logp
                    .f_gather(1, &best.f_unsqueeze(1)?, false)?
                    .f_squeeze_dim(1)?,
            )?;
            let best_v = values_i64(&best)?;
            for i in 0..n {
                if !done[i] {
                    let h = &mut out[i];
                    h.tokens.push(best_v[i]);
                    h.raw_score += lp[i];
                    h.score = h.raw_score;
                    done[i] = best_v[i] == eos || h.tokens.len() >= max_len[i];
                }
            }
            if done.iter().all(|&d| d) {
                break;
            }
            y = best;
        }
        Ok(out)
    }

    /// Batched beam search, `beam` hypotheses per sentence; per sentence the `n_best` finished
    /// hypotheses, best first. The algorithm is `beam_search` in `scripts/rnnkit_seq2seq.py`:
    /// each step the best 2·beam of the beam·V candidates (topk over the flattened row,
    /// hypothesis k and token v at k·V + v), in that order: one ending in EOS is finished
    /// (score / [`length_penalty`], the length counting EOS) while fewer than `beam` are; any other
    /// joins the next live set while it holds fewer than `beam`. A sentence is done with `beam`
    /// finished hypotheses, or at its maximum length or with no live candidate (its live
    /// hypotheses are then finished as they stand). Equal scores keep the order they finished in.
    pub fn beam_search(
        &self,
        src: &Tensor,
        src_len: &[i64],
        max_len: &[usize],
        beam: usize,
        alpha: f64,
        n_best: usize,
    ) -> Result<Vec<Vec<Hypothesis>>> {
        check_lengths(src, src_len, max_len)?;
        let v = self.s2s().tgt_vocab_size;
        if beam == 0 || 2 * beam as i64 > beam as i64 * v {
            return Err(Error::invalid(format!(
                "beam search: beam {beam} must be at least 1 and 2·beam at most beam × {v} \
                 (the target vocabulary)"
            )));
        }
        let _guard = tch::no_grad_guard();
        let eos = self.s2s().eos_id;
        let device = src.device();
        let n = src_len.len();
        let k = beam;
        let (mem, state) = self.encode(src, src_len)?;
        let rows = Tensor::arange(n as i64, (Kind::Int64, device)).f_repeat_interleave_self_int(
            k as i64,
            None::<i64>,
            None::<i64>,
        )?;
        let mem: Memory = mem.select(&rows)?;
        let mut state: DecoderState = state.select(&rows)?;
        let mut y = self.start((n * k) as i64, device);
        let mut live: Vec<f32> = (0..n * k)
            .map(|r| if r % k == 0 { 0.0 } else { f32::NEG_INFINITY })
            .collect();
        let mut hyps: Vec<Vec<i64>> = vec![Vec::new(); n * k];
        let mut finished: Vec<Vec<Hypothesis>> = vec![Vec::new(); n];
        let mut done = vec![false; n];
        let finish = |tokens: Vec<i64>, raw: f64| Hypothesis {
            score: raw / length_penalty(tokens.len(), alpha),
            raw_score: raw,
            tokens,
        };
        for t in 0..max_len.iter().copied().max().unwrap_or(0) {
            let (step, next) = self.step(&y, &state, &mem)?;
            state = next;
            let logp = step.logits.f_log_softmax(1, None::<Kind>)?;
            let scores = Tensor::from_slice(&live)
                .to_device(device)
                .f_view([(n * k) as i64, 1])?;
            let cand = (scores + logp).f_view([n as i64, k as i64 * v])?;
            let (top_s, top_i) = cand.f_topk(2 * k as i64, 1, true, true)?;
            let (top_s, top_i) = (values_f64(&top_s)?, values_i64(&top_i)?);
            let mut new_live = vec![f32::NEG_INFINITY; n * k];
            let mut origin: Vec<i64> = (0..(n * k) as i64).collect();
            let mut next_tok = vec![eos; n * k];
            let mut new_hyps: Vec<Vec<i64>> = vec![Vec::new(); n * k];
            for i in 0..n {
                if done[i] {
                    continue;
                }
                let mut kept = 0;
                for j in 0..2 * k {
                    let (score, idx) = (top_s[i * 2 * k + j], top_i[i * 2 * k + j]);
                    if score == f64::NEG_INFINITY {
                        break;
                    }
                    let (h, tok) = ((idx / v) as usize, idx % v);
                    let mut tokens = hyps[i * k + h].clone();
                    tokens.push(tok);
                    if tok == eos {
                        if finished[i].len() < k {
                            finished[i].push(finish(tokens, score));
                        }
                    } else if kept < k {
                        new_live[i * k + kept] = score as f32;
                        origin[i * k + kept] = (i * k + h) as i64;
                        next_tok[i * k + kept] = tok;
                        new_hyps[i * k + kept] = tokens;
                        kept += 1;
                    }
                    if kept == k && finished[i].len() >= k {
                        break;
                    }
                }
                if finished[i].len() >= k {
                    done[i] = true;
                } else if t + 1 >= max_len[i] || kept == 0 {
                    for r in 0..kept {
                        let raw = f64::from(new_live[i * k + r]);
                        finished[i].push(finish(new_hyps[i * k + r].clone(), raw));
                    }
                    done[i] = true;
                }
            }
            if done.iter().all(|&d| d) {
                break;
            }
            live = new_live;
            hyps = new_hyps;
            let origin = Tensor::from_slice(&origin).to_device(device);
            state = state.select(&origin)?;
            y = Tensor::from_slice(&next_tok).to_device(device);
        }
        Ok(finished
            .into_iter()
            .map(|mut f| {
                // Stable: equal scores keep the order they finished in (Python's sorted).
                f.sort_by(|a, b| {
                    b.score
                        .partial_cmp(&a.score)
                        .unwrap_or(std::cmp::Ordering::Equal)
                });
                f.truncate(n_best);
                f
            })
            .collect())
    }

    /// Ancestral sampling with `temperature`, `top_k` (0: every token) and `top_p` (1: no
    /// nucleus cut). Sentence i draws from its own [`SplitMix64`] stream (`uniform`) seeded with
    /// `seed + i`, so its output depends on neither the rest of the batch nor any global
    /// generator (concurrent callers included). Scores are not computed (0).
    #[allow(clippy::too_many_arguments)]
    pub fn sample(
        &self,
        src: &Tensor,
        src_len: &[i64],
        max_len: &[usize],
        seed: u64,
        temperature: f64,
        top_k: i64,
        top_p: f64,
    ) -> Result<Vec<Hypothesis>> {
        check_lengths(src, src_len, max_len)?;
        if !(temperature > 0.0) || !(top_p > 0.0 && top_p <= 1.0) || top_k < 0 {
            return Err(Error::invalid(format!(
                "sampling: temperature ({temperature}) must be positive, top_p ({top_p}) in (0, 1] \
                 and top_k ({top_k}) non-negative"
            )));
        }
        let _guard = tch::no_grad_guard();
        let eos = self.s2s().eos_id;
        let (mem, mut state) = self.encode(src, src_len)?;
        let n = src_len.len();
        let v = self.s2s().tgt_vocab_size;
        let mut rngs: Vec<SplitMix64> = (0..n as u64)
            .map(|i| SplitMix64(seed.wrapping_add(i)))
            .collect();
        let device = src.device();
        let mut y = self.start(n as i64, device);
        let mut out: Vec<Vec<i64>> = vec![Vec::new(); n];
        let mut done = vec![false; n];
        for _ in 0..max_len.iter().copied().max().unwrap_or(0) {
            let (step, next) = self.step(&y, &state, &mem)?;
            state = next;
            let probs = (step.logits / temperature).f_softmax(1, None::<Kind>)?;
            let (mut sorted_p, order) = probs.f_sort_stable(true, 1, true)?;
            if top_k > 0 && top_k < v {
                let _ = sorted_p.f_narrow(1, top_k, v - top_k)?.f_fill_(0.0)?;
            }
            if top_p < 1.0 {
                let before = sorted_p.f_cumsum(1, None::<Kind>)? - &sorted_p;
                sorted_p = sorted_p.f_masked_fill(&before.f_ge(top_p)?, 0.0)?;
            }
            let u: Vec<f64> = rngs.iter_mut().map(SplitMix64::uniform).collect();
            let u = Tensor::from_slice(&u)
                .to_device(device)
                .f_to_kind(sorted_p.kind())?
                .f_unsqueeze(1)?;
            let cdf = sorted_p.f_cumsum(1, None::<Kind>)?;
            let total = cdf.f_narrow(1, v - 1, 1)?;
            let draw = cdf
                .f_lt_tensor(&(u * total))?
                .f_sum_dim_intlist([1i64].as_slice(), false, None::<Kind>)?
                .f_clamp_max(v - 1)?;
            let tok = order
                .f_gather(1, &draw.f_unsqueeze(1)?, false)?
                .f_squeeze_dim(1)?;
            let tok_v = values_i64(&tok)?;
            for i in 0..n {
                if !done[i] {
                    out[i].push(tok_v[i]);
                    done[i] = tok_v[i] == eos || out[i].len() >= max_len[i];
                }
            }
            if done.iter().all(|&d| d) {
                break;
            }
            y = tok;
        }
        Ok(out
            .into_iter()
            .map(|tokens| Hypothesis {
                tokens,
                score: 0.0,
                raw_score: 0.0,
            })
            .collect())
    }
}
