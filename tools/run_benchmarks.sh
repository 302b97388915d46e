#!/usr/bin/env bash
# Runs AdapterHost's benchmarks next to the same measurements in PyTorch / numpy, on the same
# machine, in the same run, and prints one table of ratios.
#
#   tools/run_benchmarks.sh                 # everything, 3 rounds
#   SUITES="gemm convert" ROUNDS=1 tools/run_benchmarks.sh
#
# Environment:
#   PYTHON     peer interpreter (default /work/venv/peers/bin/python)
#   ROUNDS     rounds of every suite, ours and the peers' alternating (default 3); the table
#              keeps each figure's best round, as adapterhost-bench keeps its best run
#   SUITES     subset of: blas-info gemm convert safetensors-read, plus the optional (not in the
#              default list: slow, ~5.5 GB of generated files) LoRA operation suites
#                lora-merge    adapterhost merge of a rank-32 LoRA into an SD1.5-shaped F16
#                              checkpoint vs kohya's merge loop in torch (≈15 s a side a round)
#                lora-extract  adapterhost extract (rank 32, two SD1.5-shaped UNets) vs kohya's
#                              torch.linalg.svd loop (the peer takes ≈20 min a round)
#              e.g. SUITES="lora-merge" ROUNDS=3 tools/run_benchmarks.sh
#   BENCH_DIR  where the generated ~1.1 GB safetensors files and the JSON results go
#              (default /tmp/adapterhost-bench; files are reused when present)
#   LORA_DIR   the LoRA suites' files (default /tmp/adapterhost-bench-lora; made by
#              adapterhost-bench on first use, reused when present)
#   SCRATCH    SwiftPM scratch path for the release build (default .build-bench-rel)
#   NO_BUILD   when set, run the binaries already built in SCRATCH as they are
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-/work/venv/peers/bin/python}
ROUNDS=${ROUNDS:-3}
SUITES=${SUITES:-"blas-info gemm convert safetensors-read"}
BENCH_DIR=${BENCH_DIR:-/tmp/adapterhost-bench}
SCRATCH=${SCRATCH:-.build-bench-rel}
LORA_DIR=${LORA_DIR:-/tmp/adapterhost-bench-lora}
RESULTS="$BENCH_DIR/results-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$RESULTS"

if [[ -n "${NO_BUILD:-}" ]]; then
    echo "== NO_BUILD: using the binaries already in $SCRATCH" >&2
else
    echo "== building adapterhost-bench (release, $SCRATCH)" >&2
    swift build -c release --scratch-path "$SCRATCH" --product adapterhost-bench >&2
    if [[ " $SUITES " == *" lora-"* ]]; then
        # The LoRA suites time the `adapterhost` binary built next to adapterhost-bench.
        swift build -c release --scratch-path "$SCRATCH" --product adapterhost >&2
    fi
fi
BENCH="$(swift build -c release --scratch-path "$SCRATCH" --show-bin-path)/adapterhost-bench"

F16_FILE="$BENCH_DIR/sd_f16.safetensors"
MIXED_FILE="$BENCH_DIR/sd_mixed.safetensors"
if [[ " $SUITES " == *" safetensors-read "* ]]; then
    [[ -f "$F16_FILE" ]] || "$PYTHON" tools/bench_peers.py make-file --out "$F16_FILE" --kind f16
    [[ -f "$MIXED_FILE" ]] || "$PYTHON" tools/bench_peers.py make-file --out "$MIXED_FILE" --kind mixed
fi

{
    echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
    "$BENCH" blas-info
} | tee "$RESULTS/machine.txt" >&2

