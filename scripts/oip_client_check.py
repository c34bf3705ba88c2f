#!/usr/bin/env python3
"""A third-party client against `rnnkit serve`: NVIDIA's tritonclient (HTTP, pinned in
scripts/requirements.txt) speaks the Open Inference Protocol v2 to a classifier, a seq2seq model
and a ctc model and must get /v1's answers, value for value. Run by scripts/test.sh after the build:

    .venv/bin/python scripts/oip_client_check.py [CLASSIFIER_DIR] [SEQ2SEQ_DIR] [CTC_DIR]

Defaults: tests/golden/models/clf_tokenizer_attention, tests/golden/seq2seq/s2s_tokenizer_wordpiece
and tests/golden/ctc/ctc_lstm_bi_l2_conv1 with the 7 WAVs of tests/golden/ctc/wav (their mono
samples, as scripts/rnnkit_ctc.py reads them, sent as an FP32 AUDIO tensor and compared with
/v1/transcribe given the WAV file itself).
Checks: server live and ready (polled until the warm-up batch has run), server and model metadata,
model readiness by name and by version, infer with TEXT as JSON BYTES (every output, then one named
output), /v1's probabilities, labels, translations and scores equal (float32 and float64 values
compared exactly), translation parameters passed through (beam 3), and the errors a client meets:
an unknown model or version (404), binary tensor data (400, saying so), a wrong datatype (400).
Then a model repository (`--model-repository`) with both models: the index, load_model after a new
version is dropped in (answers then come from version 2), unload_model, and a load of a model that
is not there. Prints what it compared; exits 1 on the first difference.
"""
import json
import os
import subprocess
import sys
import time
import urllib.request

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RNNKIT = os.path.join(ROOT, "target", "release", "rnnkit")
TEXTS = ["a gripping, beautifully acted film", "dull and lifeless", "Press any key to continue",
         "Ünïcödé and émojis 🎬 are fine"]


def fail(msg):
    print(f"oip_client_check: FAILED: {msg}", file=sys.stderr)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


class Server:
    def __init__(self, model, name=None, extra=()):
        what = ["--model", model, "--model-name", name] if name else ["--model-repository", model]
        self.p = subprocess.Popen([RNNKIT, "serve", *what, "--addr", "127.0.0.1:0", "--device", "cpu", *extra],
                                  stderr=subprocess.PIPE, text=True)
        line = self.p.stderr.readline()
        check(line.startswith("listening on http://"), f"rnnkit serve printed {line!r}")
        self.url = line.strip().removeprefix("listening on http://")

    def post(self, path, body):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        req = urllib.request.Request(f"http://{self.url}{path}", data=data,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req) as r:
            return json.load(r)

    def stop(self):
        self.p.terminate()
        self.p.wait(timeout=30)


def wait_ready(client):
    check(client.is_server_live(), "server not live")
    start = time.time()
    while not client.is_server_ready():
        check(time.time() - start < 60, "not ready within 60 s")
        time.sleep(0.05)


def expect_error(f, words, what):
    try:
        f()
    except InferenceServerException as e:
        msg = str(e)
        check(all(w in msg for w in words), f"{what}: got {msg!r}, expected {words}")
        print(f"  {what}: refused ({msg.strip()[:90]})")
        return
    fail(f"{what}: no error")


def text_input(texts, binary=False, datatype="BYTES"):
    i = httpclient.InferInput("TEXT", [len(texts)], datatype)
    i.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=object), binary_data=binary)
    return i


def strings(a):
    return [x.decode() if isinstance(x, bytes) else str(x) for x in a.tolist()]


