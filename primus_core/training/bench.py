"""Measurements behind ``primus bench``: training-step, inference and data-loading throughput, side by side in one
run, with peak memory and the ratio to the encoder's compute bound on this device.

Each measurement runs in its own subprocess so that its peak memory is its own.
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch

from ..device import reuse_freed_memory
from ..errors import PrimusError

STEP_RECIPE = "primus-hapt"
EGOEXO4D_TRAIN_WINDOWS = 195_000  # one pretraining epoch of the paper's data


def matmul_gflops(device: torch.device, seconds: float = 1.0) -> float:
    """Measured matrix-multiply throughput at the GRU's shape (batch 256, 512 -> 1536), in the
    precision the training step runs in (float32 on CPUs, bfloat16 under autocast on GPUs): the
    better of torch's product and, on CPUs with MKL, the product with the weight packed once
    (what the encoder's inference scan runs), so that no path runs above its bound."""
    products = _bound_products(device)
    return max(_gflops(product, device, seconds / len(products)) for product in products)


def _bound_products(device: torch.device) -> list:
    from ..data.gru_scan import packed_product

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn(256, 512, device=device, dtype=dtype)
    w = torch.randn(1536, 512, device=device, dtype=dtype)
    products = [lambda: a @ w.t()]
    packed = packed_product(w, 256) if device.type == "cpu" else None
    if packed is not None:
        products.append(lambda: packed(a))
    return products


BOUND_EVERY_S = 0.5  # the figure's own timing between two samples of the bound
BOUND_SAMPLE_S = 0.1


def bound_sampler(device: torch.device) -> tuple[Callable[[], None], list[float]]:
    """(sample, samples): ``sample()`` measures the bound's matmul for ``BOUND_SAMPLE_S`` and
    appends its GFLOP/s to ``samples``. ``timed(..., between=sample)`` calls it between slices
    of a figure's timing, so that the bound and the figure are measured side by side: a
    machine whose speed drifts moves both (runs minutes apart here differ by up to 30 %). Its
    operands are made for each sample and freed after it, so that they add nothing to the
    figure's peak memory."""
    samples: list[float] = []

    def sample() -> None:
        products = _bound_products(device)
        share = BOUND_SAMPLE_S / len(products)
        samples.append(max(_gflops(product, device, share, warmup=1) for product in products))

    return sample, samples


def _gflops(product, device: torch.device, seconds: float, warmup: int = 3) -> float:
    for _ in range(warmup):
        product()
    sync(device)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(10):
            product()
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


def timed(
    fn,
    device: torch.device,
    min_seconds: float,
    min_iters: int = 3,
    between: Callable[[], None] | None = None,
) -> float:
    """Seconds per call after a warm-up call. ``between``, if given, runs after every
    ``BOUND_EVERY_S`` of calls, outside the timing (see ``bound_sampler``)."""
    fn()
    sync(device)
    count, spent, start = 0, 0.0, time.perf_counter()
    while count < min_iters or spent + time.perf_counter() - start < min_seconds:
        fn()
        count += 1
        if between is not None and time.perf_counter() - start >= BOUND_EVERY_S:
            sync(device)
            spent += time.perf_counter() - start
            between()
            start = time.perf_counter()
    sync(device)
    return (spent + time.perf_counter() - start) / count


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


def measure_step(
    batch: int,
    device: torch.device,
    seconds: float,
    variant: str = "eager",
    between: Callable[[], None] | None = None,
) -> dict:
    """The training step's windows/s; ``variant`` eager, or graph (the static step captured in a
    CUDA graph, train.step=graph); on CPUs the step's profile is measured too. ``between``:
    see ``timed``."""
    from .trainer import build_optimizer

    model, augs, source = synthetic_run(batch, device, windows=max(4 * batch, 1024))
    graph = variant == "graph"
    opt = build_optimizer(list(model.parameters()), "adam", 2e-4, 0.0, device, graph)
    gen = torch.Generator(device=device).manual_seed(0)
    use_amp = device.type == "cuda"
    dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else None
    static = None
    if graph:
        from .static_step import StaticStep

        static = StaticStep(model, opt, device, dtype, graph=True)

    def step(clock=None):
        clock = clock or _no_clock
        with clock("data"):
            idx = torch.randint(0, len(source), (batch,))
            x, teachers, masks, labels = source.batch(idx)
            x_aug = x
            for aug in augs:
                x_aug = aug(x_aug, gen)
        if static is not None:
            static(x, x_aug, teachers, masks, labels)
            return
        opt.zero_grad(set_to_none=True)  # as the trainer: before the forward pass
        with clock("forward"), torch.autocast(device.type, dtype=dtype, enabled=use_amp):
            total, _ = model(x, x_aug, teachers, masks, labels, gather=False)
        with clock("backward"):
            total.backward()
        with clock("optimiser"):
            opt.step()

    per_step = timed(step, device, seconds, between=between)
    result = {"windows_per_s": batch / per_step, "step_ms": per_step * 1e3, "variant": variant}
    if static is None:
        result["profile"] = step_profile(step, model, device, steps=3)
    return result


class _no_clock:
    def __init__(self, name: str):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def step_profile(step, model, device: torch.device, steps: int) -> dict[str, float]:
    """Share of the step's time in: GRU forward, the rest of the encoder's forward, losses (less
    the NN lookup), NN lookup, backward, optimiser, data. Measured with synchronised clocks
    around each part (hooks on the GRU and the encoder, a wrapper on the NN lookup)."""
    import contextlib

    spent: dict[str, float] = dict.fromkeys(
        ("data", "forward", "backward", "optimiser", "encoder", "gru", "nn lookup"), 0.0
    )

    @contextlib.contextmanager
    def clock(name: str):
        sync(device)
        start = time.perf_counter()
        try:
            yield
        finally:
            sync(device)
            spent[name] += time.perf_counter() - start

    def hooks(module: torch.nn.Module, name: str):
        starts: list[float] = []

        def before(*_):
            sync(device)
            starts.append(time.perf_counter())

        def after(*_):
            sync(device)
            spent[name] += time.perf_counter() - starts.pop()

        return [module.register_forward_pre_hook(before), module.register_forward_hook(after)]

    encoder = model.encoder
    handles = hooks(encoder, "encoder")
    grus = [m for m in encoder.modules() if isinstance(m, torch.nn.GRU)]
    for gru in grus:
        handles += hooks(gru, "gru")
    fused = sys.modules.get("primus_stackrnn.encoder")  # its CPU training path calls no module
    original_fused = getattr(fused, "gru_sequence", None)
    if original_fused is not None:

        def timed_fused(*args, **kwargs):
            with clock("gru"):
                return original_fused(*args, **kwargs)

        fused.gru_sequence = timed_fused
    wrapped = []
    for loss in model.losses.values():
        if hasattr(loss, "lookup"):
            original = loss.lookup

            def timed_lookup(batch, _original=original):
                with clock("nn lookup"):
                    return _original(batch)

            loss.lookup = timed_lookup
            wrapped.append(loss)
    try:
        for _ in range(steps):
            step(clock)
    finally:
        for handle in handles:
            handle.remove()
        for loss in wrapped:
            del loss.lookup
        if original_fused is not None:
            fused.gru_sequence = original_fused
    parts = {
        "GRU forward": spent["gru"],
        "other encoder forward": spent["encoder"] - spent["gru"],
        "losses": spent["forward"] - spent["encoder"] - spent["nn lookup"],
        "NN lookup": spent["nn lookup"],
        "backward": spent["backward"],
        "optimiser": spent["optimiser"],
        "data": spent["data"],
    }
    total = sum(parts.values()) or 1.0
    return {name: value / total for name, value in parts.items()}


def measure_inference(
    batch: int,
    device: torch.device,
    seconds: float,
    variant: str = "fp32",
    between: Callable[[], None] | None = None,
):
    """Windows/s of the encoder's forward pass in precision ``variant`` (fp32, bf16, int8). The
    fp32 row also times the other precisions against fp32 call by call (``paired_speedups``).
    ``between``: see ``timed``."""
    from ..components import create
    from ..data.embed import for_inference

    encoder = for_inference(create("encoder", "stacked-rnn"), variant, device)
    x = torch.randn(batch, 6, 250, device=device)

    @torch.no_grad()
    def run():
        encoder(x)

    per_call = timed(run, device, seconds, between=between)
    result = {"windows_per_s": batch / per_call, "variant": variant}
    if variant == "fp32":
        others = ["bf16"] + (["int8"] if device.type == "cpu" else [])
        result["paired_speedups"] = paired_speedups(batch, device, seconds, others)
    return result


def paired_speedups(
    batch: int, device: torch.device, seconds: float, variants: list[str], rounds: int = 5
) -> dict[str, float]:
    """Each variant's speed-up over fp32 inference, timed in one process round by round, fp32
    and the variant back to back (the median of the rounds' ratios): a change in the machine's
    load between two separate measurements does not enter the ratio."""
    import statistics

    from ..components import create
    from ..data.embed import for_inference

    encoder = create("encoder", "stacked-rnn")
    runs = {v: for_inference(encoder, v, device) for v in variants}
    runs["fp32"] = for_inference(encoder, "fp32", device)
    x = torch.randn(batch, 6, 250, device=device)
    share = seconds / (rounds * len(runs))
    ratios: dict[str, list[float]] = {v: [] for v in variants}
    with torch.no_grad():
        for _ in range(rounds):
            fp32 = timed(lambda: runs["fp32"](x), device, share, min_iters=2)
            for v in variants:
                ratios[v].append(fp32 / timed(lambda v=v: runs[v](x), device, share, min_iters=2))
    return {v: statistics.median(r) for v, r in ratios.items()}


def measure_loading(batch: int, device: torch.device, seconds: float, variant: str = "") -> dict:
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


MEASURES = {
    "step": measure_step,
    "inference": measure_inference,
    "loading": measure_loading,
    # the cost of a faster inference path is an evaluation (5-shot accuracy): it lives in
    # primus_core.evaluation, which builds on training, so it is named here and imported on use
    "quality": "primus_core.evaluation.quality:measure_quality",
}


def run_one(kind: str, batch: int, device: str, seconds: float, variant: str = "") -> dict:
    """Run one measurement in a subprocess; returns its figures and peak memory."""
    code = (
        "import json,sys; from primus_core.training.bench import child; "
        f"print(json.dumps(child({kind!r}, {batch}, {device!r}, {seconds}, {variant!r})))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode != 0:
        raise PrimusError(f"bench {kind} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def current_rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2**20


def child(kind: str, batch: int, device: str, seconds: float, variant: str = "") -> dict:
    dev = torch.device(device)
    import primus_core.components as components

    components.registry()  # plugins imported: what every primus process holds
    if kind == "step":  # torch's first optimiser imports torch._dynamo (about 160 MiB)
        torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])
        if dev.type == "cpu":  # as the trainer does
            reuse_freed_memory()
    baseline = current_rss_mib() if dev.type == "cpu" else 0.0
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    args = (variant,) if variant else ()
    measure = MEASURES[kind]
    if isinstance(measure, str):
        import importlib

        module, _, name = measure.partition(":")
        measure = getattr(importlib.import_module(module), name)
    if kind in ("step", "inference"):  # the bound in this process, side by side with the figure
        before = matmul_gflops(dev, seconds=min(1.0, seconds / 3))
        sample, samples = bound_sampler(dev)
        result = measure(batch, dev, seconds, *args, between=sample)
        result["matmul_gflops_before"] = before
        samples.append(before)
        result["matmul_gflops"] = statistics.median(samples)
        result["matmul_gflops_range"] = [min(samples), max(samples)]
        result["matmul_samples"] = len(samples)
    else:
        result = measure(batch, dev, seconds, *args)
    result["peak_mib"] = peak_memory_mib(dev)
    result["baseline_mib"] = baseline
    if dev.type == "cuda":
        try:
            result["gpu_util_pct"] = torch.cuda.utilization(dev)
        except Exception:  # needs pynvml; utilisation is then reported as unknown
            result["gpu_util_pct"] = None
    return result


def ceilings(gflops: float, macs: int) -> tuple[float, float]:
    """Windows/s of the training step and of inference at ``gflops``: a step runs 2 views,
    forward + backward ~ 3x the forward multiply-adds."""
    return gflops * 1e9 / (2 * macs * 2 * 3), gflops * 1e9 / (2 * macs)


def speedup(rows: dict, variant: str) -> float | None:
    """``variant``'s inference speed-up over fp32 at batch 256: timed alternately in one
    process where the fp32 row has it (``paired_speedups``), else the ratio of the two rows."""
    fp32, other = rows.get(("inference", 256, "fp32")), rows.get(("inference", 256, variant))
    if fp32 and variant in fp32.get("paired_speedups", {}):
        return fp32["paired_speedups"][variant]
    if fp32 and other and "windows_per_s" in other:
        return other["windows_per_s"] / fp32["windows_per_s"]
    return None


def check_targets(dev: torch.device, rows: list[dict], summary: dict) -> list[tuple[str, bool]]:
    """The project's speed and memory targets (issue 15) against this run's figures; a target
    whose row was not measured is missed."""
    row = {(r["measure"], r["batch"], r.get("variant", "")): r for r in rows}

    def rate(kind: str, batch: int, variant: str) -> float:
        return row.get((kind, batch, variant), {}).get("windows_per_s", 0.0)

    if dev.type == "cuda":
        epoch = summary.get("egoexo4d_epoch_s_batch16")
        return [
            ("graph step at batch 16 >= 5,000 windows/s", rate("step", 16, "graph") >= 5000),
            ("graph step at batch 256 >= 60,000 windows/s", rate("step", 256, "graph") >= 60000),
            ("EgoExo4D epoch at batch 16 under 40 s", epoch is not None and epoch < 40),
        ]
    step = row.get(("step", 256, "eager"), {})
    targets = [
        ("step at batch 256 >= 400 windows/s", rate("step", 256, "eager") >= 400),
        (
            "step at batch 256 >= 80% of the compute bound",
            step.get("of_compute_bound", 0.0) >= 0.8,
        ),
        ("step at batch 16 >= 300 windows/s", rate("step", 16, "eager") >= 300),
        (
            "peak memory of the step at batch 256 <= 300 MiB above the imports",
            bool(step) and step["peak_mib"] - step["baseline_mib"] <= 300,
        ),
        (
            "fp32 inference at batch 256 >= 90% of its compute bound",
            row.get(("inference", 256, "fp32"), {}).get("of_compute_bound", 0.0) >= 0.9,
        ),
    ]
    for variant in ("bf16", "int8"):
        ratio = speedup(row, variant)
        targets.append((f"{variant} inference at batch 256 >= 2x fp32", (ratio or 0.0) >= 2))
    return targets
