#!/usr/bin/env bash
# Fuzzes rnnkit's checkpoint readers (fuzz/: the pickle, pth and safetensors targets) for a
# bounded time, under the production reading budget's code path and libFuzzer's memory limit.
#
#   scripts/fuzz.sh                      # build, then 60 s per target
#   FUZZ_SECONDS=600 scripts/fuzz.sh     # longer
#   FUZZ_TARGETS="pth" scripts/fuzz.sh   # one target
#
# Builds the targets with `cargo fuzz build` (installing cargo-fuzz if it is missing; nightly
# flags through RUSTC_BOOTSTRAP=1, as only the stable toolchain is installed), seeds
# fuzz/corpus/<target> from tests/golden/pth and tests/fuzz_regressions, and runs each target
# with -max_total_time=$FUZZ_SECONDS -rss_limit_mb=$FUZZ_RSS_MB (2048). An input that crashes,
# leaks, times out or runs out of memory is copied into tests/fuzz_regressions/ (which
# tests/pth_hostile.rs replays) and the script exits 1 after the remaining targets have run.
# Exit 2: the targets could not be built.
set -uo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
seconds="${FUZZ_SECONDS:-60}"
rss_mb="${FUZZ_RSS_MB:-2048}"
targets="${FUZZ_TARGETS:-pickle pth safetensors}"
# Slower than this per input is a finding too (libFuzzer's default is 1200 s).
timeout_s="${FUZZ_TIMEOUT:-30}"
regressions="$root/tests/fuzz_regressions"

cd "$root/fuzz" || exit 2
# The fuzz crate is its own workspace with its own target directory (fuzz/target, ignored by
# git); a CARGO_TARGET_DIR meant for the main crate would mix sanitizer builds into it.
unset CARGO_TARGET_DIR
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked || exit 2
fi

start=$(date +%s)
echo "fuzz.sh: building the fuzz targets"
# All of them at once (they share the library); `cargo fuzz build` takes at most one name.
if ! cargo fuzz build; then
    echo "fuzz.sh: cargo fuzz build failed" >&2
    exit 2
fi
built=$(date +%s)
echo "fuzz.sh: built in $((built - start)) s"

host="$(rustc -vV | sed -n 's/^host: //p')"
bin_dir="$root/fuzz/target/$host/release"

# Seeds: the golden checkpoints (and each one's data.pkl for the pickle target), the
# safetensors value files, and every input that once crashed.
seed() {
    local t="$1" dir="$root/fuzz/corpus/$1"
    mkdir -p "$dir"
    local f
    case "$t" in
        pth)
            for f in "$root"/tests/golden/pth/*.pth; do [ -f "$f" ] && cp -f "$f" "$dir/"; done ;;
        safetensors)
            for f in "$root"/tests/golden/pth/*.safetensors; do [ -f "$f" ] && cp -f "$f" "$dir/"; done ;;
        pickle)
            if command -v python3 >/dev/null 2>&1; then
                python3 - "$root/tests/golden/pth" "$dir" <<'EOF'
import pathlib, sys, zipfile
src, dst = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
for p in sorted(src.glob("*.pth")):
    try:
        with zipfile.ZipFile(p) as z:
            for n in z.namelist():
                if n.endswith("/data.pkl"):
                    (dst / (p.stem + ".pkl")).write_bytes(z.read(n))
    except zipfile.BadZipFile:
        pass
EOF
            fi ;;
    esac
    if [ -d "$regressions" ]; then
        for f in "$regressions"/*; do [ -f "$f" ] && cp -f "$f" "$dir/"; done
    fi
    return 0
}

failed=0
for t in $targets; do
    seed "$t"
    artifacts="$root/fuzz/artifacts/$t"
    mkdir -p "$artifacts"
    echo "fuzz.sh: $t for $seconds s ($(find "$root/fuzz/corpus/$t" -type f | wc -l) corpus inputs)"
    "$bin_dir/$t" "$root/fuzz/corpus/$t" \
        -max_total_time="$seconds" -rss_limit_mb="$rss_mb" -timeout="$timeout_s" \
        -artifact_prefix="$artifacts/" -print_final_stats=1 2>"$artifacts/last.log"
    rc=$?
    tail -n 12 "$artifacts/last.log"
    if [ "$rc" -ne 0 ]; then
        failed=1
        mkdir -p "$regressions"
        found=0
        for f in "$artifacts"/crash-* "$artifacts"/leak-* "$artifacts"/timeout-* "$artifacts"/oom-* "$artifacts"/slow-unit-*; do
            [ -f "$f" ] || continue
            cp -f "$f" "$regressions/$t-$(basename "$f")"
            echo "fuzz.sh: $t: kept $regressions/$t-$(basename "$f")" >&2
            rm -f "$f"
            found=1
        done
        [ "$found" = 1 ] || echo "fuzz.sh: $t exited $rc without an artifact; see $artifacts/last.log" >&2
    fi
done

echo "fuzz.sh: done in $(( $(date +%s) - start )) s (build $((built - start)) s)"
if [ "$failed" -ne 0 ]; then
    echo "fuzz.sh: FAILED: new inputs in tests/fuzz_regressions/ (replayed by tests/pth_hostile.rs)" >&2
    exit 1
fi
