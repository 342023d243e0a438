"Params schema: the real files validate; bad values stop with a message naming key, value and what is allowed."
from pathlib import Path
import copy, subprocess, sys
import pytest, yaml
from reper.config import ParamsError, load_params, parse_params

ROOT = Path(__file__).resolve().parents[1]
GOOD = yaml.safe_load((ROOT / "params.yaml").read_text())

@pytest.mark.parametrize("profile", [None, "profiles/smoke.yaml", "profiles/paper_a100.yaml"])
def test_shipped_params_validate(profile):
    p = load_params(ROOT / "params.yaml", profile and ROOT / profile)
    assert p.model.name_or_path or p.data.image_size % p.model.patch_size == 0

def test_schema_has_no_defaults():
    "A value lives in params.yaml only: every field of every group is required, so the code holds no second copy of a value."
    from pydantic import BaseModel
    from reper.config import Params
    def walk(model, pre=""):
        for name, f in model.model_fields.items():
            if not f.is_required(): yield f"{pre}{name}"
            if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel): yield from walk(f.annotation, f"{pre}{name}.")
    assert not list(walk(Params)), "fields with a default"

@pytest.mark.parametrize("profile", ["profiles/smoke.yaml", "profiles/paper_a100.yaml"])
def test_profiles_hold_only_what_they_change(profile):
    "A profile is an overlay: every key it sets exists in params.yaml and differs from it (a copy would hide later changes)."
    def same(base, over, pre=""):
        for k, v in over.items():
            assert k in base, f"{profile}: {pre}{k} is not a params.yaml key"
            if isinstance(v, dict): yield from same(base[k], v, f"{pre}{k}.")
            elif v == base[k]: yield f"{pre}{k}"
    assert not list(same(GOOD, yaml.safe_load((ROOT / profile).read_text()))), "keys equal to params.yaml"

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
    ("device", "tpu", "'auto', 'cpu' or 'cuda'"),
    ("pretrain.batch_size", 2.5, "valid integer"),
    ("data.on_bad_image", "ignore", "'error' or 'skip'"),
    ("data.image_size", 16, "greater than or equal to 32"),
    ("data.max_objects", 9, "less than or equal to 6"),
    ("data.n_test", -3, "greater than or equal to 1"),
    ("model.vision_heads", 3, "divisible by vision_heads"),
    ("model.patch_size", 7, "multiple of model.patch_size"),
    ("evaluate_base.split", "dev", "'train', 'val', 'test' or 'reflect'"),
    ("grid.lrs", [1e-5, 1e-5], "must not repeat"),
    ("grid.gaps", [0.0, 1.0], "finite and > 0"),
    ("sweep.seeds", [0, 0, 1], "must not repeat"),
    ("sweep.seeds", [-1], "must be >= 0"),
    ("evaluate_base.max_new_tokens", None, "valid integer"),
    ("pretrain.setps", 10, "unknown key"),
    ("evaluate_base.temperature", 0.5, "unknown key"),
    ("data.source", "coco", "'scenes' or 'llava665k'"),
    ("data.llava665k.annotations", None, "valid string"),
    ("data.llava665k.split", "train", "unknown key"),
    ("model.dtype", "fp8", "'float32', 'bfloat16' or 'float16'"),
    ("judge.openai.usd_per_mtok_prompt", -2.5, "greater than or equal to 0"),
    ("references.backend", "gemini", "'dataset' or 'openai'"),
    ("references.models", [], "at least 1 item"),
    ("references.max_tokens", 0, "greater than or equal to 1"),
    ("rule_score.parser_beams", 0, "greater than or equal to 1"),
    ("rule_score.parser_max_new_tokens", 4, "greater than or equal to 8"),
    ("rule_score.embedding_threshold", 0.8, "unknown key"),  # CAPTURE's soft stage has no threshold
    ("dpo.beta", 0, "greater than 0"),
    ("dpo.lr", 2.0, "less than or equal to 1"),
    ("dpo.epochs", 0, "greater than or equal to 1"),
    ("dpo.gradient_accumulation_steps", 0, "greater than or equal to 1"),
    ("dpo.batch_size", "eight", "valid integer"),
    ("dpo.bta", 0.1, "unknown key"),
    # issue 15's probes: infinities, a loss-breaking floor, sizes past their split, booleans read as numbers
    ("rpl.epochs", float("inf"), "finite number"),
    ("rpl.max_grad_norm", float("inf"), "finite number"),
    ("judge.openai.timeout_s", float("inf"), "finite number"),
    ("dialogue.min_gap", float("inf"), "finite number"),
    ("dialogue.min_gap", 20, "less than or equal to 9"),
    ("rpl.log_floor", 1e-50, "must be >= 1e-30"),
    ("candidates.n_images", 5000, "data.n_reflect"),
    ("evaluate.n_images", 1000, "data.n_test"),
    ("grid.n_images", 100000, "data.n_val"),
    ("model.max_length", 40, "must exceed the 64 image tokens"),
    ("reflect.n_turns", True, "not a boolean"),
    ("critic.eval_temperatures", [-0.5, 0.0], "greater than or equal to 0"),
]

