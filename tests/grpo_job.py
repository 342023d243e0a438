"""A training job for tests/test_online.py, run as its own process: GRPO on a repository copy's reflection-split images.

python tests/grpo_job.py ROOT OUT [--kill-at STEP] [--resume]: trains with checkpoints every step and, with
--kill-at, dies (os._exit) right after the checkpoint of STEP is written, as a killed job would."""
import argparse, json, os
from rpl_job import KillAt

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("root"); ap.add_argument("out"); ap.add_argument("--kill-at", type=int); ap.add_argument("--resume", action="store_true")
    a = ap.parse_args()
    os.chdir(a.root)
    from reper.config import load_params
    from reper.runtime import seed_everything
    from reper.scenes import load_scenes
    from reper.model import load_policy, save_policy
    from reper.grpo import prompt_dataset, grpo_rewards, train_grpo
    P = load_params("params.yaml")
    gp = P.grpo.model_copy(update=dict(save_steps=1, resume=a.resume, steps=4, lr=1e-3, threads=1, max_new_tokens=12))
    seed_everything(gp.seed)
    scenes, images, _ = load_scenes(P.data.root, P.candidates.split, P.data.on_bad_image, limit=gp.n_images)
    model, proc = load_policy(P.pretrain.out_dir)
    rewards = grpo_rewards(gp, scenes) | {"length": (lambda completions, **kw: [len(c[0]["content"]) / 20 for c in completions], 1.0)}  # differs within a group
    t = train_grpo(model, proc, prompt_dataset(scenes, images), rewards, gp, a.out, "cpu", callbacks=[KillAt(a.kill_at)] if a.kill_at else [])
    save_policy(model, proc, f"{a.out}/policy")
    counts = t.token_counts()
    open(f"{a.out}/counts.json", "w").write(json.dumps(counts))
    print("steps", t.state.global_step)