def classifier(model):
    name = "sentiment"
    s = Server(model, name)
    try:
        c = httpclient.InferenceServerClient(url=s.url)
        wait_ready(c)
        md = c.get_server_metadata()
        check(md["name"] == "rnnkit", f"server metadata {md}")
        mm = c.get_model_metadata(name)
        check([i["name"] for i in mm["inputs"]] == ["TEXT"], f"model metadata {mm}")
        check([o["name"] for o in mm["outputs"]] == ["PROBABILITIES", "LABEL", "LABEL_ID"], f"outputs {mm}")
        check(c.get_model_metadata(name, "1")["versions"] == ["1"], "versions")
        check(c.is_model_ready(name) and c.is_model_ready(name, "1"), "model not ready")
        check(not c.is_model_ready("nope") and not c.is_model_ready(name, "2"), "unknown model ready")
        outs = [httpclient.InferRequestedOutput(o, binary_data=False) for o in ("PROBABILITIES", "LABEL", "LABEL_ID")]
        r = c.infer(name, [text_input(TEXTS)], outputs=outs, request_id="42")
        v1 = s.post("/v1/predict", {"texts": TEXTS})["predictions"]
        probs = r.as_numpy("PROBABILITIES")
        check(probs.dtype == np.float32 and probs.shape == (len(TEXTS), len(v1[0]["probabilities"])),
              f"PROBABILITIES {probs.dtype} {probs.shape}")
        with open(os.path.join(model, "config.json")) as f:
            mc = json.load(f)
        labels = mc.get("labels") or [str(i) for i in range(mc["num_classes"])]
        want = np.array([[p["probabilities"][label] for label in labels] for p in v1], dtype=np.float64)
        check(np.array_equal(probs.astype(np.float64), want), f"probabilities differ:\n{probs}\n{want}")
        check(strings(r.as_numpy("LABEL")) == [p["label"] for p in v1], "labels differ")
        check(r.as_numpy("LABEL_ID").tolist() == [p["label_id"] for p in v1], "label ids differ")
        check(r.get_response()["id"] == "42", "request id not echoed")
        one = c.infer(name, [text_input(TEXTS[:1])], model_version="1",
                      outputs=[httpclient.InferRequestedOutput("LABEL", binary_data=False)])
        check([o["name"] for o in one.get_response()["outputs"]] == ["LABEL"], "named output")
        print(f"  classifier: {len(TEXTS)} texts, probabilities equal to /v1/predict's to the bit; labels, ids equal")
        expect_error(lambda: c.infer("nope", [text_input(TEXTS)], outputs=outs), ["no model"], "unknown model")
        expect_error(lambda: c.infer(name, [text_input(TEXTS)], model_version="7", outputs=outs),
                     ["no version"], "unknown version")
        expect_error(lambda: c.infer(name, [text_input(TEXTS, binary=True)]), ["binary tensor data"],
                     "binary tensor data")
        bad = httpclient.InferInput("TEXT", [1], "INT64")
        bad.set_data_from_numpy(np.array([3], dtype=np.int64), binary_data=False)
        expect_error(lambda: c.infer(name, [bad], outputs=outs), ["BYTES"], "INT64 text")
    finally:
        s.stop()


def translator(model):
    name = "translator"
    s = Server(model, name)
    try:
        c = httpclient.InferenceServerClient(url=s.url)
        wait_ready(c)
        mm = c.get_model_metadata(name)
        check([o["name"] for o in mm["outputs"]] == ["TRANSLATION", "SCORE"], f"outputs {mm}")
        outs = [httpclient.InferRequestedOutput(o, binary_data=False) for o in ("TRANSLATION", "SCORE")]
        for params in ({}, {"beam": 3}, {"greedy": True}):
            r = c.infer(name, [text_input(TEXTS)], outputs=outs, parameters=params or None)
            v1 = s.post("/v1/translate", {"texts": TEXTS, **params})["translations"]
            check(strings(r.as_numpy("TRANSLATION")) == [t["translation"] for t in v1],
                  f"{params}: translations differ")
            score = r.as_numpy("SCORE")
            check(score.dtype == np.float64 and score.tolist() == [t["score"] for t in v1], f"{params}: scores differ")
            print(f"  seq2seq {params or 'defaults'}: {len(TEXTS)} translations and scores equal to /v1/translate's")
        expect_error(lambda: c.infer(name, [text_input(TEXTS)], outputs=outs, parameters={"beam": 0}),
                     ["beam"], "beam 0")
        expect_error(lambda: c.infer(name, [text_input(["ok", ""])], outputs=outs), ["text 1 is empty"],
                     "an empty text")
    finally:
        s.stop()


