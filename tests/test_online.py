"""Online RL as processes: the sweep_online stage's GRPO policy, GRPO resumed after a kill, and VRE's cold start and
GRPO end to end on candidates whose scores differ; GRPO, VRE and the evaluation loop on a Qwen2-VL checkpoint."""
import json, sys
from pathlib import Path
import pytest, torch, yaml
from conftest import ROOT, run
from test_rpl import weights, max_diff

JOB = str(Path(__file__).with_name("grpo_job.py"))

def test_sweep_online_grpo_stage(smoke):
    "The GRPO seed trained the language model only, counted its compute, and ran alone and in the oracle loop."
    base, pol = weights(smoke / "models/base"), weights(smoke / "models/variants/grpo_s0/policy")
    frozen = [k for k in base if "vision_tower" in k or "multi_modal_projector" in k]
    assert frozen and all(torch.equal(base[k], pol[k]) for k in frozen)
    m = json.loads((smoke / "metrics/variants/grpo_s0.json").read_text())
    c = m["compute"]
    assert c["steps"] == 2 and c["generated_tokens"] > 0 and c["trained_tokens"] > c["generated_tokens"] and c["train_seconds"] > 0, c
    assert c["trained_tokens"] == c["prompt_tokens"] + c["generated_tokens"] == c["reference_tokens"], c  # one forward of prompt and answer each, and the KL reference's
    assert set(m["turns"]) == {"turn1", "turn2"}  # the smoke loop has 2 turns
    a = json.loads((smoke / "metrics/analysis.json").read_text())
    assert "grpo" in a["capture"] and "grpo" in a["compute"] and any(c["a"] == "grpo" for c in a["claims"]["f"])

def test_grpo_resume_after_kill_matches_uninterrupted(smoke, tmp_path):
    "A GRPO job killed after its step-2 checkpoint and resumed ends with the weights of a job never stopped (sampling included)."
    full, broken = tmp_path / "full", tmp_path / "broken"
    run([sys.executable, JOB, str(smoke), str(full)], smoke)
    r = run([sys.executable, JOB, str(smoke), str(broken), "--kill-at", "2"], smoke, check=False)
    assert r.returncode == 9 and not (broken / "policy").exists() and (broken / "checkpoints/checkpoint-2").is_dir()
    run([sys.executable, JOB, str(smoke), str(broken), "--resume"], smoke)
    d = max_diff(weights(full / "policy"), weights(broken / "policy"))
    assert d < 1e-6, f"resumed weights differ by {d}"
    counts = lambda p: json.loads((p / "counts.json").read_text())
    assert counts(full) == counts(broken), "the resumed run counts the tokens of its part before the kill too"
    assert max_diff(weights(full / "policy"), weights(smoke / "models/base")) > 1e-4  # training did move the weights

def unstable_candidates(scenes, raw, tmp_path):
    "Two judged candidates per scene whose scores differ (a reference caption, 10; its first sentence, 3), written to tmp_path; `raw`'s paths point at them."
    cands, judgements = [], []
    for s in scenes:
        for t, text, score in ((0.0, s.references[0], 10), (1.0, s.references[0].split(".")[0] + ".", 3)):
            cands.append(dict(job=len(cands), id=s.id, temperature=t, text=text)); judgements.append(dict(job=len(judgements), score=score, reason="r"))
    for name, recs in (("candidates", cands), ("judgements", judgements)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs)); raw["paths"][name] = str(tmp_path / f"{name}.jsonl")

def test_vre_cold_start_and_grpo(smoke, tmp_path):
    "On candidates whose judge scores differ (a reference caption against its first sentence), VRE writes template dialogues, fine-tunes on them and runs GRPO."
    from reper.scenes import load_scenes
    from reper.vre import split_reflection, vre_main
    raw = yaml.safe_load((smoke / "params.yaml").read_text())
    scenes = load_scenes(smoke / raw["data"]["root"], raw["candidates"]["split"], with_images=False)[0][:6]
    unstable_candidates(scenes, raw, tmp_path)
    raw["vre"].update(steps=1, sft_epochs=1.0, max_new_tokens=24)
    raw["grpo"].update(n_images=4)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    code = ("import json, sys; from reper.vre import vre_main; print(json.dumps(vre_main(sys.argv[1], 0, sys.argv[2])))")
    s = json.loads(run([sys.executable, "-c", code, str(tmp_path / "params.yaml"), str(tmp_path / "vre")], smoke).stdout.strip().splitlines()[-1])
    kept = [json.loads(l) for l in (tmp_path / "vre/cold_start.jsonl").read_text().splitlines()]
    assert s["cold_start"]["unstable"] == 6 and s["cold_start"]["kept"] == len(kept) >= 1, s
    assert all(split_reflection(d["messages"][1]["text"]).well_formed for d in kept)
    sft = json.loads((tmp_path / "vre/cold_start/policy/compute.json").read_text())
    assert s["rl_steps"] == 1 and s["steps"] == sft["steps"] + 1 and s["generated_tokens"] > 0 == sft["generated_tokens"], s
    assert json.loads((tmp_path / "vre/policy/compute.json").read_text())["trained_tokens"] == s["trained_tokens"]