@pytest.mark.parametrize("key,value,allowed", BAD, ids=[f"{k}={v!r}" for k, v, _ in BAD])
def test_bad_value_names_key_value_and_rule(key, value, allowed):
    with pytest.raises(ParamsError) as e: parse_params(with_value(key, value), "params.yaml")
    msg = str(e.value)
    *grp, last = key.split("."); grp = ".".join(grp)
    # the file and the key: `params.yaml: pretrain.lr: …`, or a rule on a group / the whole file that names the key
    assert msg.startswith("params.yaml: ") and (key in msg or (f"params.yaml: {grp}: " in msg and last in msg)), msg
    assert allowed in msg, msg
    if not isinstance(value, dict) and "unknown key" not in allowed and "divisible" not in allowed and "multiple" not in allowed:
        bad = value if isinstance(value, list) else [value]  # a list: its bad entry is named
        assert f"got {value!r}" in msg or any(f"got {v!r}" in msg for v in bad), msg    # the bad value

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

PAPER = {"data.source": "llava665k", "data.root": "/data/llava/playground/data", "model.name_or_path": "/ckpt/llava-1.5-13b-hf",
         "judge.backend": "openai", "references.backend": "openai", "rule_score.vocab": "open", "sweep.online_methods": []}

def with_values(pairs: dict) -> dict:
    "GOOD with each dotted key of `pairs` set."
    raw = copy.deepcopy(GOOD)
    for key, value in pairs.items():
        *grp, last = key.split("."); d = raw
        for g in grp: d = d[g]
        d[last] = value
    return raw

def test_shipped_params_keep_the_embedded_default():
    for profile in (None, ROOT / "profiles/smoke.yaml"):
        p = load_params(ROOT / "params.yaml", profile)
        assert (p.data.source, p.model.name_or_path, p.references.backend, p.rule_score.parser_model) == ("scenes", None, "dataset", None)

def test_paper_scale_is_values_only():
    "The paper's setup validates from the shipped params by changing values; model.patch_size no longer has to fit the scenes."
    p = parse_params(with_values({**PAPER, "model.patch_size": 7}))
    assert p.data.llava665k.instruction == "Can you provide a comprehensive caption for this image?"

@pytest.mark.parametrize("key", [k for k in PAPER if k not in ("data.source", "data.root")])
def test_llava665k_names_each_key_still_on_the_scenes(key):
    "LLaVA-665K has no scene graphs or references: every key that would need them is named, with what it must be."
    bad = {**PAPER, key: GOOD[key.split(".")[0]][key.split(".")[1]]}  # that one key back at the embedded default
    with pytest.raises(ParamsError) as e: parse_params(with_values(bad))
    assert str(e.value).startswith("params.yaml: data.source 'llava665k' needs: ") and f"{key} must be" in str(e.value), str(e.value)

def test_parser_model_needs_the_open_vocabulary():
    with pytest.raises(ParamsError, match=r"params.yaml: rule_score: parser_model needs vocab 'open'"):
        parse_params(with_values({"rule_score.parser_model": "/ckpt/flan-t5-base-VG-factual-sg"}))
    assert parse_params(with_values({"rule_score.parser_model": "/ckpt/f", "rule_score.vocab": "open"})).rule_score.parser_beams == 5

def test_paper_a100_profile_has_the_papers_settings():
    "params.yaml overlaid with profiles/paper_a100.yaml is valid and carries the paper's recipe (section 4.1)."
    import yaml as _yaml
    root = Path(__file__).resolve().parents[1]
    P = load_params(root / "params.yaml", root / "profiles/paper_a100.yaml")
    assert P.data.source == "llava665k" and P.candidates.n_images == 10000
    assert P.candidates.temperatures == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4]
    assert (P.rpl.alpha, P.rpl.lr, P.rpl.epochs, P.rpl.bf16) == (10.0, 1e-6, 1.0, True)
    acc = _yaml.safe_load((root / P.rpl.accelerate_config).read_text())
    assert P.rpl.batch_size * P.rpl.gradient_accumulation_steps * acc["num_processes"] == 8  # the paper's batch of 8
    assert P.judge.backend == "openai" and P.references.backend == "openai" and P.model.dtype == "bfloat16"
