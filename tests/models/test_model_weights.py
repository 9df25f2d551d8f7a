"""torchvision state dicts -> Keras ResNet18: reading .pth/.npz without torch and output equivalence.

The reference network is an independent NumPy forward pass in torch's NCHW layout with torch-layout weights
(explicit padding, sliding-window convolution, eval-mode batch norm, max-pool padded with -inf). The ``.pth``
files are written here in torch's zip format (hand-written protocol-2 pickle + 64-byte aligned stored zip
records) so the reader is tested without torch; where torch is installed it cross-checks both directions.
"""

from __future__ import annotations

import pickle
import struct
import zlib
from pathlib import Path

import keras
import numpy as np
import pytest

from mvi_tf.models.cdlm import build_signature_model, load_pretrained
from mvi_tf.models.resnet18 import resnet18_classifier
from mvi_tf.models.weights import load_resnet18_weights, read_state_dict

IMAGE_SIZE = 64
NUM_CLASSES = 10
BN_EPS = 1e-5


# --------------------------------------------------------------------------------------------------------
# Random weights in torchvision's key layout
# --------------------------------------------------------------------------------------------------------
def _torchvision_shapes(num_classes: int) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {"conv1.weight": (64, 3, 7, 7)}

    def bn(prefix: str, channels: int) -> None:
        for key in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{key}"] = (channels,)
        shapes[f"{prefix}.num_batches_tracked"] = ()

    bn("bn1", 64)
    in_channels = 64
    for stage, width in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            prefix = f"layer{stage}.{block}"
            first_in = in_channels if block == 0 else width
            shapes[f"{prefix}.conv1.weight"] = (width, first_in, 3, 3)
            bn(f"{prefix}.bn1", width)
            shapes[f"{prefix}.conv2.weight"] = (width, width, 3, 3)
            bn(f"{prefix}.bn2", width)
            if block == 0 and stage > 1:
                shapes[f"{prefix}.downsample.0.weight"] = (width, first_in, 1, 1)
                bn(f"{prefix}.downsample.1", width)
        in_channels = width
    shapes["fc.weight"] = (num_classes, 512)
    shapes["fc.bias"] = (num_classes,)
    return shapes


def _random_state_dict(seed: int, num_classes: int = NUM_CLASSES) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    state = {}
    for key, shape in _torchvision_shapes(num_classes).items():
        if key.endswith("num_batches_tracked"):
            value = np.array(int(rng.integers(1, 1000)), dtype=np.int64)
        elif key.endswith(("running_var", ".weight")) and len(shape) == 1:  # BN variance and gamma
            value = rng.uniform(0.5, 1.5, shape)
        elif key.endswith(("running_mean", ".bias")):
            value = rng.normal(0.0, 0.1, shape)
        elif len(shape) == 4:
            value = rng.normal(0.0, np.sqrt(2.0 / (shape[0] * shape[2] * shape[3])), shape)
        else:  # fc.weight
            value = rng.uniform(-(512**-0.5), 512**-0.5, shape)
        state[key] = np.asarray(value, dtype=np.int64 if value.dtype == np.int64 else np.float32)
    return state


# --------------------------------------------------------------------------------------------------------
# A minimal writer of torch's zip checkpoint format (torch.save layout, without torch)
# --------------------------------------------------------------------------------------------------------
_STORAGE_NAMES = {np.dtype(np.float32): "FloatStorage", np.dtype(np.int64): "LongStorage"}


