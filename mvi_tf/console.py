"""A quiet console: TensorFlow's C++ and Python start-up logging is kept off the terminal by default.

TensorFlow writes informational lines from its C++ core to standard error (oneDNN notes from ``port.cc``, CPU
feature notes from ``cpu_feature_guard.cc``, dataset notes from ``tf_record_dataset_op.cc``, ...). Most of them
obey ``TF_CPP_MIN_LOG_LEVEL``; a few, logged through absl while the shared libraries load, do not. `quiet_tensorflow`
therefore (1) sets ``TF_CPP_MIN_LOG_LEVEL=2`` (errors still show) for this process and its children, (2) routes file
descriptor 2 through a temporary file while ``tensorflow`` is first imported and replays every line that is not a
TensorFlow log line, and (3) raises the Python loggers ``tensorflow`` and ``absl`` to ERROR. Progress bars and the
pipeline's own log lines are untouched. It must run before TensorFlow is imported; the CLI calls it unless
``--verbose`` is given.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator

# A C++ log line ("I0000 00:00:1796083104.798708   26234 port.cc:153] ...") or absl's pre-initialisation notice.
TF_LOG_LINE = re.compile(
    rb"^(?:[IWEF]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [\w./-]+:\d+\]"
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR)"
)
# Lines that TensorFlow Lite's converter and interpreter print without a log prefix and regardless of
# TF_CPP_MIN_LOG_LEVEL (filtered inside `native_output_filtered` blocks: export, predict).
TFLITE_NOISE_LINE = re.compile(
    rb"^(?:INFO: Created TensorFlow Lite (?:XNNPACK )?delegate for CPU\."
    rb"|fully_quantize: \d+, inference_type: \d+"
    rb"|Estimated count of arithmetic ops: )"
)
QUIET_CPP_LEVEL = "2"  # 0 all, 1 no INFO, 2 no INFO/WARNING, 3 no ERROR either.
_state = {"quiet": False}


def is_noise(line: bytes) -> bool:
    """True for a TensorFlow / TensorFlow Lite log line that the quiet console drops."""
    return bool(TF_LOG_LINE.match(line) or TFLITE_NOISE_LINE.match(line))


@contextlib.contextmanager
def filtered_stderr() -> Iterator[None]:
    """Send file descriptor 2 to a temporary file for the block, then replay the lines that are not TF log lines."""
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().splitlines(keepends=True) if not is_noise(line)]
            if kept:
                os.write(2, b"".join(kept))


class _QuietLoader(importlib.abc.Loader):
    """Delegates to the real loader of ``tensorflow``, executing the package with standard error filtered."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec):  # noqa: D102 - importlib protocol
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:  # noqa: D102 - importlib protocol
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        with filtered_stderr():
            self._loader.exec_module(module)


class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` as the path finder would, wrapping its loader in `_QuietLoader`; then steps aside."""

    def find_spec(self, fullname, path, target=None):  # noqa: D102 - importlib protocol
        if fullname != "tensorflow":
            return None
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def native_output_filtered() -> contextlib.AbstractContextManager:
    """`filtered_stderr` when the console is quiet (after `quiet_tensorflow`), else a no-op.

    For blocks whose native libraries print outside Python's logging (TFLite conversion and interpretation);
    standard error of the block is shown when the block ends, so wrap only blocks without progress bars.
    """
    return filtered_stderr() if _state["quiet"] else contextlib.nullcontext()


def quiet_tensorflow() -> None:
    """Silence TensorFlow's start-up logging for this process (call before TensorFlow is imported).

    If TensorFlow is already imported only the environment variable (for child processes) and the Python loggers
    are set. A ``TF_CPP_MIN_LOG_LEVEL`` already in the environment is respected.
    """
    _state["quiet"] = True
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", QUIET_CPP_LEVEL)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    try:  # absl makes its own logger class; let it create the logger before the level is set.
        from absl import logging as absl_logging
    except ImportError:  # pragma: no cover - absl comes with TensorFlow
        pass
    else:
        absl_logging.set_verbosity(absl_logging.ERROR)
    if "tensorflow" in sys.modules or any(isinstance(f, _QuietTensorFlowFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _QuietTensorFlowFinder())
