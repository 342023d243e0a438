"""RPL training as a process: resuming after a kill, two processes against one, the train_rpl stage's outputs, and
dialogues whose image did not open."""
import json, sys
from pathlib import Path
import torch, yaml
from safetensors.torch import load_file
from conftest import run

JOB = str(Path(__file__).with_name("rpl_job.py"))

def weights(path) -> dict: return load_file(str(Path(path) / "model.safetensors"))

def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)

def test_train_rpl_stage(smoke):
    "The stage wrote a llava-hf policy whose vision tower and projector equal the base policy's, and its metrics."
    base, rpl = weights(smoke / "models/base"), weights(smoke / "models/rpl/policy")
    frozen = [k for k in base if "vision_tower" in k or "multi_modal_projector" in k]
    assert frozen and all(torch.equal(base[k], rpl[k]) for k in frozen)
    assert any(not torch.equal(base[k], rpl[k]) for k in base if "language_model" in k)
    m = json.loads((smoke / "metrics/train_rpl.json").read_text())
    assert m["steps"] >= 1 and m["dialogues"] >= 1 and set(m["logprob_change"]) and m["frozen"] > 0
    logged = json.loads((smoke / "dvclive/train_rpl/metrics.json").read_text())
    assert {"loss", "likelihood", "unlikelihood"} <= set(logged["rpl"])

def test_resume_after_kill_matches_uninterrupted(smoke, tmp_path):
    "A job killed after its step-3 checkpoint and resumed ends with the weights of a job never stopped."
    full, broken = tmp_path / "full", tmp_path / "broken"
    out = run([sys.executable, JOB, str(smoke), str(full)], smoke).stdout
    n_steps = int(out.split("steps")[-1])
    assert n_steps >= 5, f"too few steps to test a resume: {n_steps}"
    r = run([sys.executable, JOB, str(smoke), str(broken), "--kill-at", "3"], smoke, check=False)
    assert r.returncode == 9 and not (broken / "policy").exists()
    assert (broken / "checkpoints/checkpoint-3").is_dir()
    run([sys.executable, JOB, str(smoke), str(broken), "--resume"], smoke)
    d = max_diff(weights(full / "policy"), weights(broken / "policy"))
    assert d < 1e-5, f"resumed weights differ by {d}"
    base = weights(smoke / "models/base")
    assert max_diff(weights(full / "policy"), base) > 1e-3  # training did move the weights

def test_two_processes_match_one(smoke, tmp_path):
    "accelerate launch with 2 gloo CPU processes x batch 2 gives the weights of 1 process x batch 4 (same global batch)."
    common = dict(epochs=1.0, lr=1e-3, threads=1, warmup_ratio=0.0, lr_scheduler="constant")
    one = dict(common, batch_size=4, out_dir=str(tmp_path / "one"))
    two = dict(common, batch_size=2, out_dir=str(tmp_path / "two"), accelerate_config="accelerate/cpu_2proc.yaml")
    # whole global batches only: accelerate evens out a short last batch by repeating examples on one process
    recs = (smoke / "reflection/dialogues.jsonl").read_text().splitlines()
    assert len(recs) >= 4, len(recs)
    even = tmp_path / "dialogues.jsonl"
    even.write_text("\n".join(recs[:len(recs) // 4 * 4]) + "\n")
    code = ("import json, sys; from reper.rpl import launch_rpl; "
            "s = launch_rpl('params.yaml', json.loads(sys.argv[1]), sys.argv[2]); s.pop('history'); print(json.dumps(s))")
    s1 = json.loads(run([sys.executable, "-c", code, json.dumps(one), str(even)], smoke).stdout.strip().splitlines()[-1])
    s2 = json.loads(run([sys.executable, "-c", code, json.dumps(two), str(even)], smoke).stdout.strip().splitlines()[-1])
    assert s1["processes"] == 1 and s2["processes"] == 2 and s1["steps"] == s2["steps"] >= 1
    d = max_diff(weights(tmp_path / "one/policy"), weights(tmp_path / "two/policy"))
    moved = max_diff(weights(tmp_path / "one/policy"), weights(smoke / "models/base"))
    assert d < 1e-4 * max(1.0, moved) and moved > 1e-4, (d, moved)

def test_accelerate_configs_name_the_paper_node():
    "The FSDP and ZeRO-3 configs are for one node of 8 GPUs in bf16; the ZeRO-3 one points at its DeepSpeed JSON."
    root = Path(__file__).resolve().parents[1]
    fsdp = yaml.safe_load((root / "accelerate/fsdp_8gpu.yaml").read_text())
    z3 = yaml.safe_load((root / "accelerate/zero3_8gpu.yaml").read_text())
    for c in (fsdp, z3): assert c["num_processes"] == 8 and c["mixed_precision"] == "bf16" and c["use_cpu"] is False
    assert fsdp["distributed_type"] == "FSDP" and fsdp["fsdp_config"]["fsdp_reshard_after_forward"] is True
    assert "LlamaDecoderLayer" in fsdp["fsdp_config"]["fsdp_transformer_layer_cls_to_wrap"]
    ds = json.loads((root / z3["deepspeed_config"]["deepspeed_config_file"]).read_text())
    assert z3["distributed_type"] == "DEEPSPEED" and ds["zero_optimization"]["stage"] == 3

def test_rpl_main_counts_dialogues_without_image(tmp_path):
    "Under data.on_bad_image: skip, a dialogue whose image does not open is left out and counted in rpl_main's summary (it was a KeyError)."
    from reper.config import load_params
    from reper.scenes import make_scenes, load_scenes
    from reper.model import build_tiny_policy, save_policy
    from reper.rpl import rpl_main
    root = Path(__file__).resolve().parents[1]
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["data"].update(root=str(tmp_path / "scenes"), n_train=1, n_val=2, n_test=1, n_reflect=3, on_bad_image="skip")
    raw["model"].update(text_hidden=64, text_layers=1, text_intermediate=128, vision_hidden=64, vision_layers=1)
    raw["pretrain"]["out_dir"] = str(tmp_path / "base")
    raw["rpl"].update(out_dir=str(tmp_path / "rpl"), batch_size=1, gradient_accumulation_steps=1, threads=1)
    raw["device"] = "cpu"
    for g in ("evaluate_base", "candidates", "evaluate", "grid"): raw[g]["n_images"] = 1  # no more than the tiny splits hold
    raw["critic"]["eval_images"] = 2
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    P = load_params(tmp_path / "params.yaml")
    make_scenes(P.data, progress=False)
    scenes = load_scenes(P.data.root, P.candidates.split, with_images=False)[0]
    save_policy(*build_tiny_policy(P.model, P.data.image_size, [s.references[0] for s in scenes] + [s.instruction for s in scenes]), P.pretrain.out_dir)
    msgs = lambda s: [{"role": "user", "text": s.instruction}, {"role": "assistant", "text": s.references[0]}]
    dialogues = [dict(id=s.id, messages=msgs(s), turns=[dict(text=s.references[0], sigma=0.9)]) for s in scenes]
    (tmp_path / "dialogues.jsonl").write_text("".join(json.dumps(d) + "\n" for d in dialogues))
    (Path(P.data.root) / scenes[1].image).write_bytes(b"not an image")
    s = rpl_main(str(tmp_path / "params.yaml"), dialogues=str(tmp_path / "dialogues.jsonl"))
    assert (s["dialogues"], s["skipped_dialogues"], s["steps"]) == (2, 1, round(2 * P.rpl.epochs)), s  # 2 dialogues, batch 1
