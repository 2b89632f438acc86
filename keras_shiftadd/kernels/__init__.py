"""Native CPU kernels of the adder convolution, compiled on first use.

`adder_conv2d.cc` holds two TensorFlow operations, the adder convolution and
its HardTanh input gradient, written as register-blocked SIMD loops over
small blocks of windows. The first call of `load()` compiles the file with
the C++ compiler of the machine against the installed TensorFlow's headers
(about 8 seconds) and caches the library, keyed by the source, the
TensorFlow version, the compiler and the CPU, so later processes load it at
once. Where no compiler works, `load()` returns `None` and the adder layers
fall back to their pure TensorFlow implementation.

Environment variables:

- `KERAS_SHIFTADD_ADDER`: `auto` (native kernels where they build, else
  TensorFlow; the default), `native` (raise if they do not build) or
  `tensorflow` (never build or load them).
- `KERAS_SHIFTADD_CACHE_DIR`: where compiled libraries go. Defaults to
  `$XDG_CACHE_HOME/keras_shiftadd` or `~/.cache/keras_shiftadd`.
- `CXX`: the C++ compiler. Defaults to `c++`, then `g++`, then `clang++`.
"""

import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading

logger = logging.getLogger(__name__)

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "adder_conv2d.cc")
IMPLEMENTATIONS = ("auto", "native", "tensorflow")

# Compiling takes about 8 seconds on a 2-core machine; this bounds a compiler
# that hangs.
_COMPILE_TIMEOUT_S = 300

_lock = threading.Lock()
_state = {"library": None, "error": None, "tried": False}


class NativeKernelError(RuntimeError):
    """Raised when the native adder kernels are requested but cannot load."""


def implementation_setting():
    """Return the `KERAS_SHIFTADD_ADDER` setting, checked."""
    value = os.environ.get("KERAS_SHIFTADD_ADDER", "auto").strip().lower()
    if value not in IMPLEMENTATIONS:
        raise ValueError(
            "Invalid KERAS_SHIFTADD_ADDER environment variable: expected one "
            f"of {IMPLEMENTATIONS}. Received: KERAS_SHIFTADD_ADDER={value!r}"
        )
    return value


def cache_dir():
    """Return the directory of compiled libraries (not created here)."""
    configured = os.environ.get("KERAS_SHIFTADD_CACHE_DIR")
    if configured:
        return configured
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
        os.path.expanduser("~"), ".cache"
    )
    return os.path.join(base, "keras_shiftadd")


def _compiler():
    configured = os.environ.get("CXX")
    if configured:
        return configured
    for name in ("c++", "g++", "clang++"):
        path = shutil.which(name)
        if path:
            return path
    raise NativeKernelError(
        "No C++ compiler found (tried c++, g++ and clang++ on PATH). Install "
        "one or set CXX to build the native adder kernels."
    )


def _cpu_flags():
    """Return the CPU feature flags, so a shared cache never mixes CPUs."""
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith(("flags", "Features")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _build_command(compiler, output):
    import tensorflow as tf

    # -march=native: the library is built on, and for, the machine that
    # runs it, so it may use every vector instruction the CPU has.
    return (
        [compiler, "-O3", "-march=native", "-shared", "-fPIC", "-w"]
        + tf.sysconfig.get_compile_flags()
        + [SOURCE, "-o", output]
        + tf.sysconfig.get_link_flags()
    )


def library_path(compiler=None):
    """Return the cache path of the library for this source, TensorFlow and CPU."""
    import tensorflow as tf

    compiler = compiler or _compiler()
    digest = hashlib.sha256()
    with open(SOURCE, "rb") as file:
        digest.update(file.read())
    for part in (tf.__version__, compiler, _cpu_flags(), platform.machine(),
                 " ".join(_build_command(compiler, ""))):
        digest.update(part.encode())
    return os.path.join(cache_dir(), f"adder_kernels_{digest.hexdigest()[:16]}.so")


def build(force=False):
    """Compile the kernels unless a cached library exists; return its path.

    Args:
        force: Compile even if a cached library exists. Defaults to `False`.

    Raises:
        NativeKernelError: If no compiler is found or compiling fails.
    """
    compiler = _compiler()
    path = library_path(compiler)
    if os.path.exists(path) and not force:
        return path

    os.makedirs(os.path.dirname(path), exist_ok=True)
    # Compile into a temporary name and rename, so that a concurrent process
    # or an interrupted build never leaves a half-written library in place.
    handle, partial = tempfile.mkstemp(suffix=".so.partial", dir=os.path.dirname(path))
    os.close(handle)
    command = _build_command(compiler, partial)
    logger.info("compiling the native adder kernels (once per machine): %s",
                " ".join(command))
    try:
        completed = subprocess.run(command, capture_output=True, text=True,
                                   timeout=_COMPILE_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        os.unlink(partial)
        raise NativeKernelError(
            f"Failed to run the C++ compiler {compiler!r}: {error}"
        ) from error
    if completed.returncode != 0:
        os.unlink(partial)
        tail = "\n".join(completed.stderr.strip().splitlines()[-15:])
        raise NativeKernelError(
            f"Failed to compile {SOURCE} (exit status {completed.returncode}). "
            f"Compiler output, last lines:\n{tail}"
        )
    os.replace(partial, path)
    return path


def load(required=False):
    """Return the loaded kernel module, or `None` where it is unavailable.

    Builds the library on the first call of the process (see `build`). A
    failure is logged once as a warning, with the reason, and remembered for
    the rest of the process.

    Args:
        required: Raise `NativeKernelError` instead of returning `None`.
            Defaults to `False`.
    """
    with _lock:
        if not _state["tried"]:
            _state["tried"] = True
            try:
                import tensorflow as tf

                _state["library"] = tf.load_op_library(build())
            except (NativeKernelError, OSError, tf.errors.OpError) as error:
                _state["error"] = str(error)
                logger.warning(
                    "Native adder kernels unavailable, using the slower "
                    "TensorFlow implementation: %s", error,
                )
    if _state["library"] is None and required:
        raise NativeKernelError(
            "The native adder kernels were requested but could not be "
            f"loaded: {_state['error']}"
        )
    return _state["library"]


def reset():
    """Forget the outcome of `load()`, so the next call tries again."""
    with _lock:
        _state.update(library=None, error=None, tried=False)
