"""Captions per second of GRPO's sampling: TRL's generation inside `PolicyGRPOTrainer` (one batched `generate` per
step, `grpo.prompts_per_step` x `grpo.group_size` answers) against the project's batched sampler
(`reper.generate.generate_answers`, static cache) on the same prompts, batch and temperature.

    python benchmarks/grpo_sampling.py [--params params.yaml] [--steps 4]

Uses the base policy (`pretrain.out_dir` or `model.name_or_path`) and the first images of `candidates.split`.
Trains `--steps` GRPO steps into a temporary folder. Prints figures; asserts nothing.
"""
import argparse, tempfile, time
import torch
from reper.config import base_policy_path, load_params
from reper.runtime import pick_device
from reper.scenes import load_scenes
from reper.model import load_policy
from reper.generate import generate_answers, caption_dialogue
from reper.grpo import PolicyGRPOTrainer, prompt_dataset, grpo_rewards, train_grpo

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--params", default="params.yaml")
ap.add_argument("--steps", type=int, default=4)
a = ap.parse_args()
P = load_params(a.params); G = P.grpo.model_copy(update=dict(steps=a.steps, save_steps=0, resume=False))
dev = pick_device(P.device)
torch.set_num_threads(G.threads)
n = G.prompts_per_step * G.group_size
scenes, images, _ = load_scenes(P.data.root, P.candidates.split, P.data.on_bad_image, limit=G.prompts_per_step * a.steps)

spent = dict(s=0.0, answers=0, tokens=0)
orig = PolicyGRPOTrainer._generate_single_turn
def timed(self, *args, **kw):
    t = time.perf_counter(); ids, lp = orig(self, *args, **kw)
    if self.state.global_step: spent["s"] += time.perf_counter() - t; spent["answers"] += len(ids); spent["tokens"] += sum(map(len, ids))  # step 0 pays one-off costs
    return ids, lp
PolicyGRPOTrainer._generate_single_turn = timed
model, proc = load_policy(base_policy_path(P), dev, P.model.dtype)
with tempfile.TemporaryDirectory() as out:
    t = time.perf_counter()
    train_grpo(model, proc, prompt_dataset(scenes, images), grpo_rewards(G, scenes), G, out, dev)
    total = time.perf_counter() - t

model, proc = load_policy(base_policy_path(P), dev, P.model.dtype)
dialogues = [caption_dialogue(s.instruction) for s in scenes[:G.prompts_per_step] for _ in range(G.group_size)]
imgs = [im for im in images[:G.prompts_per_step] for _ in range(G.group_size)]
for k in range(2):  # the second pass is timed (on CUDA the static cache compiles per batch shape in the first)
    t = time.perf_counter()
    recs = generate_answers(model, proc, dialogues, imgs, G.temperature, G.max_new_tokens, n, P.model.max_length, seed=k, progress=False)
    ours = time.perf_counter() - t
print(f"{dev}, torch threads {torch.get_num_threads()}, {n} answers a step ({G.prompts_per_step} prompts x group {G.group_size}), up to {G.max_new_tokens} new tokens, temperature {G.temperature:g}")
print(f"GRPO step, whole (generation, rewards, reference and policy forwards, update): {total / a.steps:.2f} s ({a.steps} steps)")
print(f"TRL generation inside GRPO:  {spent['answers'] / spent['s']:7.1f} captions/s {spent['tokens'] / spent['s']:8.1f} tokens/s (steps 2-{a.steps})")
print(f"reper batched sampler:       {n / ours:7.1f} captions/s {sum(r['n_tokens'] for r in recs) / ours:8.1f} tokens/s (same prompts and batch)")
