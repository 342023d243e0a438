"The DPO baseline stage on the smoke pipeline: its pairs obey the dialogues' filters, only the language model moved."
import json
import torch
from safetensors.torch import load_file
from reper.config import load_params
from reper.files import read_jsonl
from reper.dialogues import judged_candidates

def test_pairs_follow_the_dialogue_filters(smoke):
    "One pair per image at most, chosen >= rejected + min_gap and >= min_final_score, both judged candidates of that image."
    p = load_params(smoke / "params.yaml")
    pairs = read_jsonl(smoke / p.dpo.out_dir / "pairs.jsonl", ("id", "chosen", "rejected", "chosen_score", "rejected_score"))
    assert pairs, "the smoke pipeline made no DPO pair"
    assert len({x["id"] for x in pairs}) == len(pairs)
    cands = judged_candidates(read_jsonl(smoke / "reflection/candidates.jsonl"), read_jsonl(smoke / "reflection/judgements.jsonl"))
    judged = {(c["id"], c["text"], c["judge_score"]) for c in cands}
    for x in pairs:
        assert x["chosen_score"] >= x["rejected_score"] + p.dialogue.min_gap and x["chosen_score"] >= p.dialogue.min_final_score
        assert (x["id"], x["chosen"], x["chosen_score"]) in judged and (x["id"], x["rejected"], x["rejected_score"]) in judged
    m = json.loads((smoke / "dvclive/train_dpo/metrics.json").read_text())["dpo"]
    assert m["n_pairs"] == len(pairs) and 0.0 <= m["final_reward_accuracy"] <= 1.0
    assert len((smoke / "dvclive/train_dpo/plots/metrics/dpo/loss.tsv").read_text().splitlines()) > 1

def test_only_the_language_model_moved(smoke):
    "Vision tower and projector of models/dpo are bit-identical to models/base; the language model changed."
    p = load_params(smoke / "params.yaml")
    base, dpo = (load_file(smoke / d / "model.safetensors") for d in (p.pretrain.out_dir, p.dpo.out_dir))
    assert base.keys() == dpo.keys()
    frozen = [k for k in base if "vision_tower" in k or "multi_modal_projector" in k]
    assert frozen and all(torch.equal(base[k], dpo[k]) for k in frozen)
    assert any(not torch.equal(base[k], dpo[k]) for k in base if "language_model" in k)
