"Reflective perception and evaluation on the smoke pipeline: every system and loop, the controls, the probes, attention, the critic, the seeds, the grid and the analysis."
import json
import numpy as np, pandas as pd, pytest
from conftest import newly_stale, run
from reper.config import load_params
from reper.evaluation import LOOPS, system_name

@pytest.fixture(scope="module")
def P(smoke): return load_params(smoke / "params.yaml")

@pytest.fixture(scope="module")
def rows(smoke):
    from reper.sweep import variant_name, sweep_variants
    P = load_params(smoke / "params.yaml")
    return pd.concat([pd.read_parquet(smoke / "results/evaluate.parquet")] +
                     [pd.read_parquet(smoke / f"results/variants/{variant_name(m, s)}.parquet") for m, ss in sweep_variants(P).items() for s in ss])

def test_every_system_has_every_image_and_turn(smoke, P, rows):
    "Each policy in each loop (main loops from the seed stages) has one row per test image and turn, CAPTURE in [0, 1]."
    controls = {system_name(p, l) for p in ("base", "rpl", "sft", "dpo") for l in ("score", "neutral")}
    want = {"base", "base/counted", "rpl/counted", "base/learned", "rpl/learned"} | controls | set(P.sweep.methods) | set(P.sweep.online_methods)
    assert set(rows.system) == want
    for (system, seed), d in rows.groupby(["system", "seed"]):
        n = min(P.evaluate.control_images, P.evaluate.n_images) if system in controls else P.evaluate.n_images
        assert len(d) == n * P.reflect.n_turns and d.id.nunique() == n, (system, seed)
        assert sorted(d.turn.unique()) == list(range(1, P.reflect.n_turns + 1))
    assert rows.capture.between(0, 1).all() and rows.words.ge(0).all()
    assert set(rows[rows.system == "base/neutral"].feedback.dropna()) == {"Describe the image again."}
    assert rows[rows.system == "rpl/score"].feedback.dropna().str.fullmatch(r"A score of \d+ is given to this caption\. Could you generate a better one\?").all()
    for m in P.sweep.methods: assert rows[rows.system == m].seed.nunique() == len(P.sweep.seeds)
    for m in P.sweep.online_methods: assert rows[rows.system == m].seed.nunique() == len(P.sweep.online_seeds)

def test_turn_one_is_the_single_pass(rows):
    "Greedy decoding: a policy's first answer is the same in every loop (the loops differ only after it)."
    first = rows[(rows.turn == 1) & (rows.seed == 0)]
    for pol in ("base", "rpl"):
        texts = first[first.system.isin([pol] + [f"{pol}/{l}" for l in LOOPS if l != "oracle"])].groupby("id").text.nunique()
        assert (texts == 1).all(), pol

def test_stop_score_freezes_perfect_answers(rows, P):
    "An answer the critic scores `reflect.stop_score` is not asked again: later turns repeat it, flagged stopped."
    d = rows[(rows.system == "base") & (rows.turn < P.reflect.n_turns)]
    done = d[d.score >= P.reflect.stop_score]
    later = rows[(rows.system == "base") & (rows.turn == P.reflect.n_turns)].set_index("id")
    assert all(later.loc[i, "stopped"] and later.loc[i, "text"] == t for i, t in zip(done.id, done.text))

def test_probes_and_attention(smoke):
    "Turn log-probabilities and feedback gains for the four policies; attention shares are proportions, the normalised one positive."
    probes = json.loads((smoke / "metrics/probes.json").read_text())
    assert set(probes) == {"base", "rpl", "sft", "dpo"}
    assert all(v == 0 for v in probes["base"]["turn_logprob_change"].values())
    for p in probes.values(): assert p["feedback_gain_lo"] <= p["feedback_gain"] <= p["feedback_gain_hi"]
    att = json.loads((smoke / "metrics/attention.json").read_text())["policies"]
    assert set(att) == {"base", "rpl"}
    for pol in att.values():
        for t in pol.values():
            assert 0 < t["image_share"] < 1 and 0 < t["context_share"] < 1 and 0 <= t["object_share"] <= 1
            assert t["image_share_norm"] == pytest.approx(t["image_share"] / t["context_share"], rel=0.05)