def _torch_pickle(state: dict[str, np.ndarray]) -> bytes:
    out = bytearray(b"\x80\x02")  # PROTO 2

    def global_(module: str, name: str) -> None:
        out.extend(b"c" + f"{module}\n{name}\n".encode())

    def text(value: str) -> None:
        raw = value.encode()
        out.extend(b"X" + struct.pack("<I", len(raw)) + raw)

    def integer(value: int) -> None:
        out.extend(b"J" + struct.pack("<i", value))

    def int_tuple(values) -> None:
        out.extend(b"(")
        for value in values:
            integer(int(value))
        out.extend(b"t")

    global_("collections", "OrderedDict")
    out.extend(b")R(")  # OrderedDict(), MARK
    for key_index, (key, array) in enumerate(state.items()):
        text(key)
        global_("torch._utils", "_rebuild_tensor_v2")
        out.extend(b"((")  # MARK args, MARK persistent id
        text("storage")
        global_("torch", _STORAGE_NAMES[array.dtype])
        text(str(key_index))
        text("cpu")
        integer(array.size)
        out.extend(b"tQ")  # TUPLE, BINPERSID
        integer(0)
        int_tuple(array.shape)
        int_tuple(np.array(array.strides, dtype=np.int64) // array.itemsize)
        out.extend(b"\x89")  # NEWFALSE (requires_grad)
        global_("collections", "OrderedDict")
        out.extend(b")RtR")  # backward hooks OrderedDict(), TUPLE, REDUCE
    out.extend(b"u.")  # SETITEMS, STOP
    return bytes(out)


def _write_stored_zip(path: Path, records: list[tuple[str, bytes]], alignment: int = 64) -> None:
    """Uncompressed zip whose record data start on ``alignment`` bytes, padded with an 'FB' extra field."""
    body, central = bytearray(), bytearray()
    for name, data in records:
        name_raw = name.encode()
        offset = len(body)
        pad = (-(offset + 30 + len(name_raw) + 4)) % alignment
        extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad
        crc = zlib.crc32(data)
        body += struct.pack(
            "<IHHHHHIIIHH",
            0x04034B50,
            20,
            0x0800,
            0,
            0,
            0,
            crc,
            len(data),
            len(data),
            len(name_raw),
            len(extra),
        )
        body += name_raw + extra + data
        central += struct.pack(
            "<IHHHHHHIIIHHHHHII",
            0x02014B50,
            20,
            20,
            0x0800,
            0,
            0,
            0,
            crc,
            len(data),
            len(data),
            len(name_raw),
            0,
            0,
            0,
            0,
            0,
            offset,
        )
        central += name_raw
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(records), len(records), len(central), len(body), 0)
    path.write_bytes(bytes(body + central + end))


def write_torch_state_dict(path: Path, state: dict[str, np.ndarray]) -> None:
    """Write ``state`` the way ``torch.save(state_dict, path)`` does (zip format, little-endian)."""
    root = path.stem
    records = [(f"{root}/data.pkl", _torch_pickle(state))]
    records += [(f"{root}/.format_version", b"1"), (f"{root}/.storage_alignment", b"64")]
    records += [(f"{root}/byteorder", b"little")]
    for key_index, array in enumerate(state.values()):
        records.append(
            (
                f"{root}/data/{key_index}",
                np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes(),
            )
        )
    records += [(f"{root}/version", b"3\n"), (f"{root}/.data/serialization_id", b"0" * 40)]
    _write_stored_zip(path, records)


# --------------------------------------------------------------------------------------------------------
# Independent NumPy reference forward pass (NCHW, torch-layout weights, float64)
# --------------------------------------------------------------------------------------------------------
def _conv(x: np.ndarray, weight: np.ndarray, stride: int, pad: int) -> np.ndarray:
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    kh, kw = weight.shape[2:]
    windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]
    return np.einsum("nchwij,ocij->nohw", windows, weight, optimize=True)


def _bn(x: np.ndarray, state: dict, prefix: str) -> np.ndarray:
    scale = state[f"{prefix}.weight"] / np.sqrt(state[f"{prefix}.running_var"] + BN_EPS)
    shift = state[f"{prefix}.bias"] - state[f"{prefix}.running_mean"] * scale
    return x * scale[None, :, None, None] + shift[None, :, None, None]


def _maxpool(x: np.ndarray) -> np.ndarray:
    x = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    windows = np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(2, 3))[:, :, ::2, ::2]
    return windows.max(axis=(-2, -1))


