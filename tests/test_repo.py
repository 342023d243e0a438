"Repository-wide checks: notebooks and reper/ in step, README commands true, stage notebooks well formed."
import json, re, shutil, subprocess
from pathlib import Path
import nbformat, pytest, yaml
from conftest import ROOT, copy_repo

def test_export_and_clean_change_nothing(tmp_path):
    "reper/ is exactly what the notebooks export, and the notebooks are clean."
    d = copy_repo(tmp_path)
    for cmd in ("nbdev-export", "nbdev-clean"): subprocess.run([cmd], cwd=d, check=True, capture_output=True)
    changed = subprocess.run(["git", "status", "--porcelain"], cwd=d, capture_output=True, text=True, check=True).stdout
    assert changed == "", f"nbdev-export / nbdev-clean would change:\n{changed}"

WORDNET = Path("/usr/share/wordnet/index.sense")  # Debian's wordnet-base and wordnet-sense-index

def test_library_notebooks_pass():
    "nbdev-test runs every library notebook (stage notebooks are skipped by their skip_exec metadata)."
    flags = ["--flags", "wordnet"] if WORDNET.exists() else []
    r = subprocess.run(["nbdev-test", "--n-workers", "2", *flags], cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]

def test_wordnet_missing_names_the_package(tmp_path):
    "Without WordNet data the rule scorer's loader stops with the package to install (the `#| wordnet` cells need it)."
    from reper.rule_score import build_wordnet
    with pytest.raises(FileNotFoundError, match="apt-get install wordnet-base"): build_wordnet(tmp_path / "nltk", debian=tmp_path / "none")

def readme_commands() -> list[str]:
    "The shell commands in README.md's code blocks marked `bash`."
    return re.findall(r"```bash\n(.*?)\n```", (ROOT / "README.md").read_text(), flags=re.S)

def test_readme_has_two_commands_and_ci_runs_the_test_one():
    cmds = readme_commands()
    assert len(cmds) == 2, cmds
    assert "dvc repro" in cmds[0] and "pytest" in cmds[1]
    ci = (ROOT / ".ci/run").read_text()
    assert cmds[1].strip() in ci

def stage_notebooks() -> list[str]:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return sorted({re.search(r"scripts/stage (\S+\.ipynb)", s.get("do", s)["cmd"]).group(1) for s in stages.values()})

@pytest.mark.parametrize("nb", stage_notebooks())
def test_stage_notebook_shape(nb):
    "Parameters cell first, plain values only; skipped by nbdev-test; never exports; listed in its own deps."
    book = nbformat.read(ROOT / nb, as_version=4)
    code = [c for c in book.cells if c.cell_type == "code"]
    assert code[0].metadata.get("tags") == ["parameters"], "first code cell must be tagged `parameters`"
    assert all(re.match(r"^\w+ = .+$", l) for l in code[0].source.splitlines() if l.strip()), code[0].source
    assert book.metadata.get("nbdev", {}).get("skip_exec") == "true"
    assert not any("nbdev_export" in c.source or "#| export" in c.source for c in code)
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert any(nb in s.get("do", s)["deps"] for s in stages.values())

def module_imports(src: str) -> set[str]:
    "reper modules imported by `src` (`from reper.x import`, `from .x import`)."
    return set(re.findall(r"from (?:reper)?\.(\w+) import", src))

def test_stage_deps_cover_imported_modules():
    "Every reper module a stage notebook uses, directly or through other modules, is among its deps."
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, s in stages.items():
        s = s.get("do", s)  # foreach stages
        nb = re.search(r"scripts/stage (\S+\.ipynb)", s["cmd"]).group(1)
        used = module_imports("\n".join(c.source for c in nbformat.read(ROOT / nb, as_version=4).cells if c.cell_type == "code"))
        todo = list(used)
        while todo:
            for m in module_imports((ROOT / "reper" / f"{todo.pop()}.py").read_text()) - used: used.add(m); todo.append(m)
        missing = {f"reper/{m}.py" for m in used} - set(s["deps"])
        assert not missing, f"stage {name} imports {missing} but does not list them in deps"

def test_readme_results_are_generated_from_metrics():
    "The README's results section is exactly what `reper-readme` renders from the committed metrics: no typed numbers."
    from reper.report import update_readme
    assert update_readme(ROOT / "README.md", ROOT, check=True), "README results differ from metrics/: run `reper-readme`"

def test_stage_notebooks_spell_only_their_declared_artefacts():
    "A path a stage notebook spells (metrics/, results/, reflection/, models/, dvclive/) is among its stage's deps, outs, metrics or plots."
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    def resolve(s):
        def val(m):
            v = params
            for k in m.group(1).split("."): v = v[k] if isinstance(v, dict) and k in v else None
            return str(v) if v is not None else m.group(0)  # ${item.*} of a matrix stays as written
        return re.sub(r"\$\{([\w.]+)\}", val, s)
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, s in stages.items():
        s = s.get("do", s)
        nb = re.search(r"scripts/stage (\S+\.ipynb)", s["cmd"]).group(1)
        declared = {resolve(next(iter(e)) if isinstance(e, dict) else e) for k in ("deps", "outs", "metrics", "plots") for e in s.get(k, [])}
        src = "\n".join(c.source for c in nbformat.read(ROOT / nb, as_version=4).cells if c.cell_type == "code")
        spelled = set(re.findall(r'"((?:metrics|results|reflection|models|dvclive)/[\w./-]+)"', src))
        loose = {p for p in spelled if not any(d == p or d.startswith(p + "/") or p.startswith(d + "/") for d in declared)}
        assert not loose, f"stage {name}: {nb} spells {loose}, which dvc.yaml does not declare for it"
