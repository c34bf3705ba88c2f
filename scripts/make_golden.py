#!/usr/bin/env python3
"""Golden files for rnnkit's recurrent-layer parity tests, computed by PyTorch.

One safetensors file per case in OUT_DIR (default tests/golden/rnn). Each holds:
  metadata  "case" (JSON: kind, mode, config, how the forward was called), "torch_version"
  tensors   param.<state_dict key>, input, h0, c0, lengths,
            output, h_n, c_n                       (the forward result)
            grad_output, grad_h_n, grad_c_n        (a fixed upstream gradient)
            grad.input, grad.h0, grad.c0, grad.param.<key>
              = d/d(.) of sum(output*grad_output) + sum(h_n*grad_h_n) + sum(c_n*grad_c_n)
Seeds are fixed, so a rerun writes identical files. Run by scripts/test.sh before the Rust tests:
  .venv/bin/python scripts/make_golden.py tests/golden/rnn
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

DTYPES = {"f32": torch.float32, "f64": torch.float64, "bf16": torch.bfloat16, "f16": torch.float16}


def tensors_of(d):
    """safetensors wants contiguous, unshared tensors."""
    return {k: v.detach().contiguous().clone() for k, v in d.items() if v is not None}


def rnn_case(name, mode, *, input_size=5, hidden_size=7, num_layers=1, bias=True, batch_first=False,
             dropout=0.0, bidirectional=False, proj_size=0, nonlinearity="tanh", init_state=False,
             packed=False, unbatched=False, dtype="f32", train=False, seq_len=6, batch=4,
             lengths=None, grads=True, seed=0):
    torch.manual_seed(seed)
    cls = {"RNN_TANH": torch.nn.RNN, "RNN_RELU": torch.nn.RNN, "LSTM": torch.nn.LSTM, "GRU": torch.nn.GRU}[mode]
    kwargs = dict(input_size=input_size, hidden_size=hidden_size, num_layers=num_layers, bias=bias,
                  batch_first=batch_first, dropout=dropout, bidirectional=bidirectional)
    if mode == "LSTM":
        kwargs["proj_size"] = proj_size
    if mode.startswith("RNN"):
        kwargs["nonlinearity"] = nonlinearity
    m = cls(**kwargs).to(DTYPES[dtype])
    m.train(train)
    D = 2 if bidirectional else 1
    h_out = proj_size or hidden_size
    t = DTYPES[dtype]
    if unbatched:
        x = torch.randn(seq_len, input_size, dtype=t)
        hshape, cshape = (D * num_layers, h_out), (D * num_layers, hidden_size)
    else:
        x = torch.randn(batch, seq_len, input_size, dtype=t) if batch_first else torch.randn(seq_len, batch, input_size, dtype=t)
        hshape, cshape = (D * num_layers, batch, h_out), (D * num_layers, batch, hidden_size)
    h0 = torch.randn(*hshape, dtype=t) if init_state else None
    c0 = torch.randn(*cshape, dtype=t) if init_state and mode == "LSTM" else None
    if packed and lengths is None:
        lengths = torch.randint(1, seq_len + 1, (batch,))
        lengths[1] = seq_len  # the longest reaches the end of the padding
    leaves = [x] + [v for v in (h0, c0) if v is not None]
    if grads:
        for v in leaves:
            v.requires_grad_(True)
    hx = None
    if init_state:
        hx = (h0, c0) if mode == "LSTM" else h0
    with torch.set_grad_enabled(grads):
        if packed:
            p = pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=False)
            out_p, state = m(p, hx)
            out, _ = pad_packed_sequence(out_p, batch_first=batch_first, total_length=seq_len)
        else:
            out, state = m(x, hx)
    h_n, c_n = state if mode == "LSTM" else (state, None)
    rec = {"input": x, "h0": h0, "c0": c0, "output": out, "h_n": h_n, "c_n": c_n}
    if packed:
        rec["lengths"] = lengths.to(torch.int64)
    for k, v in m.state_dict().items():
        rec["param." + k] = v
    if grads:
        g = {"grad_output": torch.randn_like(out), "grad_h_n": torch.randn_like(h_n),
             "grad_c_n": torch.randn_like(c_n) if c_n is not None else None}
        loss = (out * g["grad_output"]).sum() + (h_n * g["grad_h_n"]).sum()
        if c_n is not None:
            loss = loss + (c_n * g["grad_c_n"]).sum()
        loss.backward()
        rec.update(g)
        rec["grad.input"] = x.grad
        rec["grad.h0"] = h0.grad if h0 is not None else None
        rec["grad.c0"] = c0.grad if c0 is not None else None
        for k, p in m.named_parameters():
            rec["grad.param." + k] = p.grad
    config = {k: v for k, v in kwargs.items()}
    case = dict(kind="rnn", name=name, mode=mode, config=config, init_state=init_state, packed=packed,
                unbatched=unbatched, dtype=dtype, train=train, grads=grads)
    return case, rec


def cell_case(name, mode, *, input_size=5, hidden_size=7, bias=True, unbatched=False, dtype="f32",
              init_state=True, batch=3, seed=0, nonlinearity="tanh"):
    torch.manual_seed(seed)
    t = DTYPES[dtype]
    if mode == "LSTM":
        m = torch.nn.LSTMCell(input_size, hidden_size, bias)
    elif mode == "GRU":
        m = torch.nn.GRUCell(input_size, hidden_size, bias)
    else:
        m = torch.nn.RNNCell(input_size, hidden_size, bias, nonlinearity=nonlinearity)
    m = m.to(t)
    shape = (hidden_size,) if unbatched else (batch, hidden_size)
    x = torch.randn(*((input_size,) if unbatched else (batch, input_size)), dtype=t, requires_grad=True)
    h0 = torch.randn(*shape, dtype=t, requires_grad=True) if init_state else None
    c0 = torch.randn(*shape, dtype=t, requires_grad=True) if init_state and mode == "LSTM" else None
    hx = ((h0, c0) if mode == "LSTM" else h0) if init_state else None
    out = m(x, hx)
    h_n, c_n = out if mode == "LSTM" else (out, None)
    g_h = torch.randn_like(h_n)
    g_c = torch.randn_like(c_n) if c_n is not None else None
    loss = (h_n * g_h).sum() + ((c_n * g_c).sum() if c_n is not None else 0)
    loss.backward()
    rec = {"input": x, "h0": h0, "c0": c0, "h_n": h_n, "c_n": c_n, "grad_h_n": g_h, "grad_c_n": g_c,
           "grad.input": x.grad, "grad.h0": h0.grad if h0 is not None else None,
           "grad.c0": c0.grad if c0 is not None else None}
    for k, v in m.state_dict().items():
        rec["param." + k] = v
    for k, p in m.named_parameters():
        rec["grad.param." + k] = p.grad
    case = dict(kind="cell", name=name, mode=mode, config=dict(input_size=input_size, hidden_size=hidden_size,
                bias=bias, nonlinearity=nonlinearity), init_state=init_state, unbatched=unbatched, dtype=dtype)
    return case, rec


def init_case(name, mode, seed, **kwargs):
    """Fresh-module weights after torch.manual_seed(seed): same RNG, same draws, same order."""
    torch.manual_seed(seed)
    ctor = {"LSTM": torch.nn.LSTM, "GRU": torch.nn.GRU, "RNN_TANH": torch.nn.RNN}[mode]
    m = ctor(**kwargs)
    rec = {"param." + k: v for k, v in m.state_dict().items()}
    return dict(kind="init", name=name, mode=mode, config=kwargs, seed=seed, dtype="f32"), rec


def layer_case(name, seed=0):
    """Embedding(padding_idx) -> LayerNorm -> Linear, forward and gradients."""
    torch.manual_seed(seed)
    emb = torch.nn.Embedding(11, 6, padding_idx=0)
    ln = torch.nn.LayerNorm(6)
    lin = torch.nn.Linear(6, 4)
    ids = torch.tensor([[1, 0, 3], [10, 2, 0]])
    with torch.no_grad():
        ln.weight.uniform_(0.5, 1.5)
        ln.bias.uniform_(-0.5, 0.5)
    y = lin(ln(emb(ids)))
    g = torch.randn_like(y)
    (y * g).sum().backward()
    rec = {"ids": ids, "output": y, "grad_output": g}
    for prefix, mod in (("embedding.", emb), ("norm.", ln), ("linear.", lin)):
        for k, v in mod.state_dict().items():
            rec["param." + prefix + k] = v
        for k, p in mod.named_parameters():
            rec["grad.param." + prefix + k] = p.grad
    return dict(kind="layers", name=name, dtype="f32"), rec


def case(optional, fn, name, *args, **kwargs):
    return name, (lambda: fn(name, *args, **kwargs)), optional


def all_cases():
    modes = ["RNN_TANH", "RNN_RELU", "LSTM", "GRU"]
    for mode in modes:
        nl = "relu" if mode == "RNN_RELU" else "tanh"
        m = mode.lower()
        yield case(False, rnn_case, f"{m}_default", mode, nonlinearity=nl)
        yield case(False, rnn_case, f"{m}_l3_bi_bf_init_train", mode, nonlinearity=nl, num_layers=3, bidirectional=True,
                       batch_first=True, init_state=True, train=True)
        yield case(False, rnn_case, f"{m}_nobias_bi_f64", mode, nonlinearity=nl, bias=False, bidirectional=True, dtype="f64")
        yield case(False, rnn_case, f"{m}_packed_l2_bi_init", mode, nonlinearity=nl, num_layers=2, bidirectional=True,
                       init_state=True, packed=True)
        yield case(False, rnn_case, f"{m}_packed_bf_l3_f64", mode, nonlinearity=nl, num_layers=3, batch_first=True,
                       packed=True, dtype="f64", lengths=torch.tensor([2, 5, 1, 3]))
        yield case(False, rnn_case, f"{m}_unbatched_l2_bi_init", mode, nonlinearity=nl, num_layers=2, bidirectional=True,
                       init_state=True, unbatched=True)
        yield case(False, rnn_case, f"{m}_unbatched_f64", mode, nonlinearity=nl, unbatched=True, dtype="f64")
        yield case(False, rnn_case, f"{m}_dropout_eval_l3", mode, nonlinearity=nl, num_layers=3, dropout=0.5)
        yield case(False, rnn_case, f"{m}_l3_bi_bf_init_f64", mode, nonlinearity=nl, num_layers=3, bidirectional=True,
                       batch_first=True, init_state=True, dtype="f64")
        yield case(False, rnn_case, f"{m}_packed_nobias_bf_init_train", mode, nonlinearity=nl, bias=False, batch_first=True,
                       packed=True, init_state=True, train=True)
        for dt in ("bf16", "f16"):
            yield case(True, rnn_case, f"{m}_{dt}_eval_l2_bi", mode, nonlinearity=nl, num_layers=2, bidirectional=True,
                           dtype=dt, grads=False)
    yield case(False, rnn_case, "lstm_proj_default", "LSTM", proj_size=3)
    yield case(False, rnn_case, "lstm_proj_l3_bi_init_train", "LSTM", proj_size=3, num_layers=3, bidirectional=True,
                   init_state=True, train=True)
    yield case(False, rnn_case, "lstm_proj_packed_bf_l2_bi", "LSTM", proj_size=4, num_layers=2, bidirectional=True,
                   batch_first=True, packed=True, init_state=True)
    yield case(False, rnn_case, "lstm_proj_unbatched_init", "LSTM", proj_size=2, unbatched=True, init_state=True)
    yield case(False, rnn_case, "lstm_proj_f64_l3_nobias", "LSTM", proj_size=3, num_layers=3, bias=False, dtype="f64")
    yield case(False, rnn_case, "lstm_big_b32_t64_h256", "LSTM", input_size=128, hidden_size=256, num_layers=2,
                   batch_first=True, seq_len=64, batch=32, grads=False)
    for mode in ("LSTM", "GRU", "RNN_TANH", "RNN_RELU"):
        m = mode.lower()
        nl = "relu" if mode == "RNN_RELU" else "tanh"
        yield case(False, cell_case, f"cell_{m}", mode, nonlinearity=nl)
        yield case(False, cell_case, f"cell_{m}_unbatched_f64_nobias", mode, nonlinearity=nl, unbatched=True, dtype="f64",
                        bias=False)
        yield case(False, cell_case, f"cell_{m}_zero_state", mode, nonlinearity=nl, init_state=False)
    yield case(False, init_case, "init_lstm_seed0", "LSTM", 0, input_size=5, hidden_size=7, num_layers=2, bidirectional=True,
                    proj_size=3)
    yield case(False, init_case, "init_gru_seed1", "GRU", 1, input_size=3, hidden_size=4, num_layers=2)
    yield case(False, layer_case, "layers_embedding_layernorm_linear")


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else "tests/golden/rnn"
    os.makedirs(out_dir, exist_ok=True)
    written, unsupported = 0, []
    for name, make, optional in all_cases():
        try:
            case, rec = make()
        except RuntimeError as e:
            if not optional:
                raise
            # e.g. a half-precision kernel libtorch's CPU build lacks: no golden, so no claim.
            unsupported.append(f"{name}: {str(e).splitlines()[0]}")
            continue
        case["torch_version"] = torch.__version__
        meta = {"case": json.dumps(case), "torch_version": torch.__version__}
        save_file(tensors_of(rec), os.path.join(out_dir, name + ".safetensors"), metadata=meta)
        written += 1
    print(f"make_golden: wrote {written} cases to {out_dir} (torch {torch.__version__})")
    for u in unsupported:
        print(f"make_golden: not supported by PyTorch on this machine, no golden: {u}")


if __name__ == "__main__":
    main()
