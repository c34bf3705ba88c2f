#!/usr/bin/env python3
"""Checks the deployment recipes in docs/deploy/ (run by scripts/test.sh):

- docs/deploy/k8s/deployment.yaml and hpa.yaml: every document validated with kubernetes-validate
  (pinned in scripts/requirements.txt; its bundled Kubernetes 1.37 schemas, strict: unknown fields
  are errors);
- docs/deploy/k8s/kserve-inferenceservice.yaml: KServe's CRD schema is not in any registry this
  project uses, so its structure is checked here (apiVersion serving.kserve.io/v1beta1, kind,
  metadata.name, spec.predictor.containers) and each container is validated strictly as a
  Kubernetes Container (inside a Pod);
- against rnnkit itself: every probe path is an Open Inference Protocol route rnnkit serves, and
  every `--flag` in a container's args and in the Dockerfile's ENTRYPOINT/CMD is one that
  `rnnkit serve --help` lists; the model directories they name exist in the image (weights/).

Exits 1 naming the file, the document and the problem.
"""
import json
import os
import re
import subprocess
import sys

import kubernetes_validate
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOY = os.path.join(ROOT, "docs", "deploy")
K8S_VERSION = "1.37.0"
PROBE_PATHS = {"/v2/health/live", "/v2/health/ready", "/healthz"}
problems = []


def problem(where, msg):
    problems.append(f"{where}: {msg}")


def strict(doc, where):
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        problem(where, f"invalid {doc.get('kind')}: {e.message} (at {'.'.join(map(str, e.path))})")
    except Exception as e:  # an unknown kind or version, or a malformed document
        problem(where, f"cannot validate {doc.get('kind')}: {e}")


def serve_flags():
    out = subprocess.run([os.path.join(ROOT, "target", "release", "rnnkit"), "serve", "--help"],
                         capture_output=True, text=True, check=True).stdout
    return set(re.findall(r"--[a-z][a-z0-9-]*", out))


def check_container(c, where, flags):
    for p in ("livenessProbe", "readinessProbe", "startupProbe"):
        path = c.get(p, {}).get("httpGet", {}).get("path")
        if path is not None and path not in PROBE_PATHS:
            problem(where, f"{p} path {path} is not a health route rnnkit serves ({sorted(PROBE_PATHS)})")
    check_args(c.get("args", []), where, flags)


def check_args(args, where, flags):
    for a in args:
        if a.startswith("--") and a not in flags:
            problem(where, f"{a} is not a flag of rnnkit serve")
    if "--model" in args:
        model = args[args.index("--model") + 1]
        if model.startswith("/app/weights/") and not os.path.exists(
                os.path.join(ROOT, "weights", model.removeprefix("/app/weights/"), "config.json")):
            problem(where, f"--model {model}: no such directory in weights/ (the image copies weights/ to /app/weights)")


def main():
    flags = serve_flags()
    checked = 0
    for name in ("deployment.yaml", "hpa.yaml"):
        path = os.path.join(DEPLOY, "k8s", name)
        for i, doc in enumerate(yaml.safe_load_all(open(path))):
            where = f"docs/deploy/k8s/{name} document {i + 1} ({doc.get('kind')})"
            strict(doc, where)
            for c in doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
                check_container(c, where, flags)
            checked += 1
    path = os.path.join(DEPLOY, "k8s", "kserve-inferenceservice.yaml")
    for i, doc in enumerate(yaml.safe_load_all(open(path))):
        where = f"docs/deploy/k8s/kserve-inferenceservice.yaml document {i + 1}"
        if doc.get("apiVersion") != "serving.kserve.io/v1beta1" or doc.get("kind") != "InferenceService":
            problem(where, f"expected serving.kserve.io/v1beta1 InferenceService, got {doc.get('apiVersion')} {doc.get('kind')}")
        if not doc.get("metadata", {}).get("name"):
            problem(where, "no metadata.name")
        containers = doc.get("spec", {}).get("predictor", {}).get("containers", [])
        if len(containers) != 1:
            problem(where, f"expected one predictor container, got {len(containers)}")
        for c in containers:
            strict({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "check"}, "spec": {"containers": [c]}},
                   where + " container")
            check_container(c, where, flags)
        checked += 1
    dockerfile = open(os.path.join(DEPLOY, "Dockerfile")).read()
    for instr in ("ENTRYPOINT", "CMD"):
        m = re.search(rf"^{instr} (\[.*\])$", dockerfile, re.M)
        if not m:
            problem("docs/deploy/Dockerfile", f"no exec-form {instr}")
            continue
        args = json.loads(m.group(1))
        check_args(args[2:] if instr == "ENTRYPOINT" else args, f"docs/deploy/Dockerfile {instr}", flags)
    torch_pin = re.search(r"torch==([0-9.]+)", dockerfile)
    req = open(os.path.join(ROOT, "scripts", "requirements.txt")).read()
    if not torch_pin or f"torch=={torch_pin.group(1)}" not in req:
        problem("docs/deploy/Dockerfile", "its torch pin differs from scripts/requirements.txt's")
    if problems:
        print("check_manifests: FAILED\n  " + "\n  ".join(problems), file=sys.stderr)
        sys.exit(1)
    print(f"check_manifests: {checked} Kubernetes documents valid (kubernetes-validate "
          f"{kubernetes_validate.__version__ if hasattr(kubernetes_validate, '__version__') else ''}, "
          f"Kubernetes {K8S_VERSION} schemas, strict); probes, flags and model paths match rnnkit serve; "
          f"the Dockerfile's torch pin is requirements.txt's. Not built or run here: the container "
          f"image, a cluster, KServe.")


if __name__ == "__main__":
    main()
