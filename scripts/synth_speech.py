#!/usr/bin/env python3
"""Synthetic training speech for the ctc family: espeak-ng (installed by scripts/setup_speech.sh)
speaking texts generated from templates and word lists written here — numbers, digit strings,
letters, the NATO alphabet, days, months, ordinals, times and phone-menu phrases — in 8 English
accents x voice variants x speeds x pitches, then speed perturbation (0.9, 1.0, 1.1), resampling to
8 kHz (rnnkit_ctc.resample), gain and additive noise (white or brown, SNR 5-35 dB).
No sentence of the human recordings is spoken: every generated text is checked against
data/speech/asterisk/all.jsonl and regenerated on a match.

  .venv/bin/python scripts/synth_speech.py OUT_DIR N [SEED]
writes OUT_DIR/wav/NNNNN.wav (8 kHz 16-bit mono) and OUT_DIR/manifest.jsonl ({"wav", "text", "voice",
"speed", "pitch", "perturb", "snr_db"}). Deterministic for a seed (random.Random(seed)).
"""
import json
import os
import random
import subprocess
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rnnkit_ctc as ctc  # noqa: E402
from fetch_speech_data import ONES, number_words  # noqa: E402

ACCENTS = ["gmw/en", "gmw/en-US", "gmw/en-GB-scotland", "gmw/en-GB-x-gbclan", "gmw/en-GB-x-rp",
           "gmw/en-GB-x-gbcwmd", "gmw/en-029", "gmw/en-US-nyc"]
VARIANTS = ["", "f1", "f2", "f3", "f4", "f5", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "klatt", "klatt2",
            "klatt3", "klatt4", "Annie", "Andrea", "belinda", "linda", "aunty", "grandma", "adam", "david",
            "john", "paul", "max", "edward", "benjamin", "caleb", "norbert", "michel", "announcer"]
LETTERS = list("abcdefghijklmnopqrstuvwxyz")
NATO = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa "
        "quebec romeo sierra tango uniform victor whiskey x ray yankee zulu").split()
DAYS = "monday tuesday wednesday thursday friday saturday sunday".split()
MONTHS = "january february march april may june july august september october november december".split()
ORD = ("first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth thirteenth "
       "fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth twentieth").split()
KEYS = ["pound key", "star key", "pound sign", "star"]
THINGS = ["password", "mailbox number", "extension", "account number", "pin", "access code", "conference number",
          "telephone number", "area code", "user number", "personal identification number", "agent number"]
ACTIONS = ["listen to your messages", "record a new greeting", "change your password", "speak with an operator",
           "return to the main menu", "repeat this menu", "save this message", "delete this message",
           "hear the next message", "hear the previous message", "leave a message", "check your voicemail",
           "transfer this call", "hang up", "try again", "cancel", "accept the call", "reject the call",
           "forward this message", "change your name", "set your options", "reach the company directory"]
PLACES = ["sales", "support", "billing", "accounting", "the front desk", "customer service", "technical support",
          "the operator", "shipping", "the help desk", "human resources", "reservations"]
ADJ = ["new", "old", "saved", "urgent", "deleted", "unread"]
TEMPLATES = [
    "press {d} to {a}", "to {a} press {d}", "for {p} press {d}", "please enter your {t} followed by the {k}",
    "enter your {t} then press {k}", "you have {n} {j} messages", "you have {n} messages in your mailbox",
    "the {t} you entered is not valid", "that {t} is incorrect please try again", "please hold for {p}",
    "your call is being transferred to {p}", "all of our agents are busy please hold", "thank you for calling {p}",
    "goodbye", "please try again later", "the person at extension {ds} is not available",
    "please leave your message after the tone", "when you are finished press {k}", "your {t} has been changed",
    "message {o} received on {day} {mo} {o2} at {time}", "today is {day} {mo} {o2}", "the time is {time}",
    "you entered {ds}", "extension {ds}", "your {t} is {ds}", "to {a} press {k}", "{n}", "{ds}", "{spell}",
    "{nato}", "{day}", "{mo}", "{o}", "{mo} {o2}", "{n} {j} messages", "dial {ds} now", "press {d} or {d2}",
    "you are caller number {n}", "there are {n} people in this conference", "the conference is now locked",
    "you are now muted", "recording has started", "recording has stopped", "invalid entry", "please say your name",
    "this call may be recorded", "our office hours are {day} through {day2} from {time} to {time2}",
]


