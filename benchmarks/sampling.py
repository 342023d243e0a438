"""Captions per second: batched candidate sampling against one caption at a time (issue 3's target: >= 5x).

    python benchmarks/sampling.py [--params params.yaml] [--images 8]

Uses the base policy (`model.name_or_path`, or `pretrain.out_dir`: run `dvc repro pretrain` first) and the
first items of `data.source` at every temperature of `candidates.temperatures`. Prints figures; asserts nothing.
"""
import argparse, time
import torch
from reper.config import base_policy_path, load_params
from reper.runtime import pick_device
from reper.items import load_items
from reper.model import load_policy
from reper.dialogues import sample_candidates

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--params", default="params.yaml")
ap.add_argument("--images", type=int, default=8)
a = ap.parse_args()
P = load_params(a.params); C = P.candidates
torch.set_num_threads(P.pretrain.threads)
items, images, _ = load_items(P.data, C.split, limit=a.images)
model, proc = load_policy(base_policy_path(P), pick_device(P.device), P.model.dtype)
n = len(items) * len(C.temperatures)
kw = dict(max_new_tokens=C.max_new_tokens, max_length=P.model.max_length, seed=C.seed, progress=False)

def timed(bs):
    "Two passes over the same captions: the first pays one-off costs (on CUDA, generate's static cache compiles the forward per batch shape)."
    out = []
    for _ in range(2):
        t = time.perf_counter(); recs = sample_candidates(model, proc, items, images, C.temperatures, batch_size=bs, **kw)
        out.append(time.perf_counter() - t)
    return recs, out

batched, (cold_b, t_batched) = timed(C.batch_size)
single, (cold_s, t_single) = timed(1)
tokens = lambda recs: sum(r["n_tokens"] for r in recs)
print(f"{n} captions ({len(items)} images x {len(C.temperatures)} temperatures), {model.device}, torch threads {torch.get_num_threads()}; second of two passes (first pass in brackets)")
print(f"batched (batch {C.batch_size}): {n / t_batched:7.2f} captions/s  {tokens(batched) / t_batched:8.1f} tokens/s  ({t_batched:.1f} s; first {cold_b:.1f} s)")
print(f"one at a time:       {n / t_single:7.2f} captions/s  {tokens(single) / t_single:8.1f} tokens/s  ({t_single:.1f} s; first {cold_s:.1f} s)")
print(f"speed-up: {t_single / t_batched:.1f}x (first passes: {cold_s / cold_b:.1f}x)")
