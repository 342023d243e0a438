"Params schema: the real files validate; bad values stop with a message naming key, value and what is allowed."
from pathlib import Path
import copy, subprocess, sys
import pytest, yaml
from reper.config import ParamsError, load_params, parse_params

ROOT = Path(__file__).resolve().parents[1]
GOOD = yaml.safe_load((ROOT / "params.yaml").read_text())

@pytest.mark.parametrize("path", ["params.yaml", "profiles/smoke.yaml"])
def test_shipped_params_validate(path):
    p = load_params(ROOT / path)
    assert p.data.image_size % p.model.patch_size == 0

def with_value(key, value):
    "GOOD with the dotted `key` set to `value`."
    raw = copy.deepcopy(GOOD); *grp, last = key.split(".")
    d = raw
    for g in grp: d = d.setdefault(g, {})
    d[last] = value
    return raw

BAD = [  # (dotted key, bad value, words the message must contain)
    ("pretrain.steps", 0, "greater than or equal to 1"),
    ("pretrain.steps", "many", "valid integer"),
    ("pretrain.lr", -0.1, "greater than 0"),
    ("pretrain.lr", 3.0, "less than or equal to 1"),
    ("pretrain.device", "tpu", "'auto', 'cpu' or 'cuda'"),
    ("pretrain.batch_size", 2.5, "valid integer"),
    ("data.on_bad_image", "ignore", "'error' or 'skip'"),
    ("data.image_size", 16, "greater than or equal to 32"),
    ("data.max_objects", 9, "less than or equal to 6"),
    ("data.n_test", -3, "greater than or equal to 1"),
    ("model.vision_heads", 3, "divisible by vision_heads"),
    ("model.patch_size", 7, "multiple of model.patch_size"),
    ("evaluate_base.split", "dev", "'train', 'val' or 'test'"),
    ("evaluate_base.max_new_tokens", None, "valid integer"),
    ("pretrain.setps", 10, "unknown key"),
    ("evaluate_base.temperature", 0.5, "unknown key"),
    ("dpo.beta", 0, "greater than 0"),
    ("dpo.lr", 2.0, "less than or equal to 1"),
    ("dpo.epochs", 0, "greater than or equal to 1"),
    ("dpo.gradient_accumulation_steps", 0, "greater than or equal to 1"),
    ("dpo.batch_size", "eight", "valid integer"),
    ("dpo.device", "tpu", "'auto', 'cpu' or 'cuda'"),
    ("dpo.bta", 0.1, "unknown key"),
]

@pytest.mark.parametrize("key,value,allowed", BAD, ids=[f"{k}={v!r}" for k, v, _ in BAD])
def test_bad_value_names_key_value_and_rule(key, value, allowed):
    with pytest.raises(ParamsError) as e: parse_params(with_value(key, value), "params.yaml")
    msg = str(e.value)
    grp, last = key.split(".")
    # the file and the key: `params.yaml: pretrain.lr: …`, or a rule on a group / the whole file that names the key
    assert msg.startswith("params.yaml: ") and (key in msg or (f"params.yaml: {grp}: " in msg and last in msg)), msg
    assert allowed in msg, msg
    if not isinstance(value, dict) and "unknown key" not in allowed and "divisible" not in allowed and "multiple" not in allowed:
        assert f"got {value!r}" in msg, msg    # the bad value

def test_unknown_group():
    with pytest.raises(ParamsError, match=r"^params.yaml: trainer: unknown key$"): parse_params({**GOOD, "trainer": {"alpha": 10}})

def test_min_max_objects_cross_check():
    raw = with_value("data.min_objects", 5); raw["data"]["max_objects"] = 2
    with pytest.raises(ParamsError, match=r"data: .*min_objects \(5\) must be <= max_objects \(2\)"): parse_params(raw)

def test_not_yaml_and_missing_file(tmp_path):
    (tmp_path / "p.yaml").write_text("data: [unclosed")
    with pytest.raises(ParamsError, match="p.yaml: not valid YAML"): load_params(tmp_path / "p.yaml")
    with pytest.raises(ParamsError, match="no such params file"): load_params(tmp_path / "none.yaml")
    (tmp_path / "l.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ParamsError, match="expected a mapping"): load_params(tmp_path / "l.yaml")

def test_stage_stops_before_compute(tmp_path):
    "A stage given bad params fails in its first cell, naming the key, before touching data or models."
    bad = with_value("pretrain.lr", -1)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(bad))
    out = tmp_path / "out.ipynb"
    r = subprocess.run([sys.executable, "-m", "papermill", str(ROOT / "nbs/10_pretrain.ipynb"), str(out), "-p", "params_path",
                        str(tmp_path / "params.yaml"), "--cwd", str(tmp_path), "-k", "python3", "--no-progress-bar"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert "pretrain.lr: got -1" in r.stdout + r.stderr
    assert not (tmp_path / "models").exists() and not (tmp_path / "dvclive").exists()

def test_params_file_must_give_every_key(tmp_path):
    raw = copy.deepcopy(GOOD); del raw["judge"]["openai"]["timeout_s"]; del raw["dialogue"]; del raw["dpo"]["beta"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError) as e: load_params(tmp_path / "params.yaml")
    assert "judge.openai.timeout_s: missing" in str(e.value) and "dialogue: missing" in str(e.value)
    assert "dpo.beta: missing" in str(e.value)
