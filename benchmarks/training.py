"""Benchmark a round's wall time against the optimizer steps it buys.

On the real TEM data ($AXAL_DATA/tem_mouse_corpuscallosum) and the default recipe, prints one
JSON line:

  bare_steps_per_s   optimizer steps/s of the same model, batch, loss and optimizer in a plain
                     PyTorch loop on pre-made tensors (the ceiling); measured before and after
                     the round, averaged
  round_steps_per_s  the steps of one real round (round 1 of a run: training with its collapse
                     check, test evaluation, acquisition, checkpoint and results) divided by the
                     round's whole wall time
  ratio              round_steps_per_s / bare_steps_per_s (target >= 0.75)
  split_s            where the round's seconds went: steps (forward, backward, optimizer inside
                     Lightning), data (waiting for the next batch: patch sampling and
                     augmentation), collapse_check, test, acquisition, other (trainer set-up,
                     checkpoint, results, logging)

Usage: python benchmarks/training.py [--threads 2] [key=value Hydra overrides ...]
e.g.   python benchmarks/training.py strategy=bald trainer.steps=200

Contention: ``--compete N`` times only the bare loop (in subprocesses, --seconds each), quiet and
beside N busy processes, with OpenMP spinning (ACTIVE) and sleeping (PASSIVE, axal's default),
and prints steps/s against the quiet rate and against the fair share cores / (N + 1).

Precision: ``--precision`` times the bare loop per model (``--models``, conf/model) in fp32,
channels_last, bf16 autocast, bf16 + channels_last and torch.compile, 1 thread, each model in
its own process. The settings take turns (``--reps`` rounds of ``--seconds`` each, the order
rotating), so a noisy machine slows them alike; it prints per setting the median steps/s and
the median of its per-round ratio to fp32. torch.compile is timed in a second phase against
fp32 eager; a compile that fails, or exceeds ``--compile-timeout``, is recorded, not fatal.

Instruction set: ``--isa`` trains the bare loop ``--isa-steps`` steps from seed 0, 1 thread, once
per setting of ISAS (native; oneDNN capped at AVX2; ATen, oneDNN and MKL all capped at AVX2),
each in its own process, ``--reps`` times in rotating order. It prints per setting the median
steps/s and its ratio to native, whether its repeats trained identical weights (the run-to-run
determinism the comparison needs; null with one repeat), and the largest parameter difference
and final loss against native: whether the instruction set alone moves the floats of one
config, seed and thread count, and what capping it would cost.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import lightning as L
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hydra import compose, initialize_config_dir  # noqa: E402

import axal.rounds as rounds  # noqa: E402
import axal.simulation as simulation  # noqa: E402
import axal.training as training  # noqa: E402
from axal.domain import TASKS  # noqa: E402
from axal.environment import ISA_SETTINGS, cpu_features, cpu_model  # noqa: E402
from axal.settings import build_model  # noqa: E402
from axal.threads import usable_cpus  # noqa: E402

DEFAULTS = ["dataset=tem", "strategy=random", "logger=none", "trainer.progress=false"]


def compose_cfg(overrides: list[str]):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=DEFAULTS + overrides)


def bare_steps_per_s(cfg, steps: int, seconds: float | None = None) -> float:
    """Steps/s of a plain loop: same network, batch, patch size, loss and Adam; no data work."""
    L.seed_everything(0, verbose=False)
    model = build_model(cfg, TASKS[cfg.task])
    opt = torch.optim.Adam(model.parameters(), lr=cfg.model.module.lr)
    b, p = cfg.dataset.batch_size, cfg.dataset.patch_size
    x = torch.rand(b, 1, p, p)
    y = (torch.rand(b, p, p) > 0.6).long()
    model.train()
    for _ in range(3):  # warm-up: first passes allocate
        opt.zero_grad()
        model.loss_fn(model(x), y).backward()
        opt.step()
    start = time.perf_counter()
    done = 0
    while done < steps and (seconds is None or time.perf_counter() - start < seconds):
        opt.zero_grad(set_to_none=True)
        loss = model.loss_fn(model(x), y)
        loss.backward()
        opt.step()
        done += 1
    return done / (time.perf_counter() - start)


class StepTimer(L.Callback):
    """Seconds inside training steps, and waiting for batches between them."""

    def __init__(self) -> None:
        self.steps = self.data = 0.0
        self._mark: float | None = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._mark = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        now = time.perf_counter()
        self.data += now - (self._mark or now)
        self._mark = now

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        self.steps += now - (self._mark or now)
        self._mark = now


def measure_round(cfg) -> dict:
    """Run 3 rounds in a temporary folder; time round 1 (a middle round: it acquires)."""
    writes: list[float] = []
    timers: dict[int, StepTimer] = {}
    checks: list[float] = []
    tests: list[float] = []
    real_write, real_fit, real_check = (
        simulation.atomic_write_json,
        training.fit_round,
        training.class_fractions,
    )
    real_test = L.Trainer.test

    def write(path, obj):
        real_write(path, obj)
        writes.append(time.perf_counter())

    def fit(cfg_, dm, make_model, seed, steps, callbacks=None, **kw):
        timer = StepTimer()
        timers[len(timers)] = timer
        return real_fit(cfg_, dm, make_model, seed, steps, list(callbacks or []) + [timer], **kw)

    def check(model, dm):
        t0 = time.perf_counter()
        out = real_check(model, dm)
        checks.append(time.perf_counter() - t0)
        return out

    def test(self, *args, **kw):
        t0 = time.perf_counter()
        out = real_test(self, *args, **kw)
        tests.append(time.perf_counter() - t0)
        return out

    simulation.atomic_write_json, rounds.fit_round, training.class_fractions = write, fit, check
    L.Trainer.test = test
    try:
        with tempfile.TemporaryDirectory() as tmp:
            results = simulation.run(cfg, tmp)
    finally:
        simulation.atomic_write_json, rounds.fit_round, training.class_fractions = (
            real_write,
            real_fit,
            real_check,
        )
        L.Trainer.test = real_test
    # writes: the initial record, then one per round
    wall = writes[2] - writes[1]
    record = results["rounds"][1]
    timer = timers[1]
    split = {
        "steps": timer.steps,
        "data": timer.data,
        "collapse_check": checks[1],
        "test": tests[1],  # acquisition is its own call after the test (axal.rounds.acquire_on)
        "acquisition": record["acquire_seconds"],
    }
    split["other"] = wall - sum(split.values())
    return {
        "steps": record["steps"],
        "restarts": record["restarts"],
        "wall": wall,
        "split_s": {k: round(v, 2) for k, v in split.items()},
    }


PRECISIONS = {  # name: (channels_last, autocast dtype)
    "fp32": (False, None),
    "channels_last": (True, None),
    "bf16": (False, torch.bfloat16),
    "bf16_channels_last": (True, torch.bfloat16),
}


def _training_step(cfg, channels_last: bool, dtype, compiled: bool = False):
    """One optimizer step of the bare loop in this setting, as a closure (its own model, on
    ``step.model``) that returns the step's loss."""
    L.seed_everything(0, verbose=False)
    cfg = cfg.copy()
    cfg.model.module.channels_last = channels_last
    model = build_model(cfg, TASKS[cfg.task])
    net = torch.compile(model.net) if compiled else model.net
    opt = torch.optim.Adam(model.parameters(), lr=cfg.model.module.lr)
    b, p = cfg.dataset.batch_size, cfg.dataset.patch_size
    x = torch.rand(b, 1, p, p)
    x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    y = (torch.rand(b, p, p) > 0.6).long()
    model.train()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            loss = model.loss_fn(net(x), y)
        loss.backward()
        opt.step()
        return loss.detach()

    step.model = model
    return step


