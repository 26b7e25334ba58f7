"""Rerun each study's protocol with medgen on the built-in data, through the public CLI only.

    python experiments/run.py [--out experiments-output] [--profile small|tiny] [--only S000,S004] [--jobs N] [--force]

Every step is one ``medgen`` command; its output folder marks it done, so an interrupted run
picks up where it stopped (``--force`` starts again). ``--jobs N`` runs up to N steps at once,
each as soon as the steps whose outputs it reads are finished (a training before its evaluation,
a base run before the run that starts from it); each command then gets cores / N threads.
Several runners may share one OUT too: a step another runner is running is left to it (the
steps that read its output wait), not run twice. Each command, its wall time and exit code are
appended to OUT/commands.jsonl;
``experiments/results_page.py`` turns OUT into docs/results.md.
``make experiments`` runs both.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Step:
    study: str
    name: str
    args: list[str]
    done: str  # a path (relative to OUT) that exists once the step has finished
    env: dict = field(default_factory=dict)


def data_dir(builtin: str, size: list[int], n: int | None = None) -> str:
    return f"data/{builtin}-{'x'.join(map(str, size))}" + (f"-n{n}" if n else "")


def prepare(study: str, builtin: str, size: list[int], n: int | None = None, extra: list[str] | None = None) -> Step:
    out = data_dir(builtin, size, n)
    args = ["data", "prepare", "--source", f"builtin:{builtin}", "--size", *map(str, size), "--out", out]
    if n:
        args += ["--n", str(n)]
    return Step(study, f"prepare {out}", args + (extra or []), f"{out}/stats.json")


def train(study: str, run: str, preset: str, data: str, profile: str, *extra: str) -> Step:
    return Step(study, f"train {run}", ["train", preset, "--data", data, "--out", f"runs/{run}", "--profile", profile, *extra],
                f"runs/{run}/checkpoints/final/state.json")


def evaluate(study: str, run: str, *extra: str, tag: str = "evaluation") -> Step:
    return Step(study, f"evaluate {run} {tag}", ["evaluate", f"runs/{run}", *extra, "--json"], f"runs/{run}/{tag}.done")


def detect(study: str, run: str, *extra: str, out: str = "test") -> Step:
    return Step(study, f"detect {run} {out}", ["detect", f"runs/{run}", "--out", f"runs/{run}/detect/{out}", *extra],
                f"runs/{run}/detect/{out}/metrics.json")


def sizes(profile: str) -> dict[str, list[int]]:
    """The image sizes the presets' profiles prepare (small = 64x64, tiny = 32x32; the 3D sub-volumes)."""
    return {"2d": [64, 64] if profile != "tiny" else [32, 32], "3d": [8, 32, 32] if profile != "tiny" else [4, 16, 16]}


def scarce_steps(profile: str, data: str) -> list[Step]:
    """Scarce-class benchmark (issue 28): calcification cut to K real training images; each generator
    is trained on the other classes, then fine-tuned (--init-from) on exactly the K kept images
    (``data pick`` + ``--subset id=@FILE``), so it never sees a held-back image; ``medgen scarce``
    checks that and compares + classical augmentation, + synthetic, + both over 5 seeds."""
    steps = []
    for k in (20, 50):
        steps.append(Step("SCARCE", f"pick K={k}", ["data", "pick", data, "--where", "label=calcification", "--n", str(k),
                                                     "--out", f"kept-k{k}.txt"], f"kept-k{k}.txt"))
    for preset, tag in (("mammo-roi-ldm", "ldm"), ("vae-gan", "vaegan")):
        steps.append(train("SCARCE", f"scarce-{tag}-base", preset, data, profile, "--subset", "label=normal|mass"))
        for k in (20, 50):
            run = f"scarce-{tag}-k{k}"
            steps.append(train("SCARCE", run, preset, data, profile, "--subset", "label=calcification",
                               "--subset", f"id=@kept-k{k}.txt", "--init-from", f"runs/scarce-{tag}-base"))
            steps.append(Step("SCARCE", f"scarce {run}", ["scarce", f"runs/{run}", "--class", "calcification", "--k", str(k),
                                                          "--seeds", "5", "--json"], f"runs/{run}/scarce/calcification-K{k}.json"))
    return steps