def reference_resnet18(images_nhwc: np.ndarray, state: dict[str, np.ndarray]) -> np.ndarray:
    state = {k: v.astype(np.float64) for k, v in state.items()}
    def relu(t):
        return np.maximum(t, 0.0)
    x = images_nhwc.astype(np.float64).transpose(0, 3, 1, 2)
    x = _maxpool(relu(_bn(_conv(x, state["conv1.weight"], 2, 3), state, "bn1")))
    for stage in range(1, 5):
        for block in range(2):
            p = f"layer{stage}.{block}"
            stride = 2 if stage > 1 and block == 0 else 1
            y = relu(_bn(_conv(x, state[f"{p}.conv1.weight"], stride, 1), state, f"{p}.bn1"))
            y = _bn(_conv(y, state[f"{p}.conv2.weight"], 1, 1), state, f"{p}.bn2")
            if f"{p}.downsample.0.weight" in state:
                x = _bn(_conv(x, state[f"{p}.downsample.0.weight"], stride, 0), state, f"{p}.downsample.1")
            x = relu(y + x)
    pooled = x.mean(axis=(2, 3))
    return pooled @ state["fc.weight"].T + state["fc.bias"]


# --------------------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def state_dict() -> dict[str, np.ndarray]:
    return _random_state_dict(seed=7)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(3).normal(size=(2, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def reference_logits(state_dict, images) -> np.ndarray:
    return reference_resnet18(images, state_dict)


@pytest.mark.parametrize("fmt", ["pth", "npz"])
def test_loaded_classifier_matches_numpy_reference(tmp_path, fmt, state_dict, images, reference_logits):
    path = tmp_path / f"resnet18.{fmt}"
    if fmt == "pth":
        write_torch_state_dict(path, state_dict)
    else:
        np.savez(path, **state_dict)
    read = read_state_dict(path)
    assert sorted(read) == sorted(state_dict)
    for key, value in state_dict.items():
        np.testing.assert_array_equal(read[key], value, err_msg=key)
        assert read[key].dtype == value.dtype, key

    model = resnet18_classifier((IMAGE_SIZE, IMAGE_SIZE, 3), num_classes=NUM_CLASSES)
    loaded = load_resnet18_weights(model, read, "resnet18")
    assert len(loaded) == len([k for k in state_dict if not k.endswith("num_batches_tracked")])
    logits = keras.ops.convert_to_numpy(model(images, training=False))
    assert np.abs(reference_logits).max() > 0.1  # the comparison is not between near-zero numbers
    np.testing.assert_allclose(logits, reference_logits, rtol=1e-4, atol=1e-4)


def test_reference_detects_a_wrong_layout(state_dict, images, reference_logits):
    """The equivalence check can fail: a kernel loaded without the (out,in,kh,kw) transpose changes logits."""
    model = resnet18_classifier((IMAGE_SIZE, IMAGE_SIZE, 3), num_classes=NUM_CLASSES)
    load_resnet18_weights(model, state_dict, "resnet18")
    layer = model.get_layer("resnet18_stage2_block1_conv1")
    kernel = state_dict["layer2.0.conv1.weight"]  # (128, 64, 3, 3)
    layer.set_weights([kernel.transpose(3, 2, 1, 0)])  # spatially flipped vs the correct (2, 3, 1, 0)
    logits = keras.ops.convert_to_numpy(model(images, training=False))
    assert np.abs(logits - reference_logits).max() > 1e-3


def test_load_errors_name_keys_and_shapes(state_dict):
    model = resnet18_classifier((IMAGE_SIZE, IMAGE_SIZE, 3), num_classes=NUM_CLASSES)
    broken = dict(state_dict)
    del broken["layer3.1.bn2.running_var"]
    broken["layer9.0.conv1.weight"] = np.zeros((1,), np.float32)
    with pytest.raises(
        ValueError, match=r"missing keys \['layer3.1.bn2.running_var'\].*layer9.0.conv1.weight"
    ):
        load_resnet18_weights(model, broken, "resnet18")
    wrong_head = _random_state_dict(seed=1, num_classes=1000)
    with pytest.raises(ValueError, match=r"'fc.weight'.*expected \(512, 10\).*received \(512, 1000\)"):
        load_resnet18_weights(model, wrong_head, "resnet18")
    with pytest.raises(ValueError, match="no ResNet18 layers with prefix 'arterial'"):
        load_resnet18_weights(model, state_dict, "arterial")


def test_read_errors(tmp_path):
    legacy = tmp_path / "legacy.pth"
    legacy.write_bytes(pickle.dumps({"conv1.weight": [1.0]}, protocol=2))
    with pytest.raises(ValueError, match="legacy"):
        read_state_dict(legacy)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        read_state_dict(tmp_path / "missing.pth")
    evil = tmp_path / "evil.pth"
    _write_stored_zip(evil, [("evil/data.pkl", b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00trueR.")])
    with pytest.raises(ValueError, match=r"evil.pth: refusing to load os.system"):
        read_state_dict(evil)


def test_signature_branch_loads_without_fc(tmp_path, state_dict, caplog):
    path = tmp_path / "imagenet.pth"
    write_torch_state_dict(path, state_dict)
    model = build_signature_model("portal", 32)
    with caplog.at_level("INFO", logger="mvi_tf.models.cdlm"):
        loaded = load_pretrained(model, path, ["portal"])
    assert "imagenet.pth" in caplog.text
    assert not any(key.startswith("portal:fc.") for key in loaded)
    np.testing.assert_array_equal(
        model.get_layer("portal_conv1").get_weights()[0], state_dict["conv1.weight"].transpose(2, 3, 1, 0)
    )
    np.testing.assert_array_equal(
        model.get_layer("portal_stage3_block1_downsample_bn").get_weights()[3],
        state_dict["layer3.0.downsample.1.running_var"],
    )


def test_torch_interoperability(tmp_path, state_dict, images, reference_logits):
    """Where torch is installed: our reader reads torch.save, torch reads our writer, and torch agrees."""
    torch = pytest.importorskip("torch", reason="[torch] torch is not installed; to run it: pip install torch")
    functional = torch.nn.functional
    tensors = {k: torch.from_numpy(v.copy()) for k, v in state_dict.items()}
    saved = tmp_path / "torch_saved.pth"
    torch.save(tensors, saved)
    read = read_state_dict(saved)
    for key, value in state_dict.items():
        np.testing.assert_array_equal(read[key], value, err_msg=key)
    ours = tmp_path / "ours.pth"
    write_torch_state_dict(ours, state_dict)
    loaded = torch.load(ours, weights_only=True)
    for key, value in state_dict.items():
        np.testing.assert_array_equal(loaded[key].numpy(), value, err_msg=key)

    def bn(x, prefix):
        return functional.batch_norm(
            x,
            t[f"{prefix}.running_mean"],
            t[f"{prefix}.running_var"],
            t[f"{prefix}.weight"],
            t[f"{prefix}.bias"],
            training=False,
            eps=BN_EPS,
        )

    t = {k: v.double() for k, v in tensors.items()}
    with torch.no_grad():
        x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy()).double()
        x = functional.relu(bn(functional.conv2d(x, t["conv1.weight"], stride=2, padding=3), "bn1"))
        x = functional.max_pool2d(x, 3, stride=2, padding=1)
        for stage in range(1, 5):
            for block in range(2):
                p = f"layer{stage}.{block}"
                stride = 2 if stage > 1 and block == 0 else 1
                y = functional.relu(
                    bn(functional.conv2d(x, t[f"{p}.conv1.weight"], stride=stride, padding=1), f"{p}.bn1")
                )
                y = bn(functional.conv2d(y, t[f"{p}.conv2.weight"], padding=1), f"{p}.bn2")
                if f"{p}.downsample.0.weight" in t:
                    x = bn(
                        functional.conv2d(x, t[f"{p}.downsample.0.weight"], stride=stride),
                        f"{p}.downsample.1",
                    )
                x = functional.relu(y + x)
        torch_logits = functional.linear(x.mean(dim=(2, 3)), t["fc.weight"], t["fc.bias"]).numpy()
    np.testing.assert_allclose(torch_logits, reference_logits, rtol=1e-9, atol=1e-9)


@pytest.mark.slow
def test_full_size_imagenet_layout_matches_reference(tmp_path):
    """The real torchvision layout (1000 classes, 224 px) through a .pth file matches the reference."""
    state = _random_state_dict(seed=11, num_classes=1000)
    path = tmp_path / "resnet18-imagenet-layout.pth"
    write_torch_state_dict(path, state)
    image = np.random.default_rng(5).normal(size=(1, 224, 224, 3)).astype(np.float32)
    model = resnet18_classifier()
    load_resnet18_weights(model, read_state_dict(path), "resnet18")
    logits = keras.ops.convert_to_numpy(model(image, training=False))
    np.testing.assert_allclose(logits, reference_resnet18(image, state), rtol=1e-4, atol=1e-4)
