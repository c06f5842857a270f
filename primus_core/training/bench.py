"""Measurements behind ``primus bench``: training-step, inference and data-loading throughput, side by side in one
run, with peak memory and the ratio to the encoder's compute bound on this device.

Each measurement runs in its own subprocess so that its peak memory is its own.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

import torch

from ..errors import PrimusError

STEP_RECIPE = "primus-hapt"
EGOEXO4D_TRAIN_WINDOWS = 195_000  # one pretraining epoch of the paper's data


def matmul_gflops(device: torch.device, seconds: float = 1.0) -> float:
    """Measured matrix-multiply throughput at the GRU's shape (batch 256, 512 -> 1536), in the
    precision the training step runs in (float32 on CPUs, bfloat16 under autocast on GPUs)."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn(256, 512, device=device, dtype=dtype)
    b = torch.randn(512, 1536, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(10):
            a @ b
        sync(device)
        count += 10
    return 2 * 256 * 512 * 1536 * count / (time.perf_counter() - start) / 1e9


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def timed(fn, device: torch.device, min_seconds: float, min_iters: int = 3) -> float:
    """Seconds per call after a warm-up call."""
    fn()
    sync(device)
    count, start = 0, time.perf_counter()
    while count < min_iters or time.perf_counter() - start < min_seconds:
        fn()
        count += 1
    sync(device)
    return (time.perf_counter() - start) / count


def synthetic_run(batch: int, device: torch.device, windows: int):
    """A PRIMUS step on real-sized inputs: random IMU windows, cached (precomputed) teacher
    embeddings; all three losses, scaling + permutation augmentations."""
    from ..registry.recipes import build_component, resolve_recipe
    from .trainer import BatchSource, Pretrainer, build_encoder

    loaded = resolve_recipe(STEP_RECIPE, [f"train.batch_size={batch}"])
    recipe = loaded.recipe

    class CachedTeacher:  # what the trainer reads from the embedding cache: a fixed tensor
        modality, output_size, identity = "text", 512, "bench"

    encoder = build_encoder(recipe, [CachedTeacher()])
    losses = {
        ref.type: build_component("loss", ref, f"losses.{i}") for i, ref in enumerate(recipe.losses)
    }
    augs = [build_component("augmentation", ref, "aug") for ref in recipe.augmentations]
    model = Pretrainer(encoder, losses, {k: 1.0 for k in losses}).to(device)
    gen = torch.Generator().manual_seed(0)
    imu = torch.randn(windows, 6, 250, generator=gen).numpy()
    text = torch.nn.functional.normalize(torch.randn(windows, 512, generator=gen), dim=1)
    source = BatchSource(imu, {"text": (text, torch.ones(windows, dtype=torch.bool))}, None, device)
    return model, augs, source


def measure_step(batch: int, device: torch.device, seconds: float) -> dict:
    model, augs, source = synthetic_run(batch, device, windows=max(4 * batch, 1024))
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)
    gen = torch.Generator(device=device).manual_seed(0)
    use_amp = device.type == "cuda"
    dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else None

    def step():
        idx = torch.randint(0, len(source), (batch,))
        x, teachers, masks, labels = source.batch(idx)
        x_aug = x
        for aug in augs:
            x_aug = aug(x_aug, gen)
        with torch.autocast(device.type, dtype=dtype, enabled=use_amp):
            total, _ = model(x, x_aug, teachers, masks, labels, gather=False)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()

    per_step = timed(step, device, seconds)
    return {"windows_per_s": batch / per_step, "step_ms": per_step * 1e3}


def measure_inference(batch: int, device: torch.device, seconds: float) -> dict:
    from ..components import create

    encoder = create("encoder", "stacked-rnn").to(device).eval()
    x = torch.randn(batch, 6, 250, device=device)

    @torch.no_grad()
    def run():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            encoder(x)

    per_call = timed(run, device, seconds)
    return {"windows_per_s": batch / per_call}


def measure_loading(batch: int, device: torch.device, seconds: float) -> dict:
    """Batches of real prepared HAPT windows (memory-mapped cache) onto the device."""
    from ..config import IMUContract
    from ..data.windows import load_windows
    from .trainer import BatchSource

    ws = load_windows("hapt", IMUContract())
    source = BatchSource(ws.imu, {}, None, device)
    gen = torch.Generator().manual_seed(0)

    def run():
        source.batch(torch.randint(0, len(source), (batch,), generator=gen))

    per_call = timed(run, device, seconds)
    return {"windows_per_s": batch / per_call}


MEASURES = {"step": measure_step, "inference": measure_inference, "loading": measure_loading}


def run_one(kind: str, batch: int, device: str, seconds: float) -> dict:
    """Run one measurement in a subprocess; returns its figures and peak memory."""
    code = (
        "import json,sys; from primus_core.training.bench import child; "
        f"print(json.dumps(child({kind!r}, {batch}, {device!r}, {seconds})))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode != 0:
        raise PrimusError(f"bench {kind} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def current_rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2**20


def child(kind: str, batch: int, device: str, seconds: float) -> dict:
    dev = torch.device(device)
    import primus_core.components as components

    components.registry()  # plugins imported: what every primus process holds
    baseline = current_rss_mib() if dev.type == "cpu" else 0.0
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    result = MEASURES[kind](batch, dev, seconds)
    result["peak_mib"] = peak_memory_mib(dev)
    result["baseline_mib"] = baseline
    if dev.type == "cuda":
        try:
            result["gpu_util_pct"] = torch.cuda.utilization(dev)
        except Exception:  # needs pynvml; utilisation is then reported as unknown
            result["gpu_util_pct"] = None
    return result


def check_targets(dev: torch.device, rows: list[dict], summary: dict) -> list[tuple[str, bool]]:
    """The project's speed and memory targets (issue 7) against this run's figures."""
    row = {(r["measure"], r["batch"]): r for r in rows}
    if dev.type == "cuda":
        return [("EgoExo4D epoch under 5 s", summary["egoexo4d_epoch_s"] < 5)]
    step = row[("step", 256)]
    return [
        ("step at batch 256 >= 400 windows/s", step["windows_per_s"] >= 400),
        ("step at batch 256 >= 80% of the compute bound", step["of_compute_bound"] >= 0.8),
        ("peak memory of the step at batch 256 <= 1 GiB", step["peak_mib"] <= 1024),
        (
            "inference at batch 256 >= 3,000 windows/s",
            row[("inference", 256)]["windows_per_s"] >= 3000,
        ),
    ]