def masks_steps(profile: str, lesions: str) -> list[Step]:
    """Mask-conditioned synthesis (issue 30): ``brain-lesion-mask-ddpm`` on all brain-lesion pairs, and one
    on K=8 lesion pairs only (``data pick`` + ``--subset id=@FILE``; trained for about as many optimiser
    steps as the full run, one batch per epoch), then the segmentation utility: rows real, real+synthetic,
    synthetic from the full run, and the K rows from the K-pair run, which is the only generator
    ``--seg-utility`` accepts for them (it saw no real pair outside the 8)."""
    seeds = "2" if profile == "tiny" else "3"
    return [
        train("MASKS", "masks-ddpm", "brain-lesion-mask-ddpm", lesions, profile),
        Step("MASKS", "pick K=8 lesion pairs", ["data", "pick", lesions, "--where", "label=glioma|meningioma|pituitary", "--n", "8",
                                                "--out", "masks-k8.txt"], "masks-k8.txt"),
        train("MASKS", "masks-ddpm-k8", "brain-lesion-mask-ddpm", lesions, profile, "--subset", "id=@masks-k8.txt",
              "--set", "train.epochs=2000", "--set", "train.val_every=500"),
        evaluate("MASKS", "masks-ddpm", "--seg-utility", "--k-run", "runs/masks-ddpm-k8", "--utility-seeds", seeds, tag="seg-utility"),
    ]


def plan(profile: str) -> list[Step]:
    s = sizes(profile)
    n_small = {"tiny": 120}.get(profile)  # tiny: a few images per class, seconds per step
    # sized for verdicts: >= 100 test images of S000's beta cohort (15 %) and of the scarce class
    n_phantom = n_small or 1700
    phantom_split = ["--split", "0.5,0.1,0.4"]
    phantom = data_dir("breast-phantom", s["2d"], n_phantom)
    lesions = data_dir("brain-lesions", s["2d"], n_small)
    vols = data_dir("mni152", s["3d"], n_small)
    ldm_sweep = "ddim:50,ddpm:250,ddpm:1000" if profile != "tiny" else "ddim:5,ddpm:10,ddpm:20"
    steps = [
        # S000: latent diffusion on mammography ROIs; experiment 1 (class 0, then fine-tune on beta)
        # against experiment 2 (beta only), FID at three sampling step counts, histograms.
        prepare("S000", "breast-phantom", s["2d"], n_phantom, phantom_split),
        train("S000", "s000-class0", "mammo-roi-ldm", phantom, profile, "--subset", "cohort=class0"),
        train("S000", "s000-beta-finetuned", "mammo-roi-ldm", phantom, profile, "--subset", "cohort=beta",
              "--init-from", "runs/s000-class0"),
        train("S000", "s000-beta-only", "mammo-roi-ldm", phantom, profile, "--subset", "cohort=beta"),
    ]
    for run in ("s000-beta-finetuned", "s000-beta-only"):
        steps.append(evaluate("S000", run, "--metrics", "reconstruction,fidelity,distribution,intensity,memorisation",
                              "--features", "domain,radiomics", "--sweep", ldm_sweep))
    # is fine-tuning from class 0 better than beta only? paired bootstrap of every metric's difference
    steps.append(Step("S000", "compare fine-tuned vs beta-only", ["compare", "runs/s000-beta-finetuned", "runs/s000-beta-only", "--json"],
                      "runs/s000-compare.done"))
    steps += scarce_steps(profile, phantom)
    # S002: 3D DDPM on MNI152 sub-volumes, MSE against L1 loss (the study's open question).
    steps.append(prepare("S002", "mni152", s["3d"], n_small))
    for loss in ("mse", "l1"):
        steps.append(train("S002", f"s002-{loss}", "dbt-ddpm-3d", vols, profile, "--set", f"model.loss={loss}"))
        steps.append(evaluate("S002", f"s002-{loss}", "--metrics", "intensity,memorisation,distribution"))
    # S003: anomaly detection on brain-lesions, trained on normal slices only: S003's autoencoder,
    # a VAE, the diffusion detector and the self-supervised segmenter, each with `medgen detect` defaults.
    steps.append(prepare("S003", "brain-lesions", s["2d"], n_small))
    steps += [
        train("S003", "s003-ae", "brain-ae-anomaly", lesions, profile),
        detect("S003", "s003-ae"),
        train("S003", "s003-vae", "brain-tumor-vae-pretrain", lesions, profile, "--subset", "label=none"),
        detect("S003", "s003-vae"),
        train("S003", "s003-ddpm", "brain-ddpm-anomaly", lesions, profile),
        detect("S003", "s003-ddpm"),
        train("S003", "s003-selfsup", "brain-selfsup-anomaly", lesions, profile),
        detect("S003", "s003-selfsup"),
    ]
    # S004: generators judged by a tumour classifier trained on real, synthetic and mixed data.
    steps += [
        # the class-conditional diffusion families beside the study's GANs and VAEs: latent and pixel
        # space. First because they take longest: with --jobs the short runs fill the other cores.
        train("S004", "s004-ddpm", "brain-tumor-ddpm", lesions, profile),
        train("S004", "s004-ldm", "brain-tumor-ldm", lesions, profile),
        train("S004", "s004-cgan", "brain-tumor-cgan", lesions, profile),
        train("S004", "s004-cwgan-gp", "brain-tumor-cwgan-gp", lesions, profile),
        train("S004", "s004-cvae", "brain-tumor-cvae", lesions, profile),
        train("S004", "s004-vae-pretrain", "brain-tumor-vae-pretrain", lesions, profile),
        train("S004", "s004-cvae-transfer", "brain-tumor-cvae-transfer", lesions, profile, "--init-from", "runs/s004-vae-pretrain"),
    ]
    for run in ("s004-ddpm", "s004-ldm", "s004-cgan", "s004-cwgan-gp", "s004-cvae", "s004-cvae-transfer"):
        steps.append(evaluate("S004", run, "--metrics", "fidelity,distribution,intensity,memorisation,utility", "--utility",
                              "--utility-seeds", "1" if profile == "tiny" else "3"))
    steps += masks_steps(profile, lesions)
    return steps


