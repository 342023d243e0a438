#!/usr/bin/env bash
# Time the README's first command (set-up and the whole default pipeline) in a fresh clone of this repository,
# then write metrics/run.json there (minutes, machine, commit, CPU setting), which `reper-readme` reports.
#   scripts/fresh_clone_run.sh [DEST]      REPER_CPU=native scripts/fresh_clone_run.sh [DEST]  (the unpinned run)
#   UNFREEZE="compute_match" scripts/fresh_clone_run.sh [DEST]: run those frozen stages too, in the same `dvc repro`
#   (dvc.yaml restored afterwards); their minutes are recorded apart and left out of the default pipeline's.
set -euo pipefail
src=$(git rev-parse --show-toplevel)
dest=${1:-$(mktemp -d)/reper}
git clone -q "$src" "$dest"
cd "$dest"
cmd=$(python3 -c "import re; print(re.findall(r'\`\`\`bash\n(.*?)\n\`\`\`', open('README.md').read(), flags=re.S)[0])")
cp dvc.yaml /tmp/dvc.yaml.$$
for stage in ${UNFREEZE:-}; do
  python3 - "$stage" <<'PY'
import re, sys
s = open("dvc.yaml").read(); st = sys.argv[1]
new, n = re.subn(rf"(\n  {st}:\n(?:    #.*\n)*)    frozen: true\n", r"\1    frozen: false\n", s)
if n != 1: sys.exit(f"dvc.yaml: no frozen stage {st!r}")
open("dvc.yaml", "w").write(new)
PY
done
echo "in $dest: $cmd"
start=$(date +%s)
bash -c "$cmd"
end=$(date +%s)
cp /tmp/dvc.yaml.$$ dvc.yaml && rm /tmp/dvc.yaml.$$
python3 - "$start" "$end" "${UNFREEZE:-}" <<'EOF2'
import json, os, platform, subprocess, sys
start, end = map(int, sys.argv[1:3])
stage_nb = lambda st: next(l.split()[3] for l in open("dvc.yaml").read().split(f"\n  {st}:\n", 1)[1].splitlines() if "scripts/stage" in l)
unfrozen = {st: round(json.load(open(stage_nb(st)))["metadata"]["papermill"]["duration"] / 60, 2) for st in sys.argv[3].split()}
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
run = dict(total_min=round((end - start) / 60 - sum(unfrozen.values()), 2), machine=f"{os.cpu_count()} cores ({cpu})", cpu_setting=os.environ.get("REPER_CPU", "pinned"),
           commit=subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(), frozen_stages_run=unfrozen)
json.dump(run, open("metrics/run.json", "w"), indent=1)
print(run)
EOF2
