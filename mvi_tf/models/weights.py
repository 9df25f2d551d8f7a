"""Read torchvision ResNet18 state dicts without torch and load them into the Keras ResNet18.

A ``.pth`` written by ``torch.save`` (PyTorch >= 1.6) is a zip archive ``<root>/data.pkl`` +
``<root>/data/<storage key>`` (+ ``<root>/byteorder``). ``data.pkl`` is a pickle in which every tensor is a call
to ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`` and every storage a persistent id
``("storage", <torch.XStorage>, key, location, numel)``. :func:`read_state_dict` unpickles it with a restricted
unpickler that only knows those names (plus ``collections.OrderedDict``) and rebuilds NumPy arrays from the raw
storages, so no arbitrary code can run and torch is not needed. ``.npz`` files with the same key names are read
with NumPy.

Key mapping (torch -> Keras layer, prefix ``name``): ``conv1`` -> ``{name}_conv1``, ``bn1`` -> ``{name}_bn1``,
``layer{s}.{b-1}.conv{k}`` -> ``{name}_stage{s}_block{b}_conv{k}``, ``layer{s}.{b-1}.bn{k}`` ->
``..._bn{k}``, ``layer{s}.{b-1}.downsample.0`` / ``.1`` -> ``..._downsample_conv`` / ``..._downsample_bn``,
``fc`` -> ``fc``. Convolution kernels ``(out, in, kh, kw)`` become ``(kh, kw, in, out)``; the ``fc`` weight
``(out, in)`` becomes ``(in, out)``; batch norm ``weight, bias, running_mean, running_var`` become
``gamma, beta, moving_mean, moving_variance``.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import re
import zipfile
from pathlib import Path

import numpy as np

# torch storage class name -> NumPy dtype (little-endian; byte order fixed after reading `byteorder`).
_STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": np.dtype("<u2"),  # converted to float32 after reading
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}
_BN_KEYS = ("weight", "bias", "running_mean", "running_var")
_IGNORED_SUFFIX = ".num_batches_tracked"


class _StorageType:
    """Stand-in for a ``torch.XStorage`` class named in the pickle."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]


def _rebuild_tensor(storage: np.ndarray, storage_offset: int, size, stride, *_unused) -> np.ndarray:
    """NumPy version of ``torch._utils._rebuild_tensor_v2``: view ``storage`` with ``size``/``stride``."""
    size = tuple(int(s) for s in size)
    stride = tuple(int(s) for s in stride)
    if len(size) != len(stride):
        raise ValueError(f"tensor size {size} and stride {stride} differ in rank")
    if 0 in size:
        return np.zeros(size, dtype=storage.dtype)
    last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
    if storage_offset < 0 or min(stride, default=0) < 0 or last >= storage.size:
        raise ValueError(
            f"tensor (offset {storage_offset}, size {size}, stride {stride}) exceeds its storage of "
            f"{storage.size} elements"
        )
    base = storage[storage_offset:]
    view = np.lib.stride_tricks.as_strided(
        base, shape=size, strides=tuple(s * storage.itemsize for s in stride), writeable=False
    )
    return np.array(view)


def _rebuild_parameter(data: np.ndarray, *_unused) -> np.ndarray:
    return data