def wav_samples(path):
    """A WAV file's mono float32 samples and rate, read by scripts/rnnkit_ctc.py (the reader
    tests/ctc_parity.rs holds rnnkit's to, bit for bit)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import rnnkit_ctc
    x, rate = rnnkit_ctc.read_wav(path)
    return x.numpy(), rate


def transcriber(model):
    """AUDIO as FP32 samples over /v2 against the WAV file over /v1/transcribe, one request at a
    time (an utterance's score may depend on what it is batched with)."""
    name = "speech"
    s = Server(model, name, ["--max-body-bytes", str(16 << 20), "--max-batch", "1"])
    try:
        c = httpclient.InferenceServerClient(url=s.url)
        wait_ready(c)
        mm = c.get_model_metadata(name)
        check(mm["platform"] == "rnnkit_ctc" and [i["name"] for i in mm["inputs"]] == ["AUDIO"]
              and mm["inputs"][0]["datatype"] == "FP32", f"model metadata {mm}")
        check([o["name"] for o in mm["outputs"]] == ["TRANSCRIPT", "SCORE"], f"outputs {mm}")
        outs = [httpclient.InferRequestedOutput(o, binary_data=False) for o in ("TRANSCRIPT", "SCORE")]
        wav_dir = os.path.join(ROOT, "tests/golden/ctc/wav")
        wavs = sorted(f for f in os.listdir(wav_dir) if f.endswith(".wav"))
        check(len(wavs) == 7, f"WAVs in {wav_dir}: {wavs} (regenerate: scripts/make_ctc_golden.py)")
        compared = 0
        for f in wavs:
            path = os.path.join(wav_dir, f)
            x, rate = wav_samples(path)
            for beam in (0, 8):
                audio = httpclient.InferInput("AUDIO", [len(x)], "FP32")
                audio.set_data_from_numpy(x, binary_data=False)
                r = c.infer(name, [audio], outputs=outs, parameters={"sample_rate": rate, "beam": beam})
                with open(path, "rb") as fh:
                    v1 = s.post(f"/v1/transcribe?beam={beam}", fh.read())
                check(strings(r.as_numpy("TRANSCRIPT")) == [v1["text"]], f"{f} beam {beam}: transcripts differ")
                score = r.as_numpy("SCORE")
                check(score.dtype == np.float64 and score.tolist() == [v1["score"]], f"{f} beam {beam}: scores differ")
                compared += 1
        print(f"  ctc: {len(wavs)} recordings x greedy and beam 8, {compared} transcripts and scores equal to "
              f"/v1/transcribe's (the WAV file) to the bit")
        x, rate = wav_samples(os.path.join(wav_dir, wavs[0]))
        audio = httpclient.InferInput("AUDIO", [len(x)], "FP32")
        audio.set_data_from_numpy(x, binary_data=False)
        expect_error(lambda: c.infer(name, [audio], outputs=outs, parameters={"sample_rate": 44101}),
                     ["44101 Hz"], "a rate rnnkit cannot resample from")
        expect_error(lambda: c.infer(name, [audio], outputs=outs, parameters={"beam": 999}), ["beam"], "beam 999")
        expect_error(lambda: c.infer(name, [text_input(["hello"])], outputs=outs), ["AUDIO"], "a TEXT input")
    finally:
        s.stop()


def repository(clf, s2s):
    """A model repository: both models side by side, the index, a new version loaded, an unload."""
    import shutil
    import tempfile
    repo = tempfile.mkdtemp(prefix="rnnkit-oip-repo-")
    try:
        shutil.copytree(clf, os.path.join(repo, "sentiment", "1"))
        shutil.copytree(s2s, os.path.join(repo, "translator", "1"))
        s = Server(repo)
        try:
            c = httpclient.InferenceServerClient(url=s.url)
            wait_ready(c)
            check("model_repository" in c.get_server_metadata()["extensions"], "no model_repository extension")
            index = {m["name"]: m for m in c.get_model_repository_index()}
            check(index["sentiment"]["state"] == "READY" and index["translator"]["version"] == "1", f"index {index}")
            outs = [httpclient.InferRequestedOutput("LABEL", binary_data=False)]
            before = c.infer("sentiment", [text_input(TEXTS)], outputs=outs)
            check(before.get_response()["model_version"] == "1", "version 1 first")
            shutil.copytree(clf, os.path.join(repo, "sentiment", "2"))
            c.load_model("sentiment")
            after = c.infer("sentiment", [text_input(TEXTS)], outputs=outs)
            check(after.get_response()["model_version"] == "2", "version 2 after load_model")
            check(c.get_model_metadata("sentiment")["versions"] == ["2"], "metadata after load")
            check(strings(after.as_numpy("LABEL")) == strings(before.as_numpy("LABEL")), "same weights, same labels")
            r = c.infer("translator", [text_input(TEXTS[:2])],
                        outputs=[httpclient.InferRequestedOutput("TRANSLATION", binary_data=False)])
            check(len(strings(r.as_numpy("TRANSLATION"))) == 2, "translator in the repository")
            c.unload_model("translator")
            check(not c.is_model_ready("translator"), "unloaded model still ready")
            expect_error(lambda: c.load_model("nope"), ["nope"], "load of a model not in the repository")
            print("  repository: index, load_model (version 1 -> 2), unload_model through tritonclient")
        finally:
            s.stop()
    finally:
        shutil.rmtree(repo, ignore_errors=True)


def main():
    clf = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "tests/golden/models/clf_tokenizer_attention")
    s2s = sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, "tests/golden/seq2seq/s2s_tokenizer_wordpiece")
    ctc = sys.argv[3] if len(sys.argv) > 3 else os.path.join(ROOT, "tests/golden/ctc/ctc_lstm_bi_l2_conv1")
    from importlib.metadata import version
    print(f"oip_client_check: tritonclient {version('tritonclient')} against {RNNKIT}")
    classifier(clf)
    translator(s2s)
    transcriber(ctc)
    repository(clf, s2s)
    print("oip_client_check: ok")


if __name__ == "__main__":
    main()