def test_critic_quality_recorded(smoke, P):
    "The learned critic was chosen on half the validation captions and measured, with intervals, on the other half."
    c = json.loads((smoke / "metrics/critic.json").read_text())
    assert c["n"] == (P.critic.eval_images - P.critic.eval_images // 2) * len(P.critic.eval_temperatures) and c["steps"] >= 1
    assert len(c["selection"]) >= 1 and c["chosen_step"] in [e["step"] for e in c["selection"]]
    for k in ("spearman", "mae", "names_real_error"):
        assert c[k] is None or c[f"{k}_lo"] <= c[k] + 1e-9 and c[k] <= c[f"{k}_hi"] + 1e-9, k

def test_seed_variants_reuse_their_stages(smoke, P):
    "RPL and DPO at their stage's seed point at that stage's policy; the other seeds are trained."
    assert json.loads((smoke / f"models/variants/rpl_s{P.rpl.seed}/source.json").read_text())["policy"] == f"{P.rpl.out_dir}/policy"
    assert (smoke / f"models/variants/sft_s{P.rpl.seed}/policy/model.safetensors").exists()
    other = next(s for s in P.sweep.seeds if s != P.rpl.seed)
    assert (smoke / f"models/variants/rpl_s{other}/policy/model.safetensors").exists()

def test_grid_chose_on_validation(smoke, P):
    "The grid ran every configuration of its three steps on validation images and chose by final-turn CAPTURE."
    g = json.loads((smoke / "metrics/rpl_grid.json").read_text())
    assert g["split"] == P.grid.split != P.evaluate.split
    assert len(g["chosen_steps"]) == 3
    step2 = {k: v for k, v in g["configs"].items() if v["step"] == 2}
    cap = lambda k: g["configs"][k]["capture"]
    assert cap(g["steps"][1]) == max(cap(k) for k in [g["steps"][0], *step2])  # the best (ties: any of the best)

def test_analysis_states_claims_with_intervals(smoke):
    "Every claim has a difference inside its interval and a verdict that agrees with the interval; controls are judged."
    a = json.loads((smoke / "metrics/analysis.json").read_text())
    assert set(a["claims"]) == {"a", "b", "c", "d", "e", "f", "g"}  # (f): the online methods against RePer; (g): RPL and GRPO at equal compute
    for cs in a["claims"].values():
        for c in cs:
            assert c["lo"] - 1e-9 <= c["diff"] <= c["hi"] + 1e-9, c
            assert (c["verdict"] == "ties with") == (c["lo"] <= 0 <= c["hi"]), c
            assert c["verdict"] in c["sentence"]
    assert {(c["policy"], c["control"]) for c in a["controls"]} >= {("base", "neutral"), ("base", "score"), ("rpl", "neutral")}

def test_headline_fits_a_terminal(smoke):
    "`dvc metrics show metrics/headline.json` prints the first- and last-turn CAPTURE per system and the verdict counts in a narrow table."
    h = json.loads((smoke / "metrics/headline.json").read_text())
    a = json.loads((smoke / "metrics/analysis.json").read_text())
    T = a["turns"]
    assert {"base", "rpl", "sft", "dpo"} <= set(h) and h["rpl"][f"t{T}"] == round(a["capture"]["rpl"][f"turn{T}"]["mean"], 3)
    assert h["beats"] + h["ties"] + h["not_beat"] == sum(len(cs) for cs in a["claims"].values())
    out = run(["dvc", "metrics", "show", "metrics/headline.json"], smoke).stdout
    assert f"rpl.t{T}" in out and "controls_ok" in out, out
    assert max(map(len, out.splitlines())) <= 200, out

def test_reflect_params_rerun_evaluation_not_training(smoke):
    "reflect.* reaches the evaluations, never the trainings it does not feed."
    stale = newly_stale(smoke, "reflect.n_turns", 3)
    assert "evaluate" in stale and any(s.startswith("sweep_seeds") for s in stale) and "train_rpl" not in stale and "pretrain" not in stale

def test_compute_match_runs_each_method_at_the_others_budget(smoke, P, rows):
    "compute_match: GRPO's checkpoint at grpo.steps is the sweep's GRPO policy (same captions), compute grows with steps and images, and the matched budgets land near the defaults."
    cm = json.loads((smoke / "metrics/compute_match.json").read_text())
    cmr = pd.read_parquet(smoke / "results/compute_match.parquet")
    S, k = cm["grpo_steps"], cm["rpl_images"]
    assert S in cm["scored_steps"] and P.grpo.steps in cm["scored_steps"] and k in cm["trained_images"]
    for seed in set(P.compute_match.seeds) & set(P.sweep.online_seeds):  # the long run passes through the sweep's run
        here = cmr[(cmr.system == f"grpo@{P.grpo.steps}") & (cmr.seed == seed)].sort_values("id").text.tolist()
        there = rows[(rows.system == "grpo") & (rows.seed == seed) & (rows.turn == 1)].sort_values("id").text.tolist()
        assert here == there, "GRPO's checkpoint at grpo.steps should caption as the sweep's GRPO policy"
    runs = pd.DataFrame(cm["runs"])
    for m, by in (("grpo", "steps"), ("rpl", "images")):
        for _, d in runs[runs.method == m].groupby("seed"):
            assert d.sort_values(by).fte.is_monotonic_increasing, d
    fte = {s: v["fte"] for s, v in cm["systems"].items()}
    assert 0.5 < fte[f"grpo@{S}"] / cm["sweep_fte"]["rpl"] < 2, (fte, cm["sweep_fte"])  # matched to within the linear estimate
    assert set(cmr[cmr.system == f"rpl@{k}"].turn) == set(range(1, P.reflect.n_turns + 1)) and set(cmr[cmr.system == f"grpo@{S}"].turn) == {1}
