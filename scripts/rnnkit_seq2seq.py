"""The PyTorch side of rnnkit's `seq2seq` family: an RNN encoder-decoder with attention, and the
reference decoders (greedy, beam search, sampling) that rnnkit's Rust decoders must match bit for bit.

config.json (family "seq2seq"): the source side uses the shared fields (vocab_size, embedding_dim,
padding_idx, encoder, dropout, tokenizer, max_length, prefixes); the rest lives under "seq2seq":

  tgt_vocab_size      rows of the target embedding and of the output projection
  tgt_embedding_dim   width of the target embedding (default: embedding_dim)
  share_embeddings    the target embedding is the source embedding (same vocabulary and width)
  decoder             {"mode", "hidden_size", "num_layers", "dropout", "bias"}: a unidirectional
                      RNN/GRU/LSTM without proj_size; its input_size is derived
  attention           "dot" | "general" | "additive" (Luong's dot and general, Bahdanau's score)
  attention_size      width of the additive score layer (default: the decoder's hidden_size)
  input_feeding       feed the previous attentional state into the decoder (default true)
  bridge              "linear" (default) or "none": how the encoder's final state starts the decoder
  tie_output          the output projection's weight is the target embedding (needs
                      tgt_embedding_dim == decoder hidden_size)
  bos_id, eos_id      target ids that start and end a sentence (padding is padding_idx)
  tgt_tokenizer       the target tokenizer file (default: the source one, `tokenizer`)

Shapes (batch-first): src (N, S) int64, src_len (N,), tgt_in (N, T) = [bos, y_1 .. y_{T-1}].
M = encoder output width (directions x (proj_size or hidden_size)), H = decoder hidden_size.

  memory, (h_n[, c_n]) = encoder(embedding(src))          packed by src_len; memory (N, S, M), 0 past S_n
  bridge linear: h_0 = tanh(bridge.h([h_n top layer, both directions]))  (N, layers*H) -> (layers, N, H)
                 c_0 = tanh(bridge.c([c_n top layer]))  (LSTM encoder and decoder; else zeros)
  step t:  x_t = tgt_embedding(y_{t-1}) [; a_{t-1} if input_feeding]      a_0 = 0
           s_t, state = decoder(x_t, state)                                 one step, s_t (N, H)
           score_j = s_t . m_j (dot) | (W_in s_t) . m_j (general) | v . tanh(W_k m_j + b_k + W_q s_t) (additive)
           alpha = softmax(score masked to -inf past S_n); c_t = sum_j alpha_j m_j      (N, M)
           a_t = tanh(linear_out([c_t; s_t]))                                           (N, H)
           logits_t = output(dropout(a_t))                                              (N, V_t)
  loss = cross_entropy(logits, tgt_out, ignore_index=padding_idx, label_smoothing=ls), mean over
         non-padding target tokens.

state_dict keys (prefixes renameable): embedding., tgt_embedding., encoder., bridge.h., bridge.c.,
decoder., attention.linear_in. (general), attention.query./key./v. (additive), attention.linear_out.,
output.
"""
import copy
import math

import torch
from torch import nn

import rnnkit_models
import rnnkit_models as rm

SEQ2SEQ_PREFIXES = {"embedding": "embedding.", "tgt_embedding": "tgt_embedding.", "encoder": "encoder.",
                    "bridge": "bridge.", "decoder": "decoder.", "attention": "attention.", "output": "output."}
SEQ2SEQ_DEFAULTS = {
    "share_embeddings": False,
    "attention": "general",
    "input_feeding": True,
    "bridge": "linear",
    "tie_output": False,
    "bos_id": 1,
    "eos_id": 2,
    "tgt_tokenizer": None,
}


def full_config(cfg):
    cfg = copy.deepcopy(cfg)
    prefixes = {**SEQ2SEQ_PREFIXES, **cfg.get("prefixes", {})}
    out = rm.full_config(cfg)
    out["prefixes"] = prefixes
    s = {**SEQ2SEQ_DEFAULTS, **out["seq2seq"]}
    s.setdefault("tgt_embedding_dim", out["embedding_dim"])
    d = dict(s["decoder"])
    d.setdefault("num_layers", 1)
    d.setdefault("dropout", 0.0)
    d.setdefault("bias", True)
    s["decoder"] = d
    s.setdefault("attention_size", d["hidden_size"])
    out["seq2seq"] = s
    return out


