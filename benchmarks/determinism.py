"""What makes two machines disagree: the same short training and greedy captioning under CPU settings, compared bit for bit.

    python benchmarks/determinism.py [--params params.yaml] [--steps 20] [--images 64] [--out metrics/determinism.json]

Each setting runs in a fresh process (the CPU kernels are chosen when torch starts): from the base policy
(`pretrain.out_dir`), `--steps` RPL steps on the first reflection dialogues, then greedy captions of `--images`
test images. It prints, per setting, the seconds taken, a hash of the trained weights and of the captions, the
largest weight difference from the first setting and how many captions differ from it; and writes them to
`--out`. Settings: the pinned one the stages run under (`scripts/stage`), ATEN's own choice of CPU kernels,
one thread instead of two, MKL's own code path, and `torch.use_deterministic_algorithms`. Asserts nothing.
"""
import argparse, hashlib, json, os, subprocess, sys, time
from pathlib import Path

PINNED = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2", "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
SETTINGS = {  # name -> environment changes against the pinned one
    "pinned (scripts/stage)": {},
    "pinned, again": {},
    "CPU kernels unpinned": {"ATEN_CPU_CAPABILITY": None, "MKL_CBWR": None, "ONEDNN_MAX_CPU_ISA": None},
    "ATEN kernels unpinned only": {"ATEN_CPU_CAPABILITY": None},
    "MKL code path unpinned only": {"MKL_CBWR": None},
    "1 thread": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
    "deterministic algorithms": {"REPER_DETERMINISTIC": "1"},
}

def worker(params: str, steps: int, images: int, dump: str):
    "One setting: train, caption, write hashes and the weights' path."
    import torch
    from reper.config import load_params, base_policy_path
    from reper.files import read_jsonl
    from reper.runtime import seed_everything
    from reper.items import images_by_id
    from reper.model import load_policy
    from reper.rpl import ReflectionExamples, train_rpl
    from reper.scenes import load_scenes
    from reper.generate import generate_answers, caption_dialogue
    if os.environ.get("REPER_DETERMINISTIC"): torch.use_deterministic_algorithms(True)
    P = load_params(params)
    threads = int(os.environ.get("OMP_NUM_THREADS", P.rpl.threads))
    rp = P.rpl.model_copy(update=dict(threads=threads, out_dir=dump + ".trainer", epochs=1.0))
    seed_everything(rp.seed)
    t0 = time.perf_counter()
    recs = read_jsonl("reflection/dialogues.jsonl", ("id", "messages", "turns"))[: steps * rp.batch_size * rp.gradient_accumulation_steps]
    ds = ReflectionExamples(recs, images_by_id(P.data, P.candidates.split, [r["id"] for r in recs])[1])
    model, proc = load_policy(base_policy_path(P), "cpu", P.model.dtype)
    train_rpl(model, proc, ds, rp, P.model.max_length, rp.out_dir, "cpu")
    train_s = time.perf_counter() - t0
    scenes, ims, _ = load_scenes(P.data.root, P.evaluate.split, limit=images)
    t0 = time.perf_counter()
    caps = [g["text"] for g in generate_answers(model.eval(), proc, [caption_dialogue(s.instruction) for s in scenes], ims, 0.0,
                                                 P.reflect.max_new_tokens, P.reflect.batch_size, P.model.max_length, progress=False)]
    gen_s = time.perf_counter() - t0
    state = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    torch.save(state, dump + ".pt")
    h = hashlib.sha256(b"".join(state[k].numpy().tobytes() for k in sorted(state))).hexdigest()[:16]
    Path(dump + ".json").write_text(json.dumps(dict(weights=h, captions=hashlib.sha256("\n".join(caps).encode()).hexdigest()[:16],
                                                    texts=caps, train_s=train_s, gen_s=gen_s, threads=torch.get_num_threads(),
                                                    capability=torch.backends.cpu.get_cpu_capability())))

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml"); ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--images", type=int, default=64); ap.add_argument("--out", default="metrics/determinism.json")
    ap.add_argument("--worker", default=None)
    a = ap.parse_args()
    if a.worker: return worker(a.params, a.steps, a.images, a.worker)
    import torch
    tmp, rows = Path(".determinism"), {}
    tmp.mkdir(exist_ok=True)
    for k, (name, change) in enumerate(SETTINGS.items()):
        env = {**os.environ, **PINNED, "TQDM_DISABLE": "1"}
        for key, v in change.items():
            if v is None: env.pop(key, None)
            else: env[key] = v
        dump = str(tmp / f"s{k}")
        subprocess.run([sys.executable, __file__, "--params", a.params, "--steps", str(a.steps), "--images", str(a.images), "--worker", dump],
                       env=env, check=True, capture_output=True)
        r = json.loads(Path(dump + ".json").read_text())
        if k == 0: ref_w, ref_t = torch.load(dump + ".pt"), r["texts"]
        w = torch.load(dump + ".pt")
        rows[name] = dict(capability=r["capability"], threads=r["threads"], train_s=round(r["train_s"], 1), gen_s=round(r["gen_s"], 1),
                          weights=r["weights"], captions=r["captions"],
                          max_weight_diff=float(max((w[n] - ref_w[n]).abs().max() for n in w)),
                          captions_differing=sum(x != y for x, y in zip(r["texts"], ref_t)))
        print(f"{name:32s} {r['capability']:8s} threads {r['threads']}  train {r['train_s']:6.1f} s  captions {r['gen_s']:5.1f} s  "
              f"weights {r['weights']}  max |Δw| {rows[name]['max_weight_diff']:.2e}  captions differing {rows[name]['captions_differing']}/{a.images}")
    out = dict(machine=torch.backends.cpu.get_cpu_capability(), steps=a.steps, images=a.images, pinned=PINNED, settings=rows)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1))

if __name__ == "__main__": main()