GRPO_SUMMARY = ("import json, sys; from reper.grpo import launch_grpo; s = launch_grpo(sys.argv[1], json.loads(sys.argv[2])); s.pop('history'); "
                "print(json.dumps(s))")

def small_grpo(smoke, tmp_path, **grpo) -> Path:
    "The smoke params with a short GRPO run (`grpo` overrides), written beside the test's files."
    raw = yaml.safe_load((smoke / "params.yaml").read_text())
    raw["grpo"].update(dict(n_images=4, group_size=2, prompts_per_step=2, steps=2, max_new_tokens=8, lr=1e-3, threads=1) | grpo)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    return tmp_path / "params.yaml"

def test_grpo_two_processes(smoke, tmp_path):
    "accelerate launch with 2 gloo CPU processes trains GRPO as one process does: same steps, language model only, tokens counted over both."
    out = lambda s: json.loads(s.stdout.strip().splitlines()[-1])
    one = out(run([sys.executable, "-c", GRPO_SUMMARY, str(small_grpo(smoke, tmp_path)), json.dumps(dict(out_dir=str(tmp_path / "one")))], smoke))
    two = out(run([sys.executable, "-c", GRPO_SUMMARY, str(tmp_path / "params.yaml"),
                   json.dumps(dict(out_dir=str(tmp_path / "two"), accelerate_config="accelerate/cpu_2proc.yaml", prompts_per_step=1))], smoke))
    assert (one["processes"], two["processes"], one["steps"], two["steps"]) == (1, 2, 2, 2), (one, two)
    base, pol = weights(smoke / "models/base"), weights(tmp_path / "two/policy")
    assert all(torch.equal(base[k], pol[k]) for k in base if "vision_tower" in k or "multi_modal_projector" in k)
    assert two["trained_tokens"] > 0 and two["generated_tokens"] > 0 and (tmp_path / "two/policy/compute.json").exists()

def test_grpo_trains_a_llava15_checkpoint(smoke, tmp_path):
    "With model.name_or_path at a llava-hf LLaVA-1.5 checkpoint (in miniature: 336 px, 576 image tokens, Llama tokenizer), GRPO trains and saves it in the same format."
    from reper.model import save_policy, tiny_llava15, load_policy
    from reper.scenes import load_scenes
    raw = yaml.safe_load((smoke / "params.yaml").read_text())
    scenes = load_scenes(smoke / raw["data"]["root"], "train", with_images=False)[0][:20]
    save_policy(*tiny_llava15([s.references[0] for s in scenes] + [scenes[0].instruction]), tmp_path / "llava-1.5-tiny-hf")
    params = small_grpo(smoke, tmp_path)
    raw = yaml.safe_load(params.read_text()); raw["model"]["name_or_path"] = str(tmp_path / "llava-1.5-tiny-hf"); params.write_text(yaml.safe_dump(raw))
    s = json.loads(run([sys.executable, "-c", GRPO_SUMMARY, str(params), json.dumps(dict(out_dir=str(tmp_path / "grpo")))], smoke).stdout.strip().splitlines()[-1])
    assert s["steps"] == 2 and s["frozen"] > 0 and s["generated_tokens"] > 0, s
    model, proc = load_policy(tmp_path / "grpo/policy")
    assert type(model).__name__ == "LlavaForConditionalGeneration" and proc.image_processor.crop_size["height"] == 336
    a, b = weights(tmp_path / "llava-1.5-tiny-hf"), weights(tmp_path / "grpo/policy")
    assert any(not torch.equal(a[k], b[k]) for k in a if "language_model" in k) and all(torch.equal(a[k], b[k]) for k in a if "vision_tower" in k)

@pytest.fixture(scope="module")
def qwen_setup(tmp_path_factory) -> Path:
    "A small rendered scenes set, a Qwen2-VL in miniature saved in the real format (model.name_or_path) and the smoke params pointed at both."
    from reper.config import overlay, parse_params, read_yaml
    from reper.model import save_policy, tiny_qwen2vl
    from reper.scenes import make_scenes
    work = tmp_path_factory.mktemp("qwen")
    raw = overlay(read_yaml(ROOT / "params.yaml"), read_yaml(ROOT / "profiles/smoke.yaml"))
    raw["data"].update(root=str(work / "scenes"), n_train=8, n_val=4, n_test=16, n_reflect=8)
    make_scenes(parse_params(raw, "params.yaml").data, work / "scenes", progress=False)
    from reper.scenes import load_scenes
    scenes = load_scenes(work / "scenes", "train", with_images=False)[0]
    save_policy(*tiny_qwen2vl([r for s in scenes for r in s.references] + [scenes[0].instruction]), work / "qwen2-vl-tiny")
    raw["model"]["name_or_path"] = str(work / "qwen2-vl-tiny")
    raw["grpo"].update(n_images=4, group_size=4, prompts_per_step=2, steps=2, max_new_tokens=24, lr=1e-3, threads=1)  # CAPTURE varies in a group of 4
    (work / "params.yaml").write_text(yaml.safe_dump(raw))
    return work