class Attention(nn.Module):
    def __init__(self, kind, query_dim, memory_dim, attention_size):
        super().__init__()
        self.kind = kind
        if kind == "general":
            self.linear_in = nn.Linear(query_dim, memory_dim, bias=False)
        elif kind == "additive":
            self.query = nn.Linear(query_dim, attention_size, bias=False)
            self.key = nn.Linear(memory_dim, attention_size)
            self.v = nn.Linear(attention_size, 1, bias=False)
        elif kind != "dot":
            raise ValueError(f"unknown attention {kind!r}")
        self.linear_out = nn.Linear(memory_dim + query_dim, query_dim, bias=False)

    def keys(self, memory):
        """What the scores need from the memory, computed once per sentence: W_k m + b_k (additive)."""
        return self.key(memory) if self.kind == "additive" else memory

    def forward(self, s, memory, keys, mask):
        """s (N, H), memory (N, S, M), mask (N, S) bool -> attentional state (N, H), alpha (N, S)."""
        if self.kind == "additive":
            scores = self.v(torch.tanh(keys + self.query(s).unsqueeze(1))).squeeze(2)
        else:
            q = self.linear_in(s) if self.kind == "general" else s
            scores = torch.bmm(memory, q.unsqueeze(2)).squeeze(2)
        alpha = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=1)
        ctx = torch.bmm(alpha.unsqueeze(1), memory).squeeze(1)
        return torch.tanh(self.linear_out(torch.cat([ctx, s], dim=1))), alpha


class Seq2Seq(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg = full_config(cfg)
        s, enc = cfg["seq2seq"], cfg["encoder"]
        dec = s["decoder"]
        pad = cfg["padding_idx"]
        self.embedding = nn.Embedding(cfg["vocab_size"], cfg["embedding_dim"], padding_idx=pad)
        if s["share_embeddings"]:
            self.tgt_embedding = self.embedding
        else:
            self.tgt_embedding = nn.Embedding(s["tgt_vocab_size"], s["tgt_embedding_dim"], padding_idx=pad)
        self.encoder = rm.make_encoder(enc)
        m = rm.encoder_output_size(enc)
        h, layers = dec["hidden_size"], dec["num_layers"]
        if s["bridge"] == "linear":
            dirs = 2 if enc["bidirectional"] else 1
            self.bridge = nn.Module()
            self.bridge.h = nn.Linear(m, layers * h)
            if enc["mode"] == "LSTM" and dec["mode"] == "LSTM":
                self.bridge.c = nn.Linear(dirs * enc["hidden_size"], layers * h)
        dec_in = s["tgt_embedding_dim"] + (h if s["input_feeding"] else 0)
        self.decoder = rm.make_encoder({**dec, "input_size": dec_in, "bidirectional": False, "proj_size": 0,
                                        "nonlinearity": "tanh"})
        self.attention = Attention(s["attention"], h, m, s["attention_size"])
        self.dropout = nn.Dropout(cfg["dropout"])
        self.output = nn.Linear(h, s["tgt_vocab_size"])
        if s["tie_output"]:
            self.output.weight = self.tgt_embedding.weight

    def encode(self, src, src_len):
        """-> memory (N, S, M), keys, mask (N, S), initial decoder state, initial feed (N, H)."""
        s, enc = self.cfg["seq2seq"], self.cfg["encoder"]
        dec = s["decoder"]
        packed = nn.utils.rnn.pack_padded_sequence(self.embedding(src), src_len.cpu(), batch_first=True,
                                                   enforce_sorted=False)
        out_p, state = self.encoder(packed)
        memory, _ = nn.utils.rnn.pad_packed_sequence(out_p, batch_first=True, total_length=src.size(1))
        n, h, layers = src.size(0), dec["hidden_size"], dec["num_layers"]
        mask = torch.arange(src.size(1))[None, :] < src_len[:, None]

        def spread(x):  # (N, layers*H) -> (layers, N, H)
            return x.view(n, layers, h).transpose(0, 1).contiguous()

        zeros = memory.new_zeros(layers, n, h)
        if s["bridge"] == "linear":
            h_n = state[0] if isinstance(state, tuple) else state
            h0 = spread(torch.tanh(self.bridge.h(rm.last_state(h_n, enc["bidirectional"]))))
            if dec["mode"] == "LSTM":
                if hasattr(self.bridge, "c"):
                    c0 = spread(torch.tanh(self.bridge.c(rm.last_state(state[1], enc["bidirectional"]))))
                else:
                    c0 = zeros
                init = (h0, c0)
            else:
                init = h0
        else:
            init = (zeros, zeros.clone()) if dec["mode"] == "LSTM" else zeros
        return memory, self.attention.keys(memory), mask, init, memory.new_zeros(n, h)

    def step(self, y_prev, state, feed, memory, keys, mask):
        """One decoder step: y_prev (N,) -> logits (N, V_t), state, attentional state (N, H), alpha (N, S)."""
        x = self.tgt_embedding(y_prev)
        if self.cfg["seq2seq"]["input_feeding"]:
            x = torch.cat([x, feed], dim=1)
        out, state = self.decoder(x.unsqueeze(1), state)
        a, alpha = self.attention(out.squeeze(1), memory, keys, mask)
        return self.output(self.dropout(a)), state, a, alpha

    def forward(self, src, src_len, tgt_in):
        """Teacher forcing: logits (N, T, V_t)."""
        memory, keys, mask, state, feed = self.encode(src, src_len)
        logits = []
        for t in range(tgt_in.size(1)):
            lg, state, feed, _ = self.step(tgt_in[:, t], state, feed, memory, keys, mask)
            logits.append(lg)
        return torch.stack(logits, dim=1)


def loss(model, logits, tgt_out, label_smoothing=0.0):
    return nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), tgt_out.reshape(-1),
                                       ignore_index=model.cfg["padding_idx"], label_smoothing=label_smoothing)


