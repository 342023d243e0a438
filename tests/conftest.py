"Shared fixtures: a throw-away copy of the repository (tracked and untracked-but-not-ignored files)."
import os, re, shutil, subprocess, time
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]

def repo_files() -> list[str]:
    "Files git tracks, plus untracked files it does not ignore (so uncommitted work is tested too)."
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return [f for f in out.decode().split("\0") if f and (ROOT / f).is_file()]

def params_with(changes: dict | None = None):
    "The shipped params.yaml with `changes` (nested groups, as in a profile) overlaid, validated."
    from reper.config import overlay, parse_params, read_yaml
    return parse_params(overlay(read_yaml(ROOT / "params.yaml"), changes or {}), "params.yaml")

def copy_repo(dest: Path) -> Path:
    "Copy the repository's files into `dest` and make it a git repository (DVC wants one)."
    for f in repo_files():
        (dest / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, dest / f)
    for args in (("init", "-q"), ("add", "-A"), ("commit", "-qm", "copy")): git(dest, *args)
    return dest

def git(cwd: Path, *args):
    "Run git in `cwd` with a throw-away identity."
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    subprocess.run(["git", *args], cwd=cwd, check=True, env=env, capture_output=True)

@pytest.fixture(scope="session")
def repo_copy(tmp_path_factory) -> Path:
    "A fresh copy of the repository with its data pulled from the in-repo DVC remote."
    dest = copy_repo(tmp_path_factory.mktemp("repo"))
    subprocess.run(["dvc", "pull", "-q", "data.dvc"], cwd=dest, check=True, capture_output=True, text=True)
    return dest

def run(cmd, cwd, check=True, timeout=1200) -> subprocess.CompletedProcess:
    "Run `cmd` in `cwd`; on failure (when `check`) raise with the tail of its output."
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode: raise AssertionError(f"{cmd} failed ({r.returncode}):\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}")
    return r

@pytest.fixture(scope="session")
def smoke(repo_copy) -> Path:
    "The smoke profile (params.yaml overlaid with profiles/smoke.yaml) reproduced once in the copy, frozen stages included; its folder."
    run(["reper-profile", "profiles/smoke.yaml"], repo_copy)
    dvc_yaml = repo_copy / "dvc.yaml"  # pretrain and rpl_grid are pinned at the default's sizes: the smoke pipeline trains its own
    dvc_yaml.write_text(dvc_yaml.read_text().replace("frozen: true", "frozen: false"))  # (`dvc unfreeze` refuses stages with ${})
    t = time.time()
    run(["dvc", "repro"], repo_copy)
    print(f"smoke dvc repro: {time.time() - t:.1f} s")
    git(repo_copy, "add", "-A"); git(repo_copy, "commit", "-qm", "smoke profile reproduced")  # `dvc exp run` wants a clean tree
    return repo_copy

def stale_stages(root: Path) -> set[str]:
    "Names of the stages `dvc status` reports as changed."
    out = run(["dvc", "status"], root).stdout
    return {m for m in re.findall(r"^([\w@.-]+):\s*$", out, flags=re.M)}

def newly_stale(root: Path, key: str, value) -> set[str]:
    "Stages that setting dotted `key` to `value` in params.yaml makes stale (params.yaml restored afterwards)."
    import yaml
    path = root / "params.yaml"; before = path.read_text()
    already = stale_stages(root)
    raw = yaml.safe_load(before); *grp, last = key.split("."); d = raw
    for g in grp: d = d[g]
    d[last] = value
    path.write_text(yaml.safe_dump(raw))
    try: return stale_stages(root) - already
    finally: path.write_text(before)

SLOW_FIXTURES = {"smoke", "repo_copy", "paper", "site", "pages"}  # each builds a pipeline, a paper-scale run or the docs site
SLOW_TESTS = {"test_library_notebooks_pass"}                      # nbdev-test of every library notebook

def pytest_collection_modifyitems(config, items):
    "The two tiers: `pytest -m 'not slow'` (fast: units, params, the judge's HTTP client) and `pytest` (everything)."
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())) or item.originalname in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
