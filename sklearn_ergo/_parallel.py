"""The one chunked, joblib-parallel driver of every per-sample computation.

Per-sample losses and gradients add up, so a batch is split into chunks of
rows that are processed independently and summed.  A chunk's tape is
``O((m + n) L)`` per sample, so the chunk size bounds the memory, and
cache-sized chunks keep the elementwise steps at cache speed.
"""

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from joblib import effective_n_jobs
from joblib.parallel import get_active_backend
from sklearn.utils import gen_even_slices
from sklearn.utils.parallel import Parallel, delayed
from threadpoolctl import ThreadpoolController

try:  # a private module: without it, n_jobs=None keeps joblib's meaning
    from joblib._parallel_backends import LokyBackend, ThreadingBackend

    _DEFAULT_BACKENDS = (LokyBackend, ThreadingBackend)
except ImportError:  # pragma: no cover
    _DEFAULT_BACKENDS = ()

# Tape memory per chunk (bytes).  A chunk's tape is written once per layer
# forward and read once backward: while it stays in the last-level cache the
# elementwise steps run at cache speed; with 64 MiB tapes every layer streams
# from DRAM and a gradient was 1.1-1.3x slower (benchmarks/README.md).
# Memory per worker is bounded by it, whatever N.
TAPE_BYTES = 16 * 2**20
# Working set per chunk of a forward pass without tape (prediction): about
# three layers' iterates, kept within a core's L2 cache.
FORWARD_BYTES = 2 * 2**20
# Fewest primal values per chunk: below, the per-layer Python overhead and
# tiny GEMMs dominate.  32 patches of 8x8; one image, whose many positions
# already make large products (its tape can exceed the budget on its own).
_MIN_CHUNK_VALUES = 32 * 64
# The same when the workers are threads of this process (the default): they
# queue for the GIL between their short elementwise passes, so their chunks
# are larger.  With two threads, N = 4096, L = 50 and 64 x 64, 1024 rows
# instead of the budget's 293 / 512 made a gradient 1.1-1.6x faster
# (benchmarks/README.md); processes do not share the GIL, and one thread
# gained nothing, so both keep the budget's chunks.
_MIN_THREAD_CHUNK_VALUES = 1024 * 64
# ... but never beyond this tape per chunk (unless one sample's exceeds it):
# deep unrolls of wide operators have large tapes per sample, and 1024 rows
# of 256 x 144 at L = 50 (167 MB) were 1.2x slower than 512 on two threads.
MAX_TAPE_BYTES = 64 * 2**20


def workers(n_jobs):
    """``(n_workers, Parallel keywords)`` for ``n_jobs``.

    ``None`` uses every core, in threads of this process, unless a
    ``joblib.parallel_config`` says otherwise (another backend, such as dask,
    or an ``n_jobs``): the chunks' matrix products and elementwise updates
    release the GIL, so threads parallelise them without the start-up and
    memory copies of processes (``benchmarks/bench_gradient.py --threads 2``
    measures the default against one core).  An explicit ``n_jobs`` is
    joblib's, as in scikit-learn.
    """
    backend, configured = get_active_backend()
    if n_jobs is None and configured is None:
        if isinstance(backend, _DEFAULT_BACKENDS):
            return effective_n_jobs(-1), {"n_jobs": -1, "backend": "threading"}
    return effective_n_jobs(n_jobs), {"n_jobs": n_jobs}