def max_lengths(src_len, a, b, cap):
    """The longest output (tokens, EOS included) each sentence may get: min(cap, floor(a*S_n + b)), >= 1."""
    return [max(1, min(cap, int(math.floor(a * int(n) + b)))) for n in src_len]


def select_state(state, index):
    if isinstance(state, tuple):
        return tuple(s.index_select(1, index) for s in state)
    return state.index_select(1, index)


@torch.no_grad()
def greedy(model, src, src_len, max_len):
    """Per sentence: the argmax token each step until EOS (included) or max_len tokens; the sum of
    the chosen tokens' log-probabilities (log_softmax of the f32 logits)."""
    eos = model.cfg["seq2seq"]["eos_id"]
    memory, keys, mask, state, feed = model.encode(src, src_len)
    n = src.size(0)
    y = torch.full((n,), model.cfg["seq2seq"]["bos_id"], dtype=torch.int64)
    out, scores, done = [[] for _ in range(n)], [0.0] * n, [False] * n
    for t in range(max(max_len)):
        logits, state, feed, _ = model.step(y, state, feed, memory, keys, mask)
        logp = torch.log_softmax(logits, dim=1)
        best = logp.argmax(dim=1)
        lp = logp.gather(1, best.unsqueeze(1)).squeeze(1)
        for i in range(n):
            if not done[i]:
                out[i].append(int(best[i]))
                scores[i] += float(lp[i])
                done[i] = out[i][-1] == eos or len(out[i]) >= max_len[i]
        if all(done):
            break
        y = best
    return out, scores


def length_penalty(length, alpha):
    """GNMT (Wu et al. 2016): ((5 + length) / 6) ** alpha; 1 when alpha is 0."""
    return ((5.0 + length) / 6.0) ** alpha