for round in $(seq 1 "$ROUNDS"); do
    for suite in $SUITES; do
        [[ $suite == blas-info ]] && continue
        echo "== round $round: $suite (load $(cut -d' ' -f1 /proc/loadavg))" >&2
        case $suite in
        safetensors-read)
            for tag in f16 mixed; do
                file="$BENCH_DIR/sd_$tag.safetensors"
                "$BENCH" safetensors-read --json --file "$file" --tag "$tag" > "$RESULTS/ours-$suite-$tag-$round.json"
                "$PYTHON" tools/bench_peers.py safetensors-read --file "$file" --tag "$tag" \
                    > "$RESULTS/peers-$suite-$tag-$round.json"
            done ;;
        lora-merge)
            # One timed run a side per round (each side warms the page cache with an untimed run
            # first); rounds alternate ours and the peer's.
            # The timed `adapterhost` child shares stdout: keep only the JSON report.
            "$BENCH" lora-merge --json --runs 1 --dir "$LORA_DIR" | sed -n '/^{/,$p' > "$RESULTS/ours-$suite-$round.json"
            "$PYTHON" tools/bench_lora_peers.py merge --base "$LORA_DIR/sd15_f16.safetensors" \
                --lora "$LORA_DIR/sd15_lora_r32.safetensors" --out "$LORA_DIR/merged_peer.safetensors" --runs 1 \
                > "$RESULTS/peers-$suite-$round.json" ;;
        lora-extract)
            "$BENCH" lora-extract --json --runs 1 --dir "$LORA_DIR" | sed -n '/^{/,$p' > "$RESULTS/ours-$suite-$round.json"
            "$PYTHON" tools/bench_lora_peers.py extract --base "$LORA_DIR/unet_base_f16.safetensors" \
                --tuned "$LORA_DIR/unet_tuned_f16.safetensors" --rank 32 --out "$LORA_DIR/extract_peer_r32.safetensors" \
                --ours "$LORA_DIR/extract_ours_r32.safetensors" --runs 1 > "$RESULTS/peers-$suite-$round.json" ;;
        *)
            "$BENCH" "$suite" --json > "$RESULTS/ours-$suite-$round.json"
            "$PYTHON" tools/bench_peers.py "$suite" > "$RESULTS/peers-$suite-$round.json" ;;
        esac
    done
done

# The table: best round of every figure, ours against each peer measuring the same thing.
python3 - "$RESULTS" <<'EOF'
import glob, json, sys

results = sys.argv[1]
best = {}  # (side, name, peer) -> measurement with the best value over rounds
for path in sorted(glob.glob(f"{results}/*.json")):
    report = json.load(open(path))
    for m in report["results"]:
        key = (report["side"], m["name"], m.get("peer", "AdapterHost"))
        better = max if m["better"] == "higher" else min
        if key not in best or better(m["value"], best[key]["value"]) == m["value"]:
            m["rounds"] = best.get(key, {}).get("rounds", 0) + 1
            best[key] = m
        else:
            best[key]["rounds"] += 1

targets = {"gemm": ("≥1.0×", 1.0), "widen": ("≥2.0×", 2.0), "read_all": ("≥1.0× (time ≤ peer)", 1.0),
           "lora_merge_sd15_r32": ("≥2.0× (time ≤ 0.5× peer)", 2.0), "lora_extract_sd15_r32": ("≥5.0×", 5.0)}
def target(name):
    if name.endswith("_peak_rss"):
        return ("", None)   # memory targets are against the checkpoint size (the JSON note), not the peer
    for prefix, t in targets.items():
        if name.startswith(prefix) and not name.endswith("_into"):
            return t
    return ("", None)

rows = []
ours = {name: m for (side, name, _), m in best.items() if side == "adapterhost"}
for (side, name, peer), p in sorted(best.items(), key=lambda kv: kv[0][1]):
    if side == "adapterhost" or name not in ours:
        continue
    o = ours[name]
    speedup = o["value"] / p["value"] if o["better"] == "higher" else p["value"] / o["value"]
    label, goal = target(name)
    verdict = "" if goal is None else ("met" if speedup >= goal else "MISSED")
    rows.append((name, f"{o['value']:.3f} {o['unit']}", peer, f"{p['value']:.3f} {p['unit']}",
                 f"{speedup:.2f}×", label, verdict, f"{o['spread']:.2f}/{p['spread']:.2f}"))
for (side, name, peer), p in sorted(best.items(), key=lambda kv: kv[0][1]):
    if side == "peers" and name.endswith("_error_ratio"):   # lora-extract: ours ÷ kohya's error
        rows.append((name, f"{p['value']:.4f} {p['unit']}", "(ours ÷ kohya)", "", "", "≤1.05×",
                     "met" if p["value"] <= 1.05 else "MISSED", ""))
for name, o in sorted(ours.items()):
    if name.endswith("_peak_rss"):
        rows.append((name, f"{o['value']:.0f} MiB", "(absolute)", "", "", "", o.get("note", ""), ""))
    if name.startswith("open_header"):
        rows.append((name, f"{o['value']:.3f} ms", "(absolute)", "", "", "<10 ms",
                     "met" if o["value"] < 10 else "MISSED", f"{o['spread']:.2f}"))

header = ("figure", "AdapterHost", "peer", "peer value", "speedup", "target", "", "spread o/p")
widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
for r in [header] + rows:
    print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))
print("\nspeedup = AdapterHost ÷ peer for rates, peer ÷ AdapterHost for times (>1: AdapterHost is faster).")
print("spread = slowest ÷ fastest timed run within the best round (noise).")
print(f"raw JSON: {results}")
EOF