def select(steps: list[Step], only: set[str]) -> list[Step]:
    """The steps of the chosen studies, plus the data preparations they use: a data set prepared
    under one study may serve another (brain-lesions: S003 and S004)."""
    chosen = [s for s in steps if not only or s.study in only]
    prepared = lambda s: str(Path(s.done).parent)  # noqa: E731  (a prepare step's output folder)
    return [s for s in steps if s in chosen or (s.args[0] == "data" and any(prepared(s) in c.args for c in chosen))]


def source_commit() -> str | None:
    """The git commit of the medgen checkout this script belongs to (None outside a git clone).
    Asked at every step, not once: a checkout can move on during a two-hour run."""
    proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True)
    if proc.returncode != 0:
        return None
    return proc.stdout.strip() or None


def output_root(step: Step) -> str:
    """The folder or file a step writes (runs/NAME, data/NAME, or a top-level file such as a pick list)."""
    parts = Path(step.done).parts
    return "/".join(parts[:2]) if parts[0] in ("runs", "data") and len(parts) > 2 else step.done


def needs(step: Step, earlier: Step) -> bool:
    """Does STEP have to wait for EARLIER? Yes if it reads what EARLIER writes (a path among its
    arguments, also inside ``id=@FILE``) or writes into the same run folder."""
    root = output_root(earlier)
    if output_root(step) == root:
        return True
    refs = {a.rsplit("@", 1)[-1] for a in step.args}
    return any(r == root or r.startswith(root + "/") for r in refs)


_log_lock = threading.Lock()  # --jobs: steps finish in worker threads, one log line at a time


def run_step(step: Step, out: Path, log: Path, echo=print, jobs: int = 1) -> dict:
    """Run one step's command in OUT and append its record to LOG. With JOBS > 1 (steps side by side)
    the command gets cores / JOBS threads, unless the user set OMP_NUM_THREADS."""
    cmd = [sys.executable, "-m", "medgen", *step.args]
    shown = "medgen " + " ".join(step.args)
    echo(f"[{step.study}] {shown}")
    commit = source_commit()  # the code the step starts with (the checkout may move on while it runs)
    env = {**os.environ, **step.env}
    if jobs > 1 and "OMP_NUM_THREADS" not in os.environ:  # a user's own setting wins
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=out, capture_output=True, text=True, env=env)
    rec = {"study": step.study, "name": step.name, "command": shown, "seconds": round(time.time() - t0, 1),
           "returncode": proc.returncode, "commit": commit, "started": round(t0, 1)}
    if jobs > 1:  # run beside other steps: the results page then gives the wall time too
        rec["jobs"] = jobs
    if proc.returncode != 0:
        rec["error"] = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
    elif step.done.endswith(".done"):  # evaluate: keep its JSON answer beside the run
        (out / step.done).write_text(proc.stdout)
    with _log_lock, open(log, "a") as fh:
        fh.write(json.dumps(rec) + "\n")
    # the step is named again: with --jobs other steps' lines come in between
    echo(f"[{step.study}] {step.name}: {'ok' if proc.returncode == 0 else 'FAILED'} in {rec['seconds']:.0f} s" + ("" if proc.returncode == 0 else ": " + " | ".join(rec["error"])))
    return rec