def chunk_slices(
    n_samples,
    bytes_per_sample,
    n_jobs,
    chunk_size=None,
    *,
    budget=TAPE_BYTES,
    sample_size,
):
    """Even slices of the rows: a multiple of the jobs, each within a byte budget.

    ``bytes_per_sample`` is the memory a chunk holds per row; chunks get
    ``budget / bytes_per_sample`` rows, but at least enough rows of
    ``sample_size`` values each for efficient products (more for threaded
    workers on samples smaller than that minimum; within
    :data:`MAX_TAPE_BYTES`, and at least one row), unless ``chunk_size`` is
    given.
    """
    if n_samples == 0:  # the one place empty input is handled: no chunk
        return []
    n_workers, keywords = workers(n_jobs)
    if chunk_size is None:
        per_row = max(bytes_per_sample, 1)
        threads = n_workers > 1 and keywords.get("backend") == "threading"
        # Images (a chunk's minimum in one sample) have long passes already.
        patches = sample_size < _MIN_CHUNK_VALUES
        values = _MIN_THREAD_CHUNK_VALUES if threads and patches else _MIN_CHUNK_VALUES
        fewest = min(-(-values // sample_size), MAX_TAPE_BYTES // per_row)
        chunk_size = max(fewest, budget // per_row, 1)
    n_chunks = max(-(-n_samples // chunk_size), min(n_workers, n_samples))
    # A multiple of the workers, so that none waits for the others' last
    # chunk: 7 chunks on 2 workers take as long as 8.
    n_chunks = min(-(-n_chunks // n_workers) * n_workers, n_samples)
    return list(gen_even_slices(n_samples, n_chunks))


def one_blas_thread():
    """Context in which BLAS and LAPACK run single-threaded.

    The solver's matrix products are cache-sized (and ``||K||`` is an SVD of a
    small matrix): too small for BLAS threads to pay off, and threads that
    wait for busy cores are ruinous: on a loaded 2-core machine a gradient
    took 60x longer with two BLAS threads than with one (reproduce with
    ``benchmarks/bench_fit.py --blas-threads-check``).  Parallelism comes
    from ``n_jobs`` workers, one core each, so workers x threads never
    oversubscribe the machine.
    """
    global _BLAS_CONTROLLER
    if _BLAS_CONTROLLER is None:  # inspecting the loaded libraries is slow
        _BLAS_CONTROLLER = ThreadpoolController()
    return _BLAS_CONTROLLER.limit(limits=1, user_api="blas")


_BLAS_CONTROLLER = None


def _in_one_blas_thread(function, *args):
    with one_blas_thread():
        return function(*args)


def map_chunks(function, slices, n_jobs, *args):
    """``[function(*args, rows) for rows in slices]``, over ``n_jobs`` workers.

    Every call runs with one BLAS thread.  The whole arrays travel in
    ``args`` with the chunk's ``rows``: joblib then hands large arrays to
    process workers as memory maps instead of pickling each chunk.  The BLAS
    pool is process-wide, so workers that are threads of this process (the
    threading backend, an in-process dask cluster) would set and restore it
    concurrently, the first to finish giving all cores back under the others;
    holding the limit around all of them keeps one thread during the work and
    restores the caller's setting after.
    """
    tasks = (delayed(_in_one_blas_thread)(function, *args, rows) for rows in slices)
    with one_blas_thread():
        return Parallel(**workers(n_jobs)[1])(tasks)


_POOLS = {}
_POOLS_LOCK = threading.Lock()
_LOCAL = threading.local()


def _pool(n_threads):
    with _POOLS_LOCK:
        if n_threads not in _POOLS:
            _POOLS[n_threads] = ThreadPoolExecutor(n_threads)
        return _POOLS[n_threads]


def _scratch():
    if not hasattr(_LOCAL, "scratch"):
        _LOCAL.scratch = {}
    return _LOCAL.scratch


def scratch_buffer(scratch, size, dtype, name):
    """A 1-D array of ``size`` values from the dictionary ``scratch``, reused.

    One per ``(name, dtype)``, grown when too small; ``scratch=None`` gives a
    new array.  Fresh temporaries of a few hundred KB can be page-faulted in
    at every call: a stage's weights and targets on a 518x518 grid of 48
    filters (float32, blocks of 65536 values) took 255 ms on one thread with
    them, 176 ms without (the same on two threads, 94-100 ms; one scratch
    timing).
    """
    if scratch is None:
        return np.empty(size, dtype=dtype)
    key = (name, np.dtype(dtype))
    buf = scratch.get(key)
    if buf is None or buf.size < size:
        buf = scratch[key] = np.empty(size, dtype=dtype)
    return buf[:size]


def run_threads(function, items, n_threads):
    """``function(item, scratch)`` for every item, on ``n_threads`` threads.

    The threads *within* one chunk of :func:`map_chunks` (tiles of one large
    image): NumPy's products and elementwise loops release the GIL.
    ``scratch`` is a dictionary of the calling thread that lives as long as
    the thread: buffers allocated once, not page-faulted in at every call.
    """
    if n_threads <= 1 or len(items) <= 1:
        for item in items:
            function(item, _scratch())
        return

    def work(group):
        scratch = _scratch()
        for item in group:
            function(item, scratch)

    groups = [items[k::n_threads] for k in range(n_threads)]
    # list() waits for every group and re-raises their exceptions.
    list(_pool(n_threads).map(work, groups))
