"Reflective perception and evaluation on the smoke pipeline: the headline systems, attention, the critic, the sweep variants."
import json
import pytest, yaml
from conftest import newly_stale
from reper.config import load_params

@pytest.fixture(scope="module")
def P(smoke): return load_params(smoke / "params.yaml")

def test_headline_systems_per_turn(smoke, P):
    "Every policy x critic of the comparison has every turn, with rates in [0, 1] and critic scores in [1, 10]."
    ev = json.loads((smoke / "metrics/evaluate.json").read_text())
    assert ev["n_images"] == P.evaluate.n_images
    assert set(ev["systems"]) == {"base_oracle", "base_learned", "rpl_oracle", "rpl_learned", "sft_oracle", "dpo_oracle"}
    for name, turns in ev["systems"].items():
        assert list(turns) == [f"turn{t + 1}" for t in range(P.reflect.n_turns)], name
        for t in turns.values():
            assert all(0 <= t[k] <= 1 for k in ("obj_precision", "obj_recall", "chair_i", "chair_s")), (name, t)
            assert t["critic_score"] is None or 1 <= t["critic_score"] <= 10, (name, t)  # None: the critic never scored

def test_attention_shares(smoke):
    "Attention on image tokens and its share on object patches are proportions, per policy and turn."
    att = json.loads((smoke / "metrics/attention.json").read_text())
    assert set(att) == {"base", "rpl"}
    for pol in att.values():
        for t in pol.values(): assert 0 < t["image_share"] < 1 and 0 <= t["object_share"] <= 1 and 0 < t["object_area"] < 1

def test_critic_quality_recorded(smoke, P):
    "The learned critic was measured on eval_images x eval_temperatures held-out captions."
    c = json.loads((smoke / "metrics/critic.json").read_text())
    assert c["n"] == P.critic.eval_images * len(P.critic.eval_temperatures) and c["steps"] >= 1
    assert (c["unscored"] == c["n"] and c["mae"] is None) or 0 <= c["mae"] <= 9

def test_sweep_variants(smoke, P):
    "One metrics file per variant; variants trained by their own stages point at them instead of training again."
    names = {f"{m}_s{s}" for m in P.sweep.methods for s in P.sweep.seeds} | {"base"}
    names |= {f"rpl_alpha{a}" for a in P.sweep.alphas} | {f"rpl_gap{g}" for g in P.sweep.gaps}
    got = {p.stem for p in (smoke / "metrics/variants").glob("*.json")}
    assert got == names
    assert json.loads((smoke / f"models/variants/rpl_s{P.rpl.seed}/source.json").read_text())["policy"] == f"{P.rpl.out_dir}/policy"
    assert (smoke / f"models/variants/sft_s{P.rpl.seed}/policy/model.safetensors").exists()
    for n in names:
        r = json.loads((smoke / f"metrics/variants/{n}.json").read_text())
        assert len(r["turns"]) == P.reflect.n_turns and r["n_images"] == P.sweep.n_images
    gap = json.loads((smoke / f"metrics/variants/rpl_gap{P.sweep.gaps[0]}.json").read_text())
    assert gap["min_gap"] == P.sweep.gaps[0] and (smoke / f"models/variants/rpl_gap{P.sweep.gaps[0]}/dialogues.jsonl").exists()

def test_analysis_says_where_rpl_loses(smoke):
    "The analysis states, for each baseline and metric, whether RePer beats it."
    a = json.loads((smoke / "metrics/analysis.json").read_text())
    assert a["verdicts"] and all(any(w in v for w in (" beats ", " ties with ", " does NOT beat ")) for v in a["verdicts"])

def test_reflect_params_rerun_evaluation_not_training(smoke):
    "reflect.* reaches the evaluations, never the trainings it does not feed."
    stale = newly_stale(smoke, "reflect.n_turns", 3)
    assert "evaluate" in stale and "sweep_base" in stale and "train_rpl" not in stale and "pretrain" not in stale
