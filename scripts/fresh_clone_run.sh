#!/usr/bin/env bash
# Time the README's first command (set-up and the whole default pipeline) in a fresh clone of this repository,
# then write metrics/run.json there (minutes, machine, commit, CPU setting), which `reper-readme` reports.
#   scripts/fresh_clone_run.sh [DEST]      REPER_CPU=native scripts/fresh_clone_run.sh [DEST]  (the unpinned run)
set -euo pipefail
src=$(git rev-parse --show-toplevel)
dest=${1:-$(mktemp -d)/reper}
git clone -q "$src" "$dest"
cd "$dest"
cmd=$(python3 -c "import re; print(re.findall(r'\`\`\`bash\n(.*?)\n\`\`\`', open('README.md').read(), flags=re.S)[0])")
echo "in $dest: $cmd"
start=$(date +%s)
bash -c "$cmd"
end=$(date +%s)
python3 - "$start" "$end" <<'EOF'
import json, os, platform, subprocess, sys
start, end = map(int, sys.argv[1:])
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
run = dict(total_min=round((end - start) / 60, 2), machine=f"{os.cpu_count()} cores ({cpu})", cpu_setting=os.environ.get("REPER_CPU", "pinned"),
           commit=subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip())
json.dump(run, open("metrics/run.json", "w"), indent=1)
print(run)
EOF