def test_grpo_trains_a_qwen2vl_checkpoint(qwen_setup, tmp_path):
    "With model.name_or_path at a Qwen2-VL checkpoint (in miniature), GRPO trains its language model only and saves it in the same format."
    from reper.model import load_policy
    work = qwen_setup
    s = json.loads(run([sys.executable, "-c", GRPO_SUMMARY, str(work / "params.yaml"), json.dumps(dict(out_dir=str(tmp_path / "grpo")))],
                       tmp_path).stdout.strip().splitlines()[-1])
    assert s["steps"] == 2 and s["frozen"] > 0 and s["generated_tokens"] > 0 and s["trained_tokens"] > s["generated_tokens"], s
    model, proc = load_policy(tmp_path / "grpo/policy")
    assert (type(model).__name__, type(proc.tokenizer).__name__) == ("Qwen2VLForConditionalGeneration", "Qwen2Tokenizer")
    assert json.loads((tmp_path / "grpo/policy/processor_config.json").read_text())["processor_class"] == "Qwen2VLProcessor"
    assert proc.chat_template == load_policy(work / "qwen2-vl-tiny")[1].chat_template
    a, b = weights(work / "qwen2-vl-tiny"), weights(tmp_path / "grpo/policy")  # saved in the checkpoints' layout: visual.*, model.layers.*, lm_head
    vision = [k for k in a if k.startswith("visual.")]
    assert a.keys() == b.keys() and any(k.startswith("visual.merger.") for k in vision)
    assert all(torch.equal(a[k], b[k]) for k in vision)  # the vision tower and its merger
    assert any(not torch.equal(a[k], b[k]) for k in a if k.startswith("model.layers.")) and not torch.equal(a["lm_head.weight"], b["lm_head.weight"])

def test_vre_on_a_qwen2vl_checkpoint(qwen_setup, tmp_path):
    "VRE's cold start (RPL with alpha 0) and its GRPO run on a Qwen2-VL base policy, from candidates whose scores differ."
    from reper.scenes import load_scenes
    from reper.vre import split_reflection
    work = qwen_setup
    raw = yaml.safe_load((work / "params.yaml").read_text())
    scenes = load_scenes(work / "scenes", raw["candidates"]["split"], with_images=False)[0][:4]
    unstable_candidates(scenes, raw, tmp_path)
    raw["vre"].update(steps=1, sft_epochs=1.0, max_new_tokens=16)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    code = "import json, sys; from reper.vre import vre_main; print(json.dumps(vre_main(sys.argv[1], 0, sys.argv[2])))"
    s = json.loads(run([sys.executable, "-c", code, str(tmp_path / "params.yaml"), str(tmp_path / "vre")], tmp_path).stdout.strip().splitlines()[-1])
    kept = [json.loads(l) for l in (tmp_path / "vre/cold_start.jsonl").read_text().splitlines()]
    assert s["cold_start"]["kept"] == len(kept) >= 1 and all(split_reflection(d["messages"][1]["text"]).well_formed for d in kept), s
    assert s["rl_steps"] == 1 and s["generated_tokens"] > 0, s
    a, b = weights(work / "qwen2-vl-tiny"), weights(tmp_path / "vre/policy")
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("visual.")) and any(not torch.equal(a[k], b[k]) for k in a if k.startswith("model.layers."))

def test_evaluation_loop_and_attention_on_qwen2vl(qwen_setup):
    "The oracle loop (2 turns) of the evaluation, its attention per turn and VRE's attention per segment run on a Qwen2-VL policy."
    from reper.config import load_params
    from reper.evaluation import run_loop
    from reper.model import load_policy
    from reper.reflect import attention_by_turn
    from reper.scenes import load_scenes
    from reper.vre import segment_attention, vre_text
    P = load_params(qwen_setup / "params.yaml")
    scenes, images, _ = load_scenes(P.data.root, P.evaluate.split, limit=3)
    model, proc = load_policy(P.model.name_or_path)
    res, rows = run_loop(model, proc, scenes, images, P.reflect.model_copy(update=dict(max_new_tokens=8)), P.model.max_length, "oracle",
                         system="qwen", policy="qwen", seed=0)
    assert P.reflect.n_turns == 2 and sorted(set(rows.turn)) == [1, 2] and len(rows) == 6 and rows.capture.between(0, 1).all()
    assert all(1 <= t["score"] <= 10 for r in res for t in r)
    att = attention_by_turn(model, proc, res, [s.instruction for s in scenes], images, scenes, P.model.max_length, progress=False)
    assert len(att) == 6 and all(p.shape == (4,) for p in att.patches)  # 64 px scenes: 2 x 2 merged patches
    assert att.image_share.between(0, 1).all() and att.object_share.between(0, 1).all()
    text = vre_text(scenes[0].references[0].split(".")[0] + ".", "There is more.", scenes[0].references[0])
    seg = segment_attention(model, proc, scenes[0].instruction, text, images[0], scenes[0], P.model.max_length)
    assert [a["segment"] for a in seg] == ["first", "reflection", "final"]