def _turns(names: list[str], reps: int):
    """(rep, name) for ``reps`` rounds of every name, each round starting one name later, so
    that a machine growing busier or quieter slows every setting alike."""
    for rep in range(reps):
        k = rep % len(names)
        for name in names[k:] + names[:k]:
            yield rep, name


def _interleaved(steps: dict, reps: int, seconds: float) -> dict:
    """Median steps/s per setting, and the median ratio to the first setting's in each round."""
    rates: dict[str, list[float]] = {name: [] for name in steps}
    names = list(steps)
    for _, name in _turns(names, reps):
        start, done = time.perf_counter(), 0
        while done < 2 or time.perf_counter() - start < seconds:
            steps[name]()
            done += 1
        rates[name].append(done / (time.perf_counter() - start))
    ref = rates[names[0]]
    median = statistics.median
    return {
        name: {
            "steps_per_s": round(median(r), 3),
            "vs_" + names[0]: round(median([a / b for a, b in zip(r, ref)]), 3),
            "per_round": [round(v, 3) for v in r],
        }
        for name, r in rates.items()
    }


def precision_child(model: str, reps: int, seconds: float, compile_: bool) -> None:
    """Print one JSON line of eager settings, then (``compile_``) one of torch.compile."""
    cfg = compose_cfg([f"model={model}"])
    steps = {name: _training_step(cfg, cl, dtype) for name, (cl, dtype) in PRECISIONS.items()}
    for step in steps.values():  # warm-up: first passes allocate
        for _ in range(3):
            step()
    print(json.dumps({"eager": _interleaved(steps, reps, seconds)}), flush=True)
    if not compile_:
        return
    start = time.perf_counter()
    try:
        compiled = _training_step(cfg, False, None, compiled=True)
        for _ in range(3):  # the first call compiles forward and backward
            compiled()
    except Exception as err:  # an unusable compiler is a result, not a crash
        print(json.dumps({"compile_error": f"{type(err).__name__}: {err}"[:500]}), flush=True)
        return
    compile_s = time.perf_counter() - start
    table = _interleaved({"fp32": steps["fp32"], "compile": compiled}, reps, seconds)
    print(json.dumps({"compile_s": round(compile_s, 1), "compile": table["compile"]}), flush=True)


