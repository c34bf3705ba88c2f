"""The PyTorch side of examples/finetune_pretrained.rs: a user's own model, pretrained in Python,
fine-tuned in Rust, loaded back in Python.

    python scripts/finetune_pretrained.py pretrain DIR   # DIR/pretrained.pth, DIR/data.safetensors
    cargo run --release --example finetune_pretrained -- DIR
    python scripts/finetune_pretrained.py check DIR      # strict load, logits bitwise, same loop

`pretrain` trains a small language model (Embedding + LSTM + a decoder) on synthetic sequences
and saves its body with `torch.save(model.encoder.state_dict())`, under the user's own names
(`embed.*`, `rnn.*`). It also writes a labelled data set. The Rust example attaches a new
`head` (nn.Linear), freezes the pretrained parameters, trains the head with Adam (lr=1e-3) and
CrossEntropyLoss, saves `finetuned.pth` and the logits it computes on the test set.

`check` loads `finetuned.pth` into the Classifier below with `strict=True`, computes the test
logits and compares them with rnnkit's bit for bit; it also runs the same fine-tuning loop in
PyTorch from the same start and compares the final weights bit for bit. Exit status 1 on any
difference.
"""

import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

VOCAB, EMB, HIDDEN, CLASSES = 50, 16, 32, 2
SEQ, TRAIN, TEST, BATCH, EPOCHS = 12, 256, 64, 32, 5


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, EMB)
        self.rnn = nn.LSTM(EMB, HIDDEN)  # batch_first=False, PyTorch's default


class LanguageModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = Encoder()
        self.decoder = nn.Linear(HIDDEN, VOCAB)

    def forward(self, ids):  # (L, N) -> (L, N, VOCAB)
        out, _ = self.encoder.rnn(self.encoder.embed(ids))
        return self.decoder(out)


class Classifier(nn.Module):
    """The user's fine-tuning model: the pretrained body plus a new head."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, EMB)
        self.rnn = nn.LSTM(EMB, HIDDEN)
        self.head = nn.Linear(HIDDEN, CLASSES)

    def forward(self, ids):  # (L, N) -> (N, CLASSES)
        _, (h_n, _) = self.rnn(self.embed(ids))
        return self.head(h_n[-1])


def data(g):
    """Sequences of token ids; label 1 when the last token is a low id (< VOCAB/2)."""
    ids = torch.randint(0, VOCAB, (TRAIN + TEST, SEQ), generator=g)
    labels = (ids[:, -1] < VOCAB // 2).long()
    return ids[:TRAIN], labels[:TRAIN], ids[TRAIN:], labels[TRAIN:]


def pretrain(out: Path):
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    lm = LanguageModel()
    opt = torch.optim.Adam(lm.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(1)
    for _ in range(100):
        seq = torch.randint(0, VOCAB, (SEQ + 1, BATCH), generator=g).sort(0).values
        logits = lm(seq[:-1])
        loss = nn.functional.cross_entropy(logits.reshape(-1, VOCAB), seq[1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.save(lm.encoder.state_dict(), out / "pretrained.pth")
    tr_x, tr_y, te_x, te_y = data(torch.Generator().manual_seed(2))
    save_file(
        {"train_ids": tr_x, "train_labels": tr_y, "test_ids": te_x, "test_labels": te_y},
        str(out / "data.safetensors"),
    )
    print(f"pretrain: LM loss {loss.item():.3f}; wrote {out}/pretrained.pth and data.safetensors")


def finetune_in_pytorch(out: Path, head_init):
    """The same loop as examples/finetune_pretrained.rs, from the same start."""
    model = Classifier()
    missing, unexpected = model.load_state_dict(
        torch.load(out / "pretrained.pth", weights_only=True), strict=False
    )
    assert missing == ["head.weight", "head.bias"] and not unexpected, (missing, unexpected)
    model.head.load_state_dict(head_init)
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("head."))
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    d = load_file(str(out / "data.safetensors"))
    model.train()
    losses = []
    for _ in range(EPOCHS):
        for start in range(0, TRAIN, BATCH):
            ids = d["train_ids"][start : start + BATCH].t()  # (L, N)
            labels = d["train_labels"][start : start + BATCH]
            loss = loss_fn(model(ids), labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    return model, losses


def check(out: Path):
    ok = True
    model = Classifier()
    model.load_state_dict(torch.load(out / "finetuned.pth", weights_only=True), strict=True)
    model.eval()
    d = load_file(str(out / "data.safetensors"))
    rust = load_file(str(out / "rust_outputs.safetensors"))
    with torch.no_grad():
        logits = model(d["test_ids"].t())
    same = torch.equal(logits.view(torch.int32), rust["test_logits"].view(torch.int32))
    diff = (logits - rust["test_logits"]).abs().max().item()
    print(f"check: strict load ok; test logits {tuple(logits.shape)} bitwise equal: {same} (max |diff| {diff:.3g})")
    ok &= same
    pre = torch.load(out / "pretrained.pth", weights_only=True)
    frozen = all(torch.equal(model.state_dict()[k], v) for k, v in pre.items())
    print(f"check: pretrained parameters unchanged by fine-tuning: {frozen}")
    ok &= frozen
    head_init = {k[len("head.") :]: v for k, v in rust.items() if k.startswith("head.")}
    reference, losses = finetune_in_pytorch(out, head_init)
    worst = 0.0
    bitwise = True
    for k, v in reference.state_dict().items():
        r = model.state_dict()[k]
        worst = max(worst, (v - r).abs().max().item())
        bitwise &= torch.equal(v.view(torch.int32), r.view(torch.int32))
    rust_losses = rust["losses"].tolist()
    loss_same = rust_losses == losses
    print(
        f"check: the same loop in PyTorch: {len(losses)} steps, losses equal: {loss_same}, "
        f"weights bitwise equal: {bitwise} (max |diff| {worst:.3g}); final loss {losses[-1]:.4f}"
    )
    ok &= bitwise and loss_same
    acc = (logits.argmax(1) == d["test_labels"]).float().mean().item()
    print(f"check: test accuracy {acc:.3f}")
    if not ok:
        print("check: FAILED (regenerate with: python scripts/finetune_pretrained.py pretrain DIR)")
        sys.exit(1)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("pretrain", "check"):
        sys.exit(__doc__)
    {"pretrain": pretrain, "check": check}[sys.argv[1]](Path(sys.argv[2]))
