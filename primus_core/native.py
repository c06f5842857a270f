"""The CPU kernels of ``native_kernels.c``: compiled on first use, called through ctypes.

A GRU time step on a CPU is one product with W_hh and element-wise work that torch runs as
5 (forward) to 13 (backward) operators, each a pass over the step's tensors. The kernels do
that work in one pass per row; another pair max-pools for training, keeping one byte per
output for backward (``primus_stackrnn.pool``). They are an accelerator, not a dependency:
where no C compiler with OpenMP is found, or the build fails, or ``PRIMUS_NATIVE_KERNELS=0``,
``kernels()`` is None and the callers run torch's operators, which compute the same values
(the tests hold both paths to torch.nn.GRU).

The library is built once per source, compiler and CPU into ``$PRIMUS_HOME/kernels`` (written
under a temporary name, then renamed, so concurrent first uses are safe), with ``-march=native``
and glibc's vectorised exp and tanh. It is compiled and linked in two steps so that
``-ffast-math`` does not link crtfastmath, which would flush denormals for the whole process.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from .paths import primus_home

SOURCE = Path(__file__).with_name("native_kernels.c")
SWITCH = "PRIMUS_NATIVE_KERNELS"  # "0" (or "false", "no", "off") keeps torch's operators
COMPILE_FLAGS = ["-O3", "-march=native", "-ffast-math", "-fopenmp", "-fPIC"]
LINK_FLAGS = ["-shared", "-fopenmp"]
LIBRARIES = ["-lmvec", "-lm"]  # glibc's vectorised expf/tanhf (used under -ffast-math)

log = logging.getLogger(__name__)
_long, _ptr, _int = ctypes.c_long, ctypes.c_void_p, ctypes.c_int
SIGNATURES = {
    "primus_gru_forward_step": [_long] * 2 + [_ptr] * 11 + [_int],
    "primus_gru_backward_step": [_long] * 2 + [_ptr] * 8 + [_int],
    "primus_transpose": [_long] * 2 + [_ptr] * 2 + [_int],
    "primus_max_pool_forward": [_long] * 3 + [_ptr] * 3 + [_int],
    "primus_max_pool_backward": [_long] * 3 + [_ptr] * 3 + [_int],
}


def enabled() -> bool:
    return os.environ.get(SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


def _compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


def _build_key(compiler: str) -> str:
    """What the library depends on: the source, the flags, the compiler and this CPU."""
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout
    cpu = ""
    try:
        cpu = next(
            (
                line
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith(("flags", "Features"))
            ),
            "",
        )
    except OSError:
        pass
    parts = [
        SOURCE.read_bytes(),
        " ".join(COMPILE_FLAGS + LINK_FLAGS + LIBRARIES).encode(),
        version.encode(),
        cpu.encode(),
        platform.machine().encode(),
    ]
    return hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]


def build(folder: Path | None = None) -> Path:
    """Compile the kernels (if not already built for this source, compiler and CPU) and
    return the library's path. Raises RuntimeError with the compiler's message on failure."""
    compiler = _compiler()
    if compiler is None:
        raise RuntimeError("no C compiler found (cc, gcc or $CC)")
    folder = folder or primus_home() / "kernels"
    target = folder / f"gru-{_build_key(compiler)}.so"
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".build-") as scratch:
        obj, lib = Path(scratch) / "gru.o", Path(scratch) / "gru.so"
        for command in (
            [compiler, *COMPILE_FLAGS, "-c", str(SOURCE), "-o", str(obj)],
            [compiler, *LINK_FLAGS, str(obj), "-o", str(lib), *LIBRARIES],
        ):
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                message = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
                raise RuntimeError(f"{' '.join(command[:2])} ... failed: {message}")
        os.replace(lib, target)
    return target


@functools.cache
def _load() -> ctypes.CDLL | None:
    if platform.system() != "Linux":  # glibc's libmvec; elsewhere torch's operators
        return None
    try:
        library = ctypes.CDLL(str(build()))
    except (OSError, RuntimeError, subprocess.SubprocessError) as error:
        log.info("CPU kernels unavailable, using torch's operators: %s", error)
        return None
    for name, argtypes in SIGNATURES.items():
        getattr(library, name).argtypes = argtypes
        getattr(library, name).restype = None
    return library


def kernels() -> ctypes.CDLL | None:
    """The compiled kernels, or None where they are switched off or cannot be built."""
    return _load() if enabled() else None


def _address(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _pair(t: torch.Tensor) -> tuple[int | None, int | None]:
    """(float32 address, bfloat16 address) of a tensor, the other None."""
    return (None, t.data_ptr()) if t.dtype == torch.bfloat16 else (t.data_ptr(), None)


def forward_step(
    library: ctypes.CDLL,
    gi: torch.Tensor,
    gh: torch.Tensor,
    b_hn: torch.Tensor | None,
    h: torch.Tensor,
    h_next: torch.Tensor,
    h_next16: torch.Tensor | None = None,
    saved: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> None:
    """One step (see native_kernels.c): ``gi`` and ``gh`` (rows, 3 hidden) float32 or bfloat16,
    the input projection and the recurrent product; ``b_hn`` (hidden) or None; h, h_next
    (rows, hidden) float32; ``h_next16`` the new state in bfloat16 too; ``saved`` = (rz, n,
    hn) for backward, each or None. Every tensor contiguous (the caller's contract, not
    checked per step)."""
    rows, hidden = h.shape
    r_z, n, hn = saved if saved is not None else (None, None, None)
    library.primus_gru_forward_step(
        rows,
        hidden,
        *_pair(gi),
        *_pair(gh),
        _address(b_hn),
        h.data_ptr(),
        h_next.data_ptr(),
        _address(h_next16),
        _address(r_z),
        _address(n),
        _address(hn),
        torch.get_num_threads(),
    )


def backward_step(
    library: ctypes.CDLL,
    dh: torch.Tensor,
    through: torch.Tensor | None,
    grad_out: torch.Tensor | None,
    rz: torch.Tensor,
    gi_n: torch.Tensor,
    hn: torch.Tensor,
    h: torch.Tensor,
    g: torch.Tensor,
) -> None:
    """One backward step (see native_kernels.c); every tensor contiguous float32. The state's
    gradient is dh + through (+ grad_out); n is computed again from gi_n, r and hn. On return
    dh holds the state's gradient times z, g the gradients of the three gates' recurrent
    inputs, and gi_n n's pre-activation's gradient (in place)."""
    rows, hidden = dh.shape
    library.primus_gru_backward_step(
        rows,
        hidden,
        dh.data_ptr(),
        _address(through),
        _address(grad_out),
        rz.data_ptr(),
        gi_n.data_ptr(),
        hn.data_ptr(),
        h.data_ptr(),
        g.data_ptr(),
        torch.get_num_threads(),
    )


def _float32_contiguous(*tensors: torch.Tensor) -> None:
    for t in tensors:
        if t.dtype != torch.float32 or not t.is_contiguous() or t.device.type != "cpu":
            raise ValueError("the kernels' buffers must be contiguous float32 CPU tensors")


def _base_and_step(x: torch.Tensor) -> tuple[int, int]:
    """(address of x[0], bytes from x[t] to x[t + 1]) of a contiguous tensor."""
    return x.data_ptr(), x.stride(0) * x.element_size()


def forward_steps(
    library: ctypes.CDLL, hs: torch.Tensor, b_hn: torch.Tensor, rz: torch.Tensor, hn: torch.Tensor
) -> Callable[[int, torch.Tensor, torch.Tensor], None]:
    """``step(t, gi, gh)`` = ``forward_step(library, gi, gh, b_hn, hs[t], hs[t + 1], None,
    (rz[t], None, hn[t]))`` over one sequence's buffers: hs (steps + 1, rows, hidden), rz
    (steps, rows, 2 hidden), hn (steps, rows, hidden), contiguous float32, checked here once;
    gi and gh (rows, 3 hidden) contiguous float32 per call. The buffers' addresses are worked
    out once instead of through views at every step: the training step ran 1.05x and 1.14x
    faster at batch 16 (10 paired rounds, twice)."""
    _float32_contiguous(hs, b_hn, rz, hn)
    rows, hidden = hs.shape[1], hs.shape[2]
    call, threads, bias = library.primus_gru_forward_step, torch.get_num_threads(), b_hn.data_ptr()
    (h, h_step), (r_z, rz_step), (h_n, hn_step) = map(_base_and_step, (hs, rz, hn))

    def step(t: int, gi: torch.Tensor, gh: torch.Tensor) -> None:
        call(
            rows,
            hidden,
            gi.data_ptr(),
            None,
            gh.data_ptr(),
            None,
            bias,
            h + t * h_step,
            h + (t + 1) * h_step,
            None,
            r_z + t * rz_step,
            None,
            h_n + t * hn_step,
            threads,
        )

    return step


def backward_steps(
    library: ctypes.CDLL,
    dh: torch.Tensor,
    rz: torch.Tensor,
    hn: torch.Tensor,
    hs: torch.Tensor,
    gi_n: torch.Tensor,
    g: torch.Tensor,
) -> Callable[[int, int, torch.Tensor | None, torch.Tensor | None], None]:
    """``step(t, i, through, grad_out)`` = ``backward_step(library, dh, through, grad_out,
    rz[t], gi_n[i], hn[t], hs[t], g[i])`` over one sequence's buffers (gi_n and g: a chunk's,
    indexed by the step's place i in it), contiguous float32, checked here once; through and
    grad_out (rows, hidden) contiguous float32 or None per call. See ``forward_steps``."""
    _float32_contiguous(dh, rz, hn, hs, gi_n, g)
    rows, hidden = dh.shape
    call, threads, state_grad = (
        library.primus_gru_backward_step,
        torch.get_num_threads(),
        dh.data_ptr(),
    )
    (r_z, rz_step), (h_n, hn_step), (h, h_step), (n, n_step), (grad, g_step) = map(
        _base_and_step, (rz, hn, hs, gi_n, g)
    )

    def step(t: int, i: int, through: torch.Tensor | None, grad_out: torch.Tensor | None) -> None:
        call(
            rows,
            hidden,
            state_grad,
            None if through is None else through.data_ptr(),
            None if grad_out is None else grad_out.data_ptr(),
            r_z + t * rz_step,
            n + i * n_step,
            h_n + t * hn_step,
            h + t * h_step,
            grad + i * g_step,
            threads,
        )

    return step


def transposed(library: ctypes.CDLL | None, x: torch.Tensor) -> torch.Tensor:
    """``x.t().contiguous()`` for a 2-d tensor, by tiles where the kernels are there and ``x``
    is contiguous float32 on the CPU."""
    cpu_float32 = x.device.type == "cpu" and x.dtype == torch.float32
    if library is None or not cpu_float32 or not x.is_contiguous():
        return x.t().contiguous()
    rows, cols = x.shape
    out = x.new_empty(cols, rows)
    library.primus_transpose(rows, cols, x.data_ptr(), out.data_ptr(), torch.get_num_threads())
    return out


def max_pool(library: ctypes.CDLL, x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, offset) of max-pooling the last dimension of a contiguous float32 ``x`` by windows
    of ``k`` (stride k): ``offset`` (uint8) is each maximum's place in its window."""
    length = x.shape[-1]
    out = x.new_empty(*x.shape[:-1], length // k)
    offset = torch.empty(out.shape, dtype=torch.uint8)
    planes = x.numel() // length if length else 0
    library.primus_max_pool_forward(
        planes, length, k, x.data_ptr(), out.data_ptr(), offset.data_ptr(), torch.get_num_threads()
    )
    return out, offset


def max_pool_backward(
    library: ctypes.CDLL, grad_out: torch.Tensor, offset: torch.Tensor, length: int, k: int
) -> torch.Tensor:
    """The input's gradient of ``max_pool``: ``grad_out`` at each window's maximum, else 0."""
    grad_out = grad_out.contiguous()
    grad_in = grad_out.new_empty(*grad_out.shape[:-1], length)
    planes = grad_in.numel() // length if length else 0
    library.primus_max_pool_backward(
        planes,
        length,
        k,
        grad_out.data_ptr(),
        offset.data_ptr(),
        grad_in.data_ptr(),
        torch.get_num_threads(),
    )
    return grad_in