class _TorchZipUnpickler(pickle.Unpickler):
    """Unpickler for ``data.pkl`` that allows only the globals a tensor state dict needs."""

    def __init__(self, file, archive: zipfile.ZipFile, root: str, byteorder: str, path: str) -> None:
        super().__init__(file)
        self._archive = archive
        self._root = root
        self._byteorder = byteorder
        self._path = path
        self._storages: dict[str, np.ndarray] = {}

    def find_class(self, module: str, name: str):
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(
            f"{self._path}: refusing to load {module}.{name}; only tensor state dicts "
            "(OrderedDict of tensors) can be read without torch"
        )

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"{self._path}: unsupported persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(
                f"{self._path}: storage {key!r} has unsupported type {storage_type!r}"
            )
        if key in self._storages:
            return self._storages[key]
        entry = f"{self._root}data/{key}"
        try:
            raw = self._archive.read(entry)
        except KeyError:
            raise pickle.UnpicklingError(f"{self._path}: storage entry {entry!r} is missing") from None
        dtype = storage_type.dtype.newbyteorder("<" if self._byteorder == "little" else ">")
        if len(raw) != int(numel) * dtype.itemsize:
            raise pickle.UnpicklingError(
                f"{self._path}: storage {entry!r} holds {len(raw)} bytes, expected {numel} x {dtype.itemsize}"
            )
        array = np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="))
        if storage_type.name == "BFloat16Storage":
            array = (array.astype(np.uint32) << 16).view(np.float32)
        self._storages[key] = array
        return array


def _read_torch_zip(path: Path) -> dict:
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise ValueError(
                f"{path}: not a torch zip checkpoint (expected one '<root>/data.pkl', found {pickles})"
            )
        root = pickles[0][: -len("data.pkl")]
        byteorder = "little"
        if f"{root}byteorder" in archive.namelist():
            byteorder = archive.read(f"{root}byteorder").decode("ascii").strip()
            if byteorder not in ("little", "big"):
                raise ValueError(f"{path}: unknown byteorder {byteorder!r}")
        unpickler = _TorchZipUnpickler(
            io.BytesIO(archive.read(pickles[0])), archive, root, byteorder, str(path)
        )
        try:
            return unpickler.load()
        except pickle.UnpicklingError as err:
            raise ValueError(str(err)) from err


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a torchvision-style state dict from a ``.pth`` (torch zip format) or ``.npz`` file.

    Parameters
    ----------
    path : path-like
        ``.npz`` (keys like ``layer1.0.conv1.weight``) or a file written by ``torch.save(model.state_dict())``
        with PyTorch >= 1.6. A checkpoint dict holding the state dict under ``"state_dict"`` is unwrapped and a
        ``module.`` prefix (DataParallel) is stripped.

    Returns
    -------
    dict of str to numpy.ndarray
        Tensors in torch layout, float tensors as stored (float16/bfloat16 widened to float32).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        For the legacy (pre-1.6, non-zip) torch format, unknown content or disallowed pickle globals.
    TypeError
        If the file holds something other than a dict of named tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"State-dict file not found: {path}")
    if path.suffix.lower() == ".npz":
        with np.load(path, allow_pickle=False) as data:
            state = {key: data[key] for key in data.files}
    elif zipfile.is_zipfile(path):
        state = _read_torch_zip(path)
    else:
        with open(path, "rb") as handle:
            head = handle.read(2)
        if head[:1] == b"\x80":
            raise ValueError(
                f"{path}: legacy (pre-zip) torch serialisation is not supported; re-save it with "
                "torch>=1.6 `torch.save(model.state_dict(), path)` or convert it to .npz"
            )
        raise ValueError(
            f"{path}: not a torch zip checkpoint (.pth/.pt, torch>=1.6) or NumPy .npz file "
            "(legacy tar/pickle torch files are not supported)"
        )
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise TypeError(f"{path}: expected a dict of tensors, found {type(state).__name__}")
    out = {}
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, np.ndarray):
            raise TypeError(f"{path}: entry {key!r} is not a named tensor (found {type(value).__name__})")
        key = key.removeprefix("module.")
        if value.dtype in (np.float16,):
            value = value.astype(np.float32)
        out[key] = value
    return out