@torch.no_grad()
def beam_search(model, src, src_len, beam, max_len, alpha=0.0, n_best=1):
    """Batched beam search (N sentences x `beam` rows). Each step, per sentence: scores of the live
    hypotheses + log_softmax of their logits, the best 2*beam of the beam*V candidates (torch.topk over
    the flattened (beam*V) row; hypothesis k, token v at k*V + v); in that order, a candidate ending in
    EOS is finished with score / length_penalty(length, alpha) (length counts EOS) while fewer than
    `beam` are, any other joins the next live set while it holds fewer than `beam`. A sentence is done
    when it has `beam` finished hypotheses; or when it reaches max_len tokens or no candidate stays
    live, and then its live hypotheses are finished as they stand.
    Returns per sentence the n_best finished (tokens, normalised score, raw score), best first
    (stable: equal scores keep the order they finished in). At step 0 only hypothesis 0 is live."""
    cfg = model.cfg["seq2seq"]
    eos = cfg["eos_id"]
    memory, keys, mask, state, feed = model.encode(src, src_len)
    n, v = src.size(0), cfg["tgt_vocab_size"]
    rows = torch.arange(n).repeat_interleave(beam)
    memory, keys, mask = memory.index_select(0, rows), keys.index_select(0, rows), mask.index_select(0, rows)
    state, feed = select_state(state, rows), feed.index_select(0, rows)
    y = torch.full((n * beam,), cfg["bos_id"], dtype=torch.int64)
    live_scores = torch.full((n, beam), float("-inf"))
    live_scores[:, 0] = 0.0
    hyps = [[[] for _ in range(beam)] for _ in range(n)]
    finished = [[] for _ in range(n)]
    done = [False] * n
    for t in range(max(max_len)):
        logits, state, feed, _ = model.step(y, state, feed, memory, keys, mask)
        logp = torch.log_softmax(logits, dim=1)
        cand = (live_scores.view(n * beam, 1) + logp).view(n, beam * v)
        top_scores, top_idx = cand.topk(2 * beam, dim=1)
        new_scores = torch.full((n, beam), float("-inf"))
        origin = torch.arange(n * beam)  # rows to carry forward (default: itself)
        next_tok = torch.full((n * beam,), eos, dtype=torch.int64)
        new_hyps = [[[] for _ in range(beam)] for _ in range(n)]
        for i in range(n):
            if done[i]:
                continue
            kept = 0
            for score, idx in zip(top_scores[i].tolist(), top_idx[i].tolist()):
                k, tok = divmod(idx, v)
                if score == float("-inf"):
                    break
                tokens = hyps[i][k] + [tok]
                if tok == eos:
                    if len(finished[i]) < beam:
                        finished[i].append((tokens, score / length_penalty(len(tokens), alpha), score))
                elif kept < beam:
                    new_scores[i, kept] = score
                    origin[i * beam + kept] = i * beam + k
                    next_tok[i * beam + kept] = tok
                    new_hyps[i][kept] = tokens
                    kept += 1
                if kept == beam and len(finished[i]) >= beam:
                    break
            if len(finished[i]) >= beam:
                done[i] = True
            elif t + 1 >= max_len[i] or kept == 0:
                for k in range(kept):
                    s = float(new_scores[i, k])
                    finished[i].append((new_hyps[i][k], s / length_penalty(len(new_hyps[i][k]), alpha), s))
                done[i] = True
        if all(done):
            break
        live_scores = new_scores
        hyps = new_hyps
        state, feed = select_state(state, origin), feed.index_select(0, origin)
        y = next_tok
    return [sorted(f, key=lambda h: -h[1])[:n_best] for f in finished]


@torch.no_grad()
def sample(model, src, src_len, max_len, seed, temperature=1.0, top_k=0, top_p=1.0):
    """Ancestral sampling: each step p = softmax(logits / temperature), sorted descending (stable),
    zeroed past the top_k tokens (0: none) and past the smallest prefix whose mass reaches top_p
    (a token is dropped when the mass before it is >= top_p); then, with u from the sentence's
    SplitMix64 stream (as f32), the token at the first index whose cumulative sum is >= u times the
    total (inverse CDF; independent of the other sentences in the batch and of any global RNG)."""
    cfg = model.cfg["seq2seq"]
    eos, v = cfg["eos_id"], cfg["tgt_vocab_size"]
    memory, keys, mask, state, feed = model.encode(src, src_len)
    n = src.size(0)
    rngs = [rm.SplitMix64(seed + i) for i in range(n)]
    y = torch.full((n,), cfg["bos_id"], dtype=torch.int64)
    out, done = [[] for _ in range(n)], [False] * n
    for t in range(max(max_len)):
        logits, state, feed, _ = model.step(y, state, feed, memory, keys, mask)
        probs = torch.softmax(logits / temperature, dim=1)
        sorted_p, order = probs.sort(dim=1, descending=True, stable=True)
        if top_k > 0:
            sorted_p[:, top_k:] = 0.0
        if top_p < 1.0:
            before = sorted_p.cumsum(dim=1) - sorted_p
            sorted_p = sorted_p.masked_fill(before >= top_p, 0.0)
        u = torch.tensor([r.uniform() for r in rngs], dtype=torch.float64).to(sorted_p.dtype).unsqueeze(1)
        cdf = sorted_p.cumsum(dim=1)
        draw = (cdf < u * cdf[:, -1:]).sum(dim=1).clamp(max=v - 1)
        tok = order.gather(1, draw.unsqueeze(1)).squeeze(1)
        for i in range(n):
            if not done[i]:
                out[i].append(int(tok[i]))
                done[i] = out[i][-1] == eos or len(out[i]) >= max_len[i]
        if all(done):
            break
        y = tok
    return out