def _lock_path(out: Path, step: Step) -> Path:
    path = out / ".locks" / (re.sub(r"[^A-Za-z0-9_.=-]+", "_", step.name) + ".lock")
    path.parent.mkdir(exist_ok=True)
    return path


def try_lock(out: Path, step: Step):
    """This step's lock in OUT as an open file (closing it releases the lock), or None while another runner holds it."""
    import fcntl

    handle = open(_lock_path(out, step), "a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


POLL_SECONDS = 5.0  # how often steps that another runner holds are looked at again


def run_steps(steps: list[Step], out: Path, jobs: int = 1) -> list[str]:
    """Up to JOBS steps at once, in plan order as far as each step's inputs allow (JOBS 1: one after
    the other). A step another runner holds is left to it and its dependants wait. A failed step's
    dependants still run, so each failure is reported where it shows. Returns the failed steps' names."""
    waits = [[j for j in range(i) if needs(steps[i], steps[j])] for i in range(len(steps))]
    pending, finished, failed, running = list(range(len(steps))), set(), [], {}
    held_elsewhere = set()  # steps another runner holds: looked at again every POLL_SECONDS

    def work(i, handle):
        try:
            return run_step(steps[i], out, out / "commands.jsonl", jobs=jobs)
        finally:
            handle.close()

    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        while pending or running:
            for i in list(pending):
                if len(running) >= jobs:
                    break
                if not all(j in finished for j in waits[i]):
                    continue
                step = steps[i]
                handle = try_lock(out, step)
                if handle is None:
                    if i not in held_elsewhere:
                        print(f"[{step.study}] {step.name}: another runner is running it; waiting for it")
                        held_elsewhere.add(i)
                    continue
                pending.remove(i)
                if (out / step.done).exists():
                    handle.close()
                    print(f"[{step.study}] {step.name}: done before, kept")
                    finished.add(i)
                    continue
                running[pool.submit(work, i, handle)] = i
            if not running:
                if pending:
                    time.sleep(POLL_SECONDS)  # only steps another runner holds are left
                continue
            done, _ = concurrent.futures.wait(running, timeout=POLL_SECONDS if held_elsewhere else None,
                                              return_when=concurrent.futures.FIRST_COMPLETED)
            for fut in done:
                i = running.pop(fut)
                finished.add(i)
                if fut.result()["returncode"] != 0:
                    failed.append(steps[i].name)
    return failed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="experiments-output", help="working folder (data, runs, commands.jsonl)")
    ap.add_argument("--profile", default="small", choices=["small", "tiny"], help="preset profile for every training")
    ap.add_argument("--only", default="", help="comma list of studies (S000,S002,S003,S004,SCARCE,MASKS); default all")
    ap.add_argument("--jobs", type=int, default=1, help="steps run at once, each when its inputs are ready (default 1)")
    ap.add_argument("--force", action="store_true", help="delete OUT first and run every step again")
    args = ap.parse_args(argv)
    if args.jobs < 1:
        ap.error("--jobs must be at least 1")
    out = Path(args.out).resolve()
    if args.force and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    meta = out / "experiments.json"
    if meta.exists() and json.loads(meta.read_text()).get("profile") != args.profile:
        sys.exit(f"error: {out} holds a {json.loads(meta.read_text())['profile']} run; use another --out or --force")
    meta.write_text(json.dumps({"profile": args.profile}))
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    t0 = time.time()
    steps = select(plan(args.profile), only)
    failed = run_steps(steps, out, args.jobs)
    print(f"finished in {time.time() - t0:.0f} s; {len(failed)} failed step(s)" + (": " + ", ".join(failed) if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
