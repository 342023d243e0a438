"""Training-step time of the RPL loss against plain cross-entropy, same model and batch (issue 4's target: ratio <= 1.05).

    python benchmarks/rpl_step.py [--params params.yaml] [--steps 20] [--llava7b]

Default: the policy of `model.*` (the tiny LLaVA, random weights) on a synthetic batch of
`rpl.batch_size` three-turn reflection dialogues of `model.max_length` tokens, one forward + backward +
AdamW step per iteration, language model trainable as in RPL. The two losses alternate step by step so
that machine noise hits both alike; each runs in its own process for peak memory (CPU: peak RSS; GPU:
peak allocated). `--llava7b` (GPU only): a LLaVA-1.5-7B-shaped model (random weights, bf16, gradient
checkpointing) at 576 image tokens, reporting tokens/s, peak memory and model FLOPs utilisation.
Prints figures; asserts nothing.
"""
import argparse, json, os, resource, subprocess, sys, time
import torch, torch.nn.functional as F

def batch(model, B: int, T: int, n_img: int, image_size: int, image_token: int, dev):
    "A right-sized synthetic batch: image tokens first, three answer spans with σ 0.3, 0.6, 0.9."
    V = model.config.text_config.vocab_size
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, V, (B, T), generator=g); ids[:, 1:1 + n_img] = image_token
    labels = torch.full((B, T), -100); sigma = torch.zeros(B, T); turns = torch.full((B, T), -1)
    span = (T - n_img - 1) // 3
    for t, s in enumerate((0.3, 0.6, 0.9)):
        a, b = n_img + 1 + t * span + span // 3, n_img + 1 + (t + 1) * span
        labels[:, a:b] = ids[:, a:b]; sigma[:, a:b] = s; turns[:, a:b] = t
    pix = torch.randn(B, 3, image_size, image_size, generator=g)
    return {k: v.to(dev) for k, v in dict(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels, sigma=sigma,
                                        turns=turns, pixel_values=pix).items()}

def step_fn(kind: str, alpha: float):
    from reper.rpl import rpl_loss
    def f(model, b):
        out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], pixel_values=b["pixel_values"].to(model.dtype), use_cache=False)
        if kind == "rpl": return rpl_loss(out.logits, b["labels"], b["sigma"], alpha)[0]
        return F.cross_entropy(out.logits[:, :-1].float().flatten(0, 1), b["labels"][:, 1:].flatten(), ignore_index=-100)
    return f

def build(a, dev):
    from reper.config import load_params
    from reper.model import build_tiny_policy, n_image_tokens, SCAFFOLD_TEXTS
    from reper.rpl import freeze_vision_side
    if a.llava7b:
        from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration
        cfg = LlavaConfig(vision_config=CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                                                          image_size=336, patch_size=14, projection_dim=768),
                          text_config=LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                                                  num_key_value_heads=32, vocab_size=32064, max_position_embeddings=4096),
                          image_token_index=32000, image_seq_length=576, vision_feature_layer=-2, vision_feature_select_strategy="default")
        with torch.device(dev): model = LlavaForConditionalGeneration(cfg).to(torch.bfloat16)
        model.gradient_checkpointing_enable(dict(use_reentrant=False))
        return model, 576, 336, 32000, 2048
    P = load_params(a.params)
    model, proc = build_tiny_policy(P.model, P.data.image_size, SCAFFOLD_TEXTS * 20)
    return model.to(dev), n_image_tokens(proc), P.data.image_size, proc.image_token_id, P.model.max_length

def worker(a):
    "Time `a.kind` (or both, alternating) for `a.steps` steps; print one JSON line."
    from reper.config import load_params
    from reper.rpl import freeze_vision_side
    dev = "cuda" if a.llava7b else "cpu"
    if not a.llava7b: torch.set_num_threads(load_params(a.params).rpl.threads)
    model, n_img, size, img_tok, T = build(a, dev)
    counts = freeze_vision_side(model); model.train()
    B = a.batch or (1 if a.llava7b else load_params(a.params).rpl.batch_size)
    b = batch(model, B, T, n_img, size, img_tok, dev)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6, foreach=not a.llava7b)
    kinds = ["rpl", "ce"] if a.kind == "both" else [a.kind]
    fns = {k: step_fn(k, 10.0) for k in kinds}
    times = {k: [] for k in kinds}
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    for i in range(a.warmup + a.steps):
        for k in kinds:
            sync(); t = time.perf_counter()
            loss = fns[k](model, b); loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
            sync()
            if i >= a.warmup: times[k].append(time.perf_counter() - t)
    peak = torch.cuda.max_memory_allocated() / 2**30 if dev == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    print(json.dumps(dict(kind=a.kind, median_s=med, peak_gib=peak, batch=B, seq=T, trainable=counts["trainable"],
                          total=counts["trainable"] + counts["frozen"])))

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml"); ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3); ap.add_argument("--batch", type=int, default=0)
    ap.add_argument("--llava7b", action="store_true"); ap.add_argument("--kind", default=None)
    a = ap.parse_args()
    if a.kind: return worker(a)
    if a.llava7b and not torch.cuda.is_available(): sys.exit("--llava7b needs a GPU")
    run = lambda kind: json.loads(subprocess.run([sys.executable, __file__, *sys.argv[1:], "--kind", kind], check=True,
                                                 capture_output=True, text=True).stdout.strip().splitlines()[-1])
    both, rpl, ce = run("both"), run("rpl"), run("ce")
    t_rpl, t_ce = both["median_s"]["rpl"], both["median_s"]["ce"]
    print(f"model: {both['total'] / 1e6:.1f} M parameters ({both['trainable'] / 1e6:.1f} M trainable), batch {both['batch']} x {both['seq']} tokens, "
          f"{'cuda bf16' if a.llava7b else f'cpu, {torch.get_num_threads()} threads'}; median of {a.steps} alternating steps")
    print(f"step time  RPL {t_rpl * 1e3:8.1f} ms   CE {t_ce * 1e3:8.1f} ms   ratio RPL/CE {t_rpl / t_ce:.3f} (target <= 1.05)")
    unit = "GiB allocated" if a.llava7b else "GiB peak RSS"
    print(f"peak memory  RPL {rpl['peak_gib']:.3f}   CE {ce['peak_gib']:.3f} {unit} (separate processes)")
    if a.llava7b:
        tok = both["batch"] * both["seq"]
        # model FLOPs per step (no recomputation counted): 6 N per token for the trainable language model (forward +
        # backward), 12 L d T per token for attention, 2 N per patch for the frozen tower (forward only)
        n_vis = 303e6; L, d = 32, 4096
        flops = (6 * (both["total"] - n_vis) + 12 * L * d * both["seq"]) * tok + 2 * n_vis * 577 * both["batch"]
        print(f"tokens/s {tok / t_rpl:.0f}   model FLOPs utilisation {flops / t_rpl / 989e12:.1%} of 989 TFLOP/s bf16 (H100 SXM dense)")

if __name__ == "__main__": main()
