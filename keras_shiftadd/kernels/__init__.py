"""Native CPU kernels of the adder convolution, compiled on first use.

`adder_conv2d.cc` contains two TensorFlow operations, the adder convolution
and its HardTanh input gradient, written as register-blocked SIMD loops
over small blocks of windows. The first call of `load()` compiles the file
with the machine's C++ compiler against the installed TensorFlow's headers
(about 8 seconds). It caches the library, keyed by the source, the
TensorFlow version and the CPU, so later processes load it at once, even
without a compiler. Where the library can neither be found nor built,
`load()` returns `None` and the adder layers fall back to their pure
TensorFlow implementation.

Environment variables:

- `KERAS_SHIFTADD_ADDER`: `auto` (native kernels where they build, else
  TensorFlow; the default), `native` (raise if they do not build) or
  `tensorflow` (never build or load them).
- `KERAS_SHIFTADD_CACHE_DIR`: where compiled libraries go. Defaults to
  `$XDG_CACHE_HOME/keras_shiftadd` or `~/.cache/keras_shiftadd`.
- `CXX`: the C++ compiler, with options if needed. Defaults to `c++`,
  then `g++`, then `clang++` on the PATH.
"""

import hashlib
import logging
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
import threading
import time

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
    """Return the `KERAS_SHIFTADD_ADDER` setting, checked (empty means auto)."""
    value = os.environ.get("KERAS_SHIFTADD_ADDER", "").strip().lower() or "auto"
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
    """Return the compiler command as a list (CXX may carry options)."""
    configured = os.environ.get("CXX", "").strip()
    if configured:
        return shlex.split(configured)
    for name in ("c++", "g++", "clang++"):
        path = shutil.which(name)
        if path:
            return [path]
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


def _flags():
    import tensorflow as tf

    # -march=native: the library is built on, and for, the machine that
    # runs it, so it may use every vector instruction the CPU has.
    compile_flags = ["-O3", "-march=native", "-shared", "-fPIC", "-w"]
    return compile_flags + tf.sysconfig.get_compile_flags(), (
        tf.sysconfig.get_link_flags()
    )


def library_path():
    """Return the cache path of the library for this source, TensorFlow and CPU.

    The key leaves out the compiler, so a library built ahead of time (for
    example with `keras-shiftadd build-kernels` in a container build) also
    loads where no compiler is installed.
    """
    import tensorflow as tf

    compile_flags, link_flags = _flags()
    digest = hashlib.sha256()
    with open(SOURCE, "rb") as file:
        digest.update(file.read())
    for part in (tf.__version__, _cpu_flags(), platform.machine(),
                 " ".join(compile_flags + link_flags)):
        digest.update(part.encode())
    return os.path.join(cache_dir(), f"adder_kernels_{digest.hexdigest()[:16]}.so")


def _is_complete_library(path):
    """Return False for an ELF file cut short, as a crash during a copy leaves.

    Loading a truncated shared library can kill the process with SIGBUS, so
    the section header table, which linkers write at the end of the file,
    must lie within it. Files in other formats pass unchecked.
    """
    try:
        with open(path, "rb") as file:
            header = file.read(64)
        size = os.path.getsize(path)
    except OSError:
        return False
    if header[:4] != b"\x7fELF":
        return platform.system() != "Linux"
    if len(header) < 64:
        return False
    order = "little" if header[5] == 1 else "big"
    if header[4] == 2:  # 64-bit
        offset = int.from_bytes(header[0x28:0x30], order)
        entry_size = int.from_bytes(header[0x3A:0x3C], order)
        entries = int.from_bytes(header[0x3C:0x3E], order)
    else:
        offset = int.from_bytes(header[0x20:0x24], order)
        entry_size = int.from_bytes(header[0x2E:0x30], order)
        entries = int.from_bytes(header[0x30:0x32], order)
    return 0 < offset and offset + entry_size * entries <= size


