"The visual reflection dataset stages on the smoke pipeline: dialogue invariants and what reruns when."
import sys
import json
import pytest, yaml
from conftest import run, newly_stale
from reper.config import load_params
from reper.files import read_jsonl
from reper.scenes import load_scenes

@pytest.fixture(scope="module")
def dialogues(smoke):
    return read_jsonl(smoke / "reflection/dialogues.jsonl", ("id", "turns", "messages"))

def test_every_candidate_judged_and_scored(smoke):
    p = load_params(smoke / "params.yaml")
    cands = read_jsonl(smoke / "reflection/candidates.jsonl")
    assert len(cands) == p.candidates.n_images * len(p.candidates.temperatures)
    assert [c["job"] for c in cands] == list(range(len(cands)))
    judged = read_jsonl(smoke / "reflection/judgements.jsonl")
    assert [j["job"] for j in judged] == [c["job"] for c in cands]
    assert all(j["score"] is None or 1 <= j["score"] <= 10 for j in judged)
    m = json.loads((smoke / "metrics/judge.json").read_text())
    assert m["n_unscored"] == sum(j["score"] is None for j in judged)
    rules = read_jsonl(smoke / "reflection/rule_scores.jsonl")
    assert all(0.0 <= r["capture"] <= 1.0 for r in rules)

def test_dialogue_invariants(smoke, dialogues):
    "Scores rise by at least min_gap along each dialogue, the last reaches min_final_score, σ in [0, 1]."
    p = load_params(smoke / "params.yaml").dialogue
    assert dialogues, "the smoke pipeline made no dialogue"
    for d in dialogues:
        s = [t["judge_score"] for t in d["turns"]]
        assert 1 <= len(s) <= p.max_turns and s[-1] >= p.min_final_score
        assert all(b - a >= p.min_gap for a, b in zip(s, s[1:])), s
        assert all(0.0 <= t["sigma"] <= 1.0 for t in d["turns"])
        assert [m["role"] for m in d["messages"]] == ["user"] + ["assistant", "user"] * (len(s) - 1) + ["assistant"]
        assert all(f"A score of {t['judge_score']} is given" in m["text"] for t, m in zip(d["turns"], d["messages"][2::2]))

def test_no_image_in_two_splits(smoke, dialogues):
    p = load_params(smoke / "params.yaml")
    ids = {sp: {s.id for s in load_scenes(smoke / p.data.root, sp, with_images=False)[0]} for sp in ("train", "val", "test", "reflect")}
    assert sum(map(len, ids.values())) == len(set().union(*ids.values())), "an image in two splits"
    assert p.candidates.split == "reflect" and {d["id"] for d in dialogues} <= ids["reflect"]  # the base policy never trained on them

def test_min_gap_reruns_only_its_readers(smoke):
    "The score gap filters both the dialogues and the DPO pairs; the number of turns only the dialogues; beta only DPO."
    gap = newly_stale(smoke, "dialogue.min_gap", 2.0)
    # train_rpl reads it too: its notebook shows whether params follow the validation grid's chosen gap
    assert {"dialogues", "train_dpo", "train_rpl", "analysis"} <= gap and not {"candidates", "judge", "train_critic", "references"} & gap
    turns = newly_stale(smoke, "dialogue.max_turns", 2)
    assert "dialogues" in turns and not {"train_dpo", "candidates", "train_rpl"} & turns
    beta = newly_stale(smoke, "dpo.beta", 0.2)
    assert "train_dpo" in beta and not {"dialogues", "train_rpl", "train_critic"} & beta

def test_judge_change_reruns_judge_not_sampling(smoke):
    "A judge param makes only the judge stale; dialogues follow when the judgements it writes change."
    stale = newly_stale(smoke, "judge.unparseable_retries", 3)  # the critic's re-asks read it too
    assert stale == {"judge", "train_critic", "evaluate"}, stale
    stages = yaml.safe_load((smoke / "dvc.yaml").read_text())["stages"]
    assert "${paths.judgements}" in stages["dialogues"]["deps"] and "judge" not in stages["dialogues"]["params"]

def test_two_processes_merge_to_the_single_process_order(smoke, tmp_path):
    "2 CPU processes (torchrun, gloo): every job once, in job order; greedy rows equal the stage's."
    out = tmp_path / "cands.jsonl"
    r = run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "reper.dialogues",
             "--params", "params.yaml", "--out", str(out)], smoke, timeout=600)
    assert "from 2 process(es)" in r.stdout, r.stdout[-2000:]
    two = read_jsonl(out)
    one = read_jsonl(smoke / "reflection/candidates.jsonl")
    assert [r["job"] for r in two] == [r["job"] for r in one] and [r["id"] for r in two] == [r["id"] for r in one]
    greedy = lambda recs: [r["text"] for r in recs if r["temperature"] == 0.0]
    assert greedy(two) == greedy(one) and greedy(one)
    assert not list(tmp_path.glob("*.rank*")), "shard files are removed after the merge"