def _torch_keys_for_layer(layer_name: str, name: str) -> tuple[str, str] | None:
    """``(torch prefix, kind)`` for a Keras ResNet18 layer name with prefix ``name``, kind in conv/bn/fc."""
    if layer_name == "fc":
        return "fc", "fc"
    if not layer_name.startswith(f"{name}_"):
        return None
    rest = layer_name[len(name) + 1 :]
    if rest in ("conv1", "bn1"):
        return rest, "conv" if rest == "conv1" else "bn"
    match = re.fullmatch(r"stage([1-4])_block([12])_(conv[12]|bn[12]|downsample_conv|downsample_bn)", rest)
    if match is None:
        return None
    stage, block, part = match.groups()
    prefix = f"layer{stage}.{int(block) - 1}."
    torch_part = {"downsample_conv": "downsample.0", "downsample_bn": "downsample.1"}.get(part, part)
    kind = "conv" if part.endswith(("conv", "conv1", "conv2")) else "bn"
    return prefix + torch_part, kind


def load_resnet18_weights(model, state_dict: dict[str, np.ndarray], name: str) -> list[str]:
    """Assign a torchvision ResNet18 state dict to the ResNet18 layers with prefix ``name`` in ``model``.

    All shapes are validated before any weight is assigned. ``*.num_batches_tracked`` is ignored, and so are
    ``fc.*`` keys when the model has no ``fc`` layer (phase branches).

    Parameters
    ----------
    model : keras.Model
        Holds layers built by :func:`mvi_tf.models.resnet18.apply_resnet18` with prefix ``name``.
    state_dict : dict of str to numpy.ndarray
        torchvision key names and layouts, as returned by :func:`read_state_dict`.
    name : str
        Layer-name prefix (``"resnet18"`` for the classifier, the phase name in mvi-tf models).

    Returns
    -------
    list of str
        The state-dict keys assigned.

    Raises
    ------
    ValueError
        Naming missing keys, unexpected keys or the first shape mismatch (key, expected and received shape).
    """
    plan = []  # (layer, [weights], [keys])
    expected: set[str] = set()
    has_fc = False
    for layer in model.layers:
        mapped = _torch_keys_for_layer(layer.name, name)
        if mapped is None or not layer.weights:
            continue
        prefix, kind = mapped
        if kind == "fc":
            has_fc = True
            keys = [f"{prefix}.weight", f"{prefix}.bias"]
        elif kind == "conv":
            keys = [f"{prefix}.weight"]
        else:
            keys = [f"{prefix}.{k}" for k in _BN_KEYS]
        expected.update(keys)
        plan.append((layer, kind, keys))
    if not any(kind != "fc" for _, kind, _ in plan):
        raise ValueError(
            f"Model {model.name!r} has no ResNet18 layers with prefix {name!r} (e.g. '{name}_conv1')"
        )
    provided = {k for k in state_dict if not k.endswith(_IGNORED_SUFFIX)}
    if not has_fc:
        provided = {k for k in provided if not k.startswith("fc.")}
    missing = sorted(expected - provided)
    unexpected = sorted(provided - expected)
    if missing or unexpected:
        raise ValueError(
            f"State dict does not match ResNet18 branch {name!r} of model {model.name!r}: "
            f"missing keys {missing[:8]}{' ...' if len(missing) > 8 else ''}, "
            f"unexpected keys {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}"
        )
    assignments = []
    for layer, kind, keys in plan:
        arrays = [np.asarray(state_dict[k], dtype=np.float32) for k in keys]
        if kind == "conv" and arrays[0].ndim == 4:
            arrays[0] = arrays[0].transpose(2, 3, 1, 0)
        elif kind == "fc" and arrays[0].ndim == 2:
            arrays[0] = arrays[0].T
        for key, array, variable in zip(keys, arrays, layer.weights):
            if tuple(array.shape) != tuple(variable.shape):
                raise ValueError(
                    f"Shape mismatch for {key!r} -> layer {layer.name!r} of model {model.name!r}: "
                    f"expected {tuple(variable.shape)} (Keras layout), received {tuple(array.shape)}"
                )
        assignments.append((layer, arrays))
    for layer, arrays in assignments:
        layer.set_weights(arrays)
    return [k for _, _, keys in plan for k in keys]