def translate_texts(model, tok, texts, beam=5, alpha=0.6, n_best=1, a=2.0, b=10.0, cap=256, batch_size=32,
                    tgt_tok=None):
    """Texts in, (translation, score) out, as rnnkit's Translator: ids = tok.encode(text) (an empty
    text is an error; rnnkit refuses one over max_length, the golden texts have none); sentences sorted by length, longest first (stable), batches of
    batch_size padded with padding_idx; beam search (beam 0: greedy); the best hypothesis without its final EOS,
    decoded with the target tokenizer (special tokens skipped). Results in input order."""
    cfg = model.cfg
    pad, eos = cfg.get("padding_idx") or 0, cfg["seq2seq"]["eos_id"]
    tgt_tok = tgt_tok or tok
    ids = [tok.encode(t, add_special_tokens=False).ids[:cfg["max_length"]] for t in texts]
    for i, x in enumerate(ids):
        if not x:
            raise ValueError(f"text {i} is empty (no tokens): there is nothing to translate")
    order = sorted(range(len(texts)), key=lambda i: -len(ids[i]))
    out = [None] * len(texts)
    for c in range(0, len(order), batch_size):
        chunk = order[c:c + batch_size]
        width = max(len(ids[i]) for i in chunk)
        src = torch.full((len(chunk), width), pad, dtype=torch.int64)
        for r, i in enumerate(chunk):
            src[r, :len(ids[i])] = torch.tensor(ids[i])
        src_len = torch.tensor([len(ids[i]) for i in chunk])
        max_len = max_lengths(src_len.tolist(), a, b, cap)
        if beam == 0:
            hyps = [[(o, sc, None)] for o, sc in zip(*greedy(model, src, src_len, max_len))]
        else:
            hyps = beam_search(model, src, src_len, beam, max_len, alpha, n_best)
        for i, h in zip(chunk, hyps):
            tokens, score, _ = h[0]
            body = tokens[:-1] if tokens and tokens[-1] == eos else tokens
            out[i] = (tgt_tok.decode(body), score)
    return out


def tied_keys(cfg):
    """(kept, dropped) state_dict keys of the tied matrices, under the config's prefixes: the target
    embedding is the source one (share_embeddings), the output weight the target embedding (tie_output)."""
    cfg = full_config(cfg)
    p, s = cfg["prefixes"], cfg["seq2seq"]
    pairs = []
    if s["share_embeddings"]:
        pairs.append((p["embedding"] + "weight", p["tgt_embedding"] + "weight"))
    if s["tie_output"]:
        first = p["embedding"] if s["share_embeddings"] else p["tgt_embedding"]
        pairs.append((first + "weight", p["output"] + "weight"))
    return pairs


def file_state_dict(model):
    """The state_dict to write to a file: under the config's prefixes, each tied matrix once (rnnkit
    and `load_file_state_dict` restore the other keys), contiguous copies."""
    sd = rnnkit_models.renamed_state_dict(model)
    for _, dropped in tied_keys(model.cfg):
        sd.pop(dropped, None)
    return {k: v.detach().contiguous().clone() for k, v in sd.items()}


def load_file_state_dict(model, sd):
    """Loads a state_dict keyed by the config's prefixes (tied copies may be missing) strictly."""
    sd = dict(sd)
    for kept, dropped in tied_keys(model.cfg):
        if dropped not in sd and kept in sd:
            sd[dropped] = sd[kept]
    inv = {v: k + "." for k, v in model.cfg["prefixes"].items()}
    renamed = {}
    for k, v in sd.items():
        for p in sorted(inv, key=len, reverse=True):
            if k.startswith(p):
                renamed[inv[p] + k[len(p):]] = v
                break
    model.load_state_dict(renamed, strict=True)
    return model
