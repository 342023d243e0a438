"""A training job for tests/test_rpl.py, run as its own process: RPL on a repository copy's reflection dialogues.

python tests/rpl_job.py ROOT OUT [--kill-at STEP] [--resume]: trains with checkpoints every step and, with
--kill-at, dies (os._exit) right after the checkpoint of STEP is written, as a killed job would."""
import argparse, os, sys
from transformers import TrainerCallback

class KillAt(TrainerCallback):
    def __init__(self, step): self.step = step
    def on_save(self, args, state, control, **kw):
        if state.global_step == self.step: os._exit(9)

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("root"); ap.add_argument("out"); ap.add_argument("--kill-at", type=int); ap.add_argument("--resume", action="store_true")
    a = ap.parse_args()
    os.chdir(a.root)
    from reper.config import load_params
    from reper.files import read_jsonl
    from reper.runtime import seed_everything
    from reper.scenes import load_scenes
    from reper.model import load_policy, save_policy
    from reper.rpl import ReflectionExamples, train_rpl
    P = load_params("params.yaml")
    rp = P.rpl.model_copy(update=dict(save_steps=1, resume=a.resume, epochs=2.0, batch_size=2, lr=1e-3, threads=1))
    seed_everything(rp.seed)
    scenes, images, _ = load_scenes(P.data.root, P.candidates.split, P.data.on_bad_image, limit=P.candidates.n_images)
    ds = ReflectionExamples(read_jsonl("reflection/dialogues.jsonl"), {s.id: im for s, im in zip(scenes, images)})
    model, proc = load_policy(P.pretrain.out_dir)

    t = train_rpl(model, proc, ds, rp, P.model.max_length, a.out, "cpu", callbacks=[KillAt(a.kill_at)] if a.kill_at else [])
    save_policy(model, proc, f"{a.out}/policy")
    print("steps", t.state.global_step)