def _current_umask():
    """Return the process umask, read from /proc on Linux without changing it."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    # Elsewhere, set and restore it (briefly visible to other threads).
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _remove_stale_partials(directory):
    """Delete partial files of builds that ended without cleaning up.

    A build killed by a signal Python cannot catch leaves its partial file.
    Files older than the compile timeout cannot belong to a running build.
    """
    now = time.time()
    for name in os.listdir(directory):
        if not name.endswith(".so.partial"):
            continue
        path = os.path.join(directory, name)
        try:
            if now - os.path.getmtime(path) > _COMPILE_TIMEOUT_S:
                os.unlink(path)
        except OSError:
            pass


def _make_cache_dir(directory):
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as error:
        raise NativeKernelError(
            f"Cannot create the kernel cache directory {directory!r}: {error}. "
            "Set KERAS_SHIFTADD_CACHE_DIR to a writable directory."
        ) from error


def build(force=False):
    """Compile the kernels unless a cached library exists; return its path.

    Args:
        force: Compile even if a cached library exists. Defaults to `False`.

    Raises:
        NativeKernelError: If no compiler is found, the cache directory is
            not writable or compiling fails.
    """
    path = library_path()
    if os.path.exists(path) and not force and _is_complete_library(path):
        return path

    compiler = _compiler()
    directory = os.path.dirname(path)
    _make_cache_dir(directory)
    _remove_stale_partials(directory)
    # Compile into a temporary name and rename, so that a concurrent process
    # or an interrupted build never leaves a half-written library in place.
    try:
        handle, partial = tempfile.mkstemp(suffix=".so.partial", dir=directory)
    except OSError as error:
        raise NativeKernelError(
            f"Cannot write to the kernel cache directory {directory!r}: "
            f"{error}. Set KERAS_SHIFTADD_CACHE_DIR to a writable directory."
        ) from error
    os.close(handle)
    compile_flags, link_flags = _flags()
    # Options given in CXX come after ours, so that they take precedence.
    command = (compiler[:1] + compile_flags + compiler[1:]
               + [SOURCE, "-o", partial] + link_flags)
    logger.info("compiling the native adder kernels (once per machine): %s",
                " ".join(command))
    try:
        try:
            completed = subprocess.run(command, capture_output=True, text=True,
                                       timeout=_COMPILE_TIMEOUT_S, check=False)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise NativeKernelError(
                f"Failed to run the C++ compiler {' '.join(compiler)!r}: {error}"
            ) from error
        if completed.returncode != 0:
            tail = "\n".join(completed.stderr.strip().splitlines()[-15:])
            raise NativeKernelError(
                f"Failed to compile {SOURCE} with {' '.join(compiler)!r} (exit "
                f"status {completed.returncode}). Compiler output, last "
                f"lines:\n{tail or '(none)'}"
            )
        # mkstemp creates files readable by their owner only; a shared cache
        # needs the usual permissions of a library.
        os.chmod(partial, 0o755 & ~_current_umask())
        os.replace(partial, path)
    finally:
        # Also on KeyboardInterrupt: never leave the partial file behind.
        if os.path.exists(partial):
            os.unlink(partial)
    return path


def _load_library():
    """Build if needed and load the library; rebuild once if it is corrupt."""
    import tensorflow as tf

    path = build()
    try:
        return tf.load_op_library(path)
    except (OSError, tf.errors.OpError) as error:
        logger.warning("The cached kernel library %s failed to load (%s); "
                       "compiling it again.", path, error)
    try:
        return tf.load_op_library(build(force=True))
    except (OSError, tf.errors.OpError) as error:
        raise NativeKernelError(
            f"Failed to load the compiled kernels {path}: {error}"
        ) from error


def load(required=False):
    """Return the loaded kernel module, or `None` where it is unavailable.

    Builds the library on the first call of the process (see `build`). The
    outcome is remembered for the rest of the process; a failure is logged
    once as a warning, with the reason.

    Args:
        required: Raise `NativeKernelError` instead of returning `None`.
            Defaults to `False`.
    """
    with _lock:
        if not _state["tried"]:
            _state["tried"] = True
            try:
                _state["library"] = _load_library()
            except NativeKernelError as error:
                _state["error"] = str(error)
                if not required:
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