def digit_string(r):
    return " ".join(("oh" if r.random() < 0.2 else "zero") if d == "0" else ONES[int(d)]
                    for d in "".join(str(r.randint(0, 9)) for _ in range(r.randint(2, 10))))


def clock(r):
    h, m = r.randint(1, 12), r.choice([0, 5, 10, 15, 20, 30, 45, r.randint(1, 59)])
    mins = "" if m == 0 else (" oh " + ONES[m] if m < 10 else " " + number_words(m))
    return f"{number_words(h)}{mins} {r.choice(['a m', 'p m', ''])}".strip()


def text(r):
    slots = {"d": ONES[r.randint(0, 9)], "d2": ONES[r.randint(0, 9)], "a": r.choice(ACTIONS), "p": r.choice(PLACES),
             "t": r.choice(THINGS), "k": r.choice(KEYS), "j": r.choice(ADJ),
             "n": number_words(r.choice([r.randint(0, 20), r.randint(0, 100), r.randint(0, 9999)])),
             "ds": digit_string(r), "o": r.choice(ORD), "o2": r.choice(ORD), "day": r.choice(DAYS),
             "day2": r.choice(DAYS), "mo": r.choice(MONTHS), "time": clock(r), "time2": clock(r),
             "spell": " ".join(r.choice(LETTERS) for _ in range(r.randint(1, 6))),
             "nato": " ".join(r.choice(NATO) for _ in range(r.randint(1, 4)))}
    return " ".join(r.choice(TEMPLATES).format(**slots).split())


def speak(voice, speed, pitch, words, path):
    p = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", path, words],
                       capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        raise SystemExit(f"espeak-ng -v {voice} failed: {p.stderr.strip()} (is espeak-ng installed? "
                         "scripts/setup_speech.sh installs it)")


def main(out, n, seed=0):
    r = random.Random(seed)
    rng = np.random.default_rng(seed)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    human = set()
    man = os.path.join(root, "data/speech/asterisk/all.jsonl")
    if os.path.exists(man):
        human = {json.loads(ln)["text"] for ln in open(man)}
    os.makedirs(f"{out}/wav", exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(n):
            t = text(r)
            while t in human:
                t = text(r)
            variant = r.choice(VARIANTS)
            voice = r.choice(ACCENTS) + (f"+{variant}" if variant else "")
            speed, pitch = r.randint(120, 220), r.randint(20, 80)
            perturb, snr = r.choice([0.9, 1.0, 1.1]), r.uniform(5, 35)
            speak(voice, speed, pitch, t, f"{tmp}/x.wav")
            x, rate = ctc.read_wav(f"{tmp}/x.wav")
            y = ctc.resample(x, int(round(rate * perturb)) // 50 * 50, 8000).numpy().astype(np.float64)
            y = y * r.uniform(0.3, 1.0) / max(1e-6, np.abs(y).max())
            noise = rng.standard_normal(len(y))
            if r.random() < 0.5:
                noise = np.cumsum(noise)
                noise -= np.convolve(noise, np.ones(101) / 101, mode="same")
            power = np.mean(y ** 2) / (10 ** (snr / 10))
            y = y + noise * np.sqrt(power / max(1e-12, np.mean(noise ** 2)))
            pcm = np.clip(np.round(y * 32767), -32768, 32767).astype("<i2")
            name = f"wav/{i:05d}.wav"
            ctc.write_wav(f"{out}/{name}", pcm, 8000)
            rows.append({"wav": name, "text": t, "voice": voice, "speed": speed, "pitch": pitch,
                         "perturb": perturb, "snr_db": round(snr, 1)})
    with open(f"{out}/manifest.jsonl.tmp", "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    os.replace(f"{out}/manifest.jsonl.tmp", f"{out}/manifest.jsonl")
    print(f"synth_speech: {n} utterances -> {out}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 0)