def precision(models: list[str], reps: int, seconds: float, compile_timeout: float | None) -> dict:
    """:func:`precision_child` per model, each in a fresh 1-thread process (no compile when
    ``compile_timeout`` is None; the compile phase is stopped after that many seconds)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    table: dict[str, dict] = {}
    for model in models:
        args = ["--precision-child", model, "--reps", str(reps), "--seconds", str(seconds)]
        args += ["--no-compile"] if compile_timeout is None else []
        cmd = [sys.executable, __file__, "--threads", "1", *args]
        start, row = time.perf_counter(), {"load_avg_1m_before": os.getloadavg()[0]}
        child = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
        timer = None
        for line in child.stdout:
            if not line.startswith("{"):
                continue
            row.update(json.loads(line))
            if "eager" in line and compile_timeout is not None:  # the compile phase begins
                timer = threading.Timer(compile_timeout, child.kill)
                timer.start()
        child.wait()
        if timer is not None:
            timer.cancel()
            if child.returncode != 0 and "compile" not in row and "compile_error" not in row:
                row["compile_error"] = f"stopped: not compiled and timed in {compile_timeout:.0f} s"
        row["wall_s"] = round(time.perf_counter() - start, 1)
        table[model] = row
    return {"threads": 1, "reps": reps, "seconds_per_rep": seconds, "models": table}


# name: environment of the child process. Each library picks its kernels' instruction set once,
# when it loads: ATen (ATEN_CPU_CAPABILITY), oneDNN, which runs the convolutions
# (ONEDNN_MAX_CPU_ISA), and MKL, which runs the matmuls (MKL_CBWR). AVX2 is the widest set
# that AVX-512 and AVX2-only processors share.
ISAS = {
    "native": {},
    "onednn_avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    "all_avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"},
}


def isa_child(steps: int, out: str, overrides: list[str]) -> None:
    """``steps`` steps of the bare loop from seed 0; the weights to ``out``, one JSON line."""
    step = _training_step(compose_cfg(overrides), False, None)
    start = time.perf_counter()
    for _ in range(steps):
        loss = step()
    rate = steps / (time.perf_counter() - start)
    torch.save({k: v.detach() for k, v in step.model.named_parameters()}, out)
    capability = torch.backends.cpu.get_cpu_capability()
    print(json.dumps({"steps_per_s": rate, "loss": float(loss), "cpu_capability": capability}))


def isa(steps: int, reps: int, overrides: list[str]) -> dict:
    """:func:`isa_child` per setting of ISAS, ``reps`` times each in rotating order."""
    names = list(ISAS)
    load = os.getloadavg()[0]  # other work on the machine: read the ratios, not the rates
    runs: dict[str, list[dict]] = {name: [] for name in names}
    # native is what this processor picks by itself: no cap axal records is passed on
    base = {k: v for k, v in os.environ.items() if k not in ISA_SETTINGS}
    base.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    envs = {name: {**base, **ISAS[name]} for name in names}
    with tempfile.TemporaryDirectory() as tmp:
        for rep, name in _turns(names, reps):
            out = str(Path(tmp, f"{name}-{rep}.pt"))
            cmd = [sys.executable, __file__, "--threads", "1", "--isa-child", out]
            cmd += ["--isa-steps", str(steps), *overrides]
            done = subprocess.run(cmd, env=envs[name], check=True, capture_output=True, text=True)
            row = json.loads(done.stdout.strip().splitlines()[-1])
            row["weights"] = torch.load(out)
            runs[name].append(row)
    native = runs["native"][0]["weights"]

    def max_diff(a: dict, b: dict) -> float:
        return max(float((a[k].float() - b[k].float()).abs().max()) for k in a if a[k].numel())

    def same(a: dict, b: dict) -> bool:
        return all(torch.equal(a[k], b[k]) for k in a)

    rate0 = statistics.median(r["steps_per_s"] for r in runs["native"])
    table = {}
    for name, rows in runs.items():
        rate = statistics.median(r["steps_per_s"] for r in rows)
        table[name] = {
            "env": ISAS[name],
            "cpu_capability": rows[0]["cpu_capability"],
            "steps_per_s": round(rate, 3),
            "vs_native": round(rate / rate0, 3),
            "repeats_identical": (
                all(same(rows[0]["weights"], r["weights"]) for r in rows[1:])
                if len(rows) > 1
                else None
            ),
            "identical_to_native": same(rows[0]["weights"], native),
            "max_abs_param_diff_vs_native": max_diff(rows[0]["weights"], native),
            "final_loss": [r["loss"] for r in rows],
        }
    return {
        "steps": steps,
        "reps": reps,
        "threads": 1,
        "overrides": overrides,
        "load_avg_1m_before": load,
        "cpu": cpu_model(),
        "cpu_features": cpu_features(),
        "isas": table,
    }


def _bare_in_child(policy: str, threads: int, seconds: float, overrides: list[str]) -> float:
    """Bare steps/s in a fresh process: OpenMP reads its wait policy once, when torch loads."""
    env = dict(
        os.environ, OMP_WAIT_POLICY=policy, KMP_BLOCKTIME="0" if policy == "PASSIVE" else "200"
    )
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    cmd = [sys.executable, __file__, "--bare", str(seconds), "--threads", str(threads), *overrides]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def compete(n: int, threads: int, seconds: float, overrides: list[str]) -> dict:
    """The bare loop quiet and beside ``n`` busy processes, per OpenMP wait policy."""
    cores = usable_cpus()
    fair = cores / (n + 1)
    table = {}
    for policy in ("ACTIVE", "PASSIVE"):
        load = os.getloadavg()[0]  # other work on the machine: "quiet" is only as quiet as this
        quiet = _bare_in_child(policy, threads, seconds, overrides)
        busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
        try:
            loaded = _bare_in_child(policy, threads, seconds, overrides)
        finally:
            for proc in busy:
                proc.kill()
                proc.wait()
        table[policy] = {
            "load_avg_1m_before": load,
            "quiet_steps_per_s": round(quiet, 3),
            "loaded_steps_per_s": round(loaded, 3),
            "vs_quiet": round(loaded / quiet, 3),
            "vs_fair_share": round(loaded / (quiet * fair / cores), 3),
        }
    return {
        "cores": cores,
        "competitors": n,
        "threads": threads,
        "fair_share_cores": round(fair, 3),
        "policies": table,
        "passive_quiet_vs_active_quiet": round(
            table["PASSIVE"]["quiet_steps_per_s"] / table["ACTIVE"]["quiet_steps_per_s"], 3
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=None, help="default: usable CPUs")
    parser.add_argument("--compete", type=int, default=None, help="busy processes beside")
    parser.add_argument("--seconds", type=float, default=20.0, help="per --compete measurement")
    parser.add_argument("--precision", action="store_true", help="precision table per model")
    parser.add_argument("--models", default="default,tiny,resnet18,unet_paper")
    parser.add_argument("--reps", type=int, default=5, help="rounds of --precision settings")
    parser.add_argument("--no-compile", action="store_true", help="--precision without compile")
    parser.add_argument("--compile-timeout", type=float, default=300.0)
    parser.add_argument("--precision-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--bare", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--isa", action="store_true", help="instruction-set caps: floats, speed")
    parser.add_argument("--isa-steps", type=int, default=30, help="steps per --isa run")
    parser.add_argument("--isa-child", default=None, help=argparse.SUPPRESS)
    args, overrides = parser.parse_known_args()
    args.threads = args.threads or usable_cpus()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("AXAL_DATA", str(ROOT.parent / "shared" / "data"))
    if args.bare is not None:  # a child of --compete
        print(bare_steps_per_s(compose_cfg(overrides), 10**9, seconds=args.bare))
        return
    if args.isa_child is not None:
        isa_child(args.isa_steps, args.isa_child, overrides)
        return
    if args.isa:
        reps = args.reps if "--reps" in sys.argv else 2
        print(json.dumps(isa(args.isa_steps, reps, overrides)))
        return
    if args.precision_child is not None:
        precision_child(args.precision_child, args.reps, args.seconds, not args.no_compile)
        return
    if args.precision:
        seconds = args.seconds if "--seconds" in sys.argv else 3.0
        models = args.models.split(",")
        timeout = None if args.no_compile else args.compile_timeout
        print(json.dumps(precision(models, args.reps, seconds, timeout)))
        return
    if args.compete is not None:
        print(json.dumps(compete(args.compete, args.threads, args.seconds, overrides)))
        return
    cfg = compose_cfg(overrides + ["al.rounds=3", "trainer.max_restarts=0"])
    steps = int(cfg.trainer.steps)
    bare_before = bare_steps_per_s(cfg, steps)
    measured = measure_round(cfg)
    bare_after = bare_steps_per_s(cfg, steps)
    bare = (bare_before + bare_after) / 2
    round_rate = measured["steps"] / measured["wall"]
    print(
        json.dumps(
            {
                "dataset": cfg.dataset.name,
                "strategy": cfg.strategy.name,
                "model": cfg.model.net.get("encoder_name", cfg.model.net._target_),
                "patch_size": cfg.dataset.patch_size,
                "batch_size": cfg.dataset.batch_size,
                "pixel_size": cfg.dataset.pixel_size,
                "threads": args.threads,
                "steps": measured["steps"],
                "bare_steps_per_s": round(bare, 3),
                "bare_before_after": [round(bare_before, 3), round(bare_after, 3)],
                "round_steps_per_s": round(round_rate, 3),
                "ratio": round(round_rate / bare, 3),
                "round_wall_s": round(measured["wall"], 2),
                "split_s": measured["split_s"],
            }
        )
    )


if __name__ == "__main__":
    main()
