"""The full CPU training step of the sixth session's code against the session's start (2088ae9),
alternated round by round in one process, so that the machine's load falls on both sides.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/paired_session_step.py [BATCHES] [ROUNDS]

"start" runs 2088ae9's training GRU (plugins/primus_stackrnn/gru.py with its own
primus_core/native.py, native_kernels.c and gru_scan.py, read from git into a temporary folder),
the first block unfolded (conv 1 on the GroupNorm's output) and the gradients freed after the
forward pass; "now" runs this checkout's. The rest of the step (losses, pools, optimiser) is the
same code on both sides. Prints the median of the rounds' speed-ups and both windows/s.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

START = "2088ae9"
FILES = {  # module name in the temporary folder: (path at START, import rewrites)
    "start_native": (
        "primus_core/native.py",
        [("from .paths import", "from primus_core.paths import")],
    ),
    "start_gru_scan": (
        "primus_core/data/gru_scan.py",
        [("from .. import native", "import start_native as native")],
    ),
    "start_gru": (
        "plugins/primus_stackrnn/gru.py",
        [
            ("from primus_core import native", "import start_native as native"),
            ("from primus_core.data.gru_scan import", "from start_gru_scan import"),
        ],
    ),
}


def load_start(folder: Path):
    root = Path(__file__).resolve().parents[1]

    def show(path: str) -> str:
        return subprocess.run(
            ["git", "show", f"{START}:{path}"], cwd=root, check=True, capture_output=True, text=True
        ).stdout

    (folder / "native_kernels.c").write_text(show("primus_core/native_kernels.c"))
    for name, (path, rewrites) in FILES.items():
        text = show(path)
        for old, new in rewrites:
            text = text.replace(old, new)
        (folder / f"{name}.py").write_text(text)
    sys.path.insert(0, str(folder))
    import start_gru

    return start_gru


def main(batches: list[int], rounds: int) -> None:
    import primus_core.components as components
    import primus_stackrnn.encoder as encoder_module
    import primus_stackrnn.gru as gru_now
    from primus_core.device import reuse_freed_memory

    components.registry()
    torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])
    reuse_freed_memory()
    folded = encoder_module.norm_then_conv
    with tempfile.TemporaryDirectory() as scratch:
        gru_start = load_start(Path(scratch))

        def configure(version: str) -> None:
            now = version == "now"
            encoder_module.gru_sequence = (gru_now if now else gru_start).gru_sequence
            encoder_module.norm_then_conv = folded if now else (lambda x, norm, conv: conv(norm(x)))

        for batch in batches:
            paired(batch, rounds, configure)


def paired(batch: int, rounds: int, configure) -> None:
    from primus_core.training.bench import synthetic_run
    from primus_core.training.trainer import build_optimizer

    device = torch.device("cpu")
    model, augs, source = synthetic_run(batch, device, windows=max(4 * batch, 1024))
    opt = build_optimizer(list(model.parameters()), "adam", 2e-4, 0.0, device, False)
    gen = torch.Generator().manual_seed(0)

    def step(version: str) -> None:
        x, teachers, masks, labels = source.batch(torch.randint(0, len(source), (batch,)))
        x_aug = x
        for aug in augs:
            x_aug = aug(x_aug, gen)
        if version == "now":
            opt.zero_grad(set_to_none=True)
        total, _ = model(x, x_aug, teachers, masks, labels, gather=False)
        if version == "start":
            opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()

    ratios, rates = [], {"start": [], "now": []}
    steps = max(3, 512 // batch)
    for r in range(rounds):
        seconds = {}
        for version in ("start", "now") if r % 2 == 0 else ("now", "start"):
            configure(version)
            step(version)
            begin = time.perf_counter()
            for _ in range(steps):
                step(version)
            seconds[version] = (time.perf_counter() - begin) / steps
            rates[version].append(batch / seconds[version])
        ratios.append(seconds["start"] / seconds["now"])
    print(
        f"batch {batch}: speed-up now/start {statistics.median(ratios):.3f} (median of "
        f"{rounds} rounds: {', '.join(f'{x:.2f}' for x in sorted(ratios))}); windows/s "
        f"start {statistics.median(rates['start']):.0f}, now {statistics.median(rates['now']):.0f}"
    )


if __name__ == "__main__":
    main(
        [int(b) for b in (sys.argv[1] if len(sys.argv) > 1 else "16,256").split(",")],
        int(sys.argv[2]) if len(sys.argv) > 2 else 8,
    )
