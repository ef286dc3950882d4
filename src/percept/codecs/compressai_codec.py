"""CompressAI models as codecs: real entropy-coded bitstreams from `compress`/`decompress`.

Zoo names (bmshj2018-factorized, bmshj2018-hyperprior, mbt2018-mean, mbt2018, cheng2020-anchor,
cheng2020-attn) take quality 1..8 (1..6 for cheng2020). Weights come from `weights=PATH` (a local
state dict, .pth/.pt/.pth.tar or .safetensors) or are downloaded from CompressAI's URLs into the
torch hub cache. A digest of the weights goes into the file header, so a decoder given other
weights refuses instead of decoding garbage.

Payload (no pickle): varints H, W (the size before padding), the latent shape (count, dims), then
the strings (group count; per group, item count; per item, length and bytes).
"""

from __future__ import annotations

import hashlib
import socket
import urllib.error
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor, nn

from percept.codecs.registry import CodecInfo, import_quietly, register_codec
from percept.codecs.varint import encode_varint as _varint
from percept.core.images import check_pixels, one_line, quantize
from percept.core.tiling import pad_to_multiple
from percept.errors import CodecError, WeightsUnavailable
from percept.hub import standins

DOWNLOAD_TIMEOUT_S = 15.0


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    for _ in range(10):
        if pos >= len(data):
            raise CodecError("compressai payload is truncated")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos
    raise CodecError("compressai payload is corrupted (bad length field)")


def serialize(height: int, width: int, strings, shape) -> bytes:
    """Strings (list per entropy model of list per batch item of bytes) + latent shape -> bytes."""
    out = bytearray(_varint(height) + _varint(width) + _varint(len(shape)))
    for dim in shape:
        out += _varint(int(dim))
    out += _varint(len(strings))
    for group in strings:
        out += _varint(len(group))
        for item in group:
            if not isinstance(item, bytes):
                raise CodecError(
                    f"unsupported compressai output: expected bytes, got {type(item).__name__}"
                )
            out += _varint(len(item)) + item
    return bytes(out)


def deserialize(data: bytes) -> tuple[int, int, list[list[bytes]], list[int]]:
    height, pos = _read_varint(data, 0)
    width, pos = _read_varint(data, pos)
    ndim, pos = _read_varint(data, pos)
    if ndim > 8:
        raise CodecError("compressai payload is corrupted (latent rank)")
    shape = []
    for _ in range(ndim):
        dim, pos = _read_varint(data, pos)
        if dim >= 1 << 31:
            raise CodecError("compressai payload is corrupted (a latent size beyond 2^31)")
        shape.append(dim)
    strings: list[list[bytes]] = []
    n_groups, pos = _read_varint(data, pos)
    for _ in range(min(n_groups, 64)):
        n_items, pos = _read_varint(data, pos)
        group = []
        for _ in range(min(n_items, 1024)):
            length, pos = _read_varint(data, pos)
            if pos + length > len(data):
                raise CodecError("compressai payload is truncated")
            group.append(bytes(data[pos : pos + length]))
            pos += length
        strings.append(group)
    if pos != len(data) or len(strings) != n_groups:
        raise CodecError("compressai payload is corrupted (trailing or missing bytes)")
    return height, width, strings, shape


def _round_ste(x: Tensor) -> Tensor:
    """Rounding forward, identity backward (straight-through estimator)."""
    return x + (torch.round(x) - x).detach()


class CompressAIOperator(nn.Module):
    """The differentiable codec operator A(x) = g_s(round_ste(g_a(x))) of a CompressAI model.

    x in [0, 1], [B,3,H,W]; padded by edge replication to the model's downsampling factor (as
    `CompressAICodec` does) and cropped back. Rounding the latent without the entropy model's means
    is exact for scale-only hyperpriors (bmshj2018) and an approximation for mean-scale models.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if not (hasattr(model, "g_a") and hasattr(model, "g_s")):
            raise CodecError(
                f"{type(model).__name__} has no g_a/g_s transforms: not a CompressAI model"
            )
        self.model = model.eval().requires_grad_(False)
        self.multiple = int(getattr(model, "downsampling_factor", 64))

    def forward(self, x: Tensor) -> Tensor:
        padded, (h, w) = pad_to_multiple(x, self.multiple)
        return self.model.g_s(_round_ste(self.model.g_a(padded)))[..., :h, :w].clamp(0, 1)


class CompressAICodec:
    """Any CompressAI `CompressionModel` as a Codec (zoo models, tiny test models, project models).

    Runs on CPU in eval mode; `update(force=True)` builds the entropy coder's CDF tables once.
    Inputs are padded on the right and bottom by edge replication to the model's downsampling
    factor (64 when the model does not say), and the output is cropped back and rounded to 8 bits,
    as a decoder that writes a PNG would.
    """

    def __init__(
        self, model: torch.nn.Module, name: str, quality: int, weights_id: str | None = None
    ):
        self.model = model.eval().cpu()
        self.model.update(force=True)
        self.name, self.quality, self.weights_id = name, quality, weights_id
        self.multiple = int(getattr(model, "downsampling_factor", 64))
        self.params = {"quality": quality, "pad": f"replicate/{self.multiple}"}
        if weights_id:
            self.params["weights_sha256"] = weights_id

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> bytes:
        height, width = x.shape[-2:]
        pad_h, pad_w = (-height) % self.multiple, (-width) % self.multiple
        padded = F.pad(x.float().cpu(), (0, pad_w, 0, pad_h), mode="replicate")
        out = self.model.compress(padded)
        return serialize(height, width, out["strings"], list(out["shape"]))

    @torch.no_grad()
    def _layout(self) -> tuple[int, tuple[int, int], int]:
        """(string groups, latent shape of one multiple x multiple tile, latent symbols per tile
        bounded above), from compressing one blank tile once: what a valid payload must declare."""
        if getattr(self, "_layout_cache", None) is None:
            probe = torch.zeros(1, 3, self.multiple, self.multiple)
            out = self.model.compress(probe)
            unit = tuple(int(d) for d in out["shape"])
            symbols = 2 * int(self.model.g_a(probe).numel()) if hasattr(self.model, "g_a") else 0
            self._layout_cache = (len(out["strings"]), unit, max(symbols, 4096))
        return self._layout_cache

    def checked_payload(
        self, data: bytes, height: int | None = None, width: int | None = None
    ) -> tuple[int, int, list[list[bytes]], list[int]]:
        """Parse a payload and check what it declares before anything is decoded: its image size
        (against the file header's `height` x `width` when given, and the pixel cap), the latent
        grid that size must have, one batch item, the model's number of string groups. Returns
        (height, width, strings, shape) with each string followed by zero bytes: CompressAI's rANS
        decoder reads past a string's end without a bound check (a short string under a large grid
        crashes the process), so it is given zeros to read instead of foreign memory."""
        ph, pw, strings, shape = deserialize(data)
        if height is not None and (ph, pw) != (height, width):
            raise CodecError(
                f"{self.name} payload declares a {pw}x{ph} image, but the header says "
                f"{width}x{height}: the file is inconsistent"
            )
        if ph == 0 or pw == 0:
            raise CodecError(f"{self.name} payload declares an empty {pw}x{ph} image")
        check_pixels(ph, pw, f"the {self.name} payload's image")
        groups, unit, symbols = self._layout()
        tiles = (-(-ph // self.multiple), -(-pw // self.multiple))
        expected = [tiles[0] * unit[0], tiles[1] * unit[1]] if len(unit) == 2 else None
        if expected is not None and list(shape) != expected:
            shown = "x".join(str(d) if d < 10**6 else "(huge)" for d in shape) or "(none)"
            raise CodecError(
                f"{self.name} payload declares a latent grid of {shown} for a {pw}x{ph} image, "
                f"which has {expected[0]}x{expected[1]}: the file is corrupted"
            )
        if len(strings) != groups:
            raise CodecError(
                f"{self.name} payload has {len(strings)} string groups; this model writes {groups}"
            )
        if any(len(group) != 1 for group in strings):
            raise CodecError(
                f"{self.name} payload holds a batch of {max(len(g) for g in strings)} images; "
                "a percept file holds one"
            )
        pad = bytes(4 * symbols * tiles[0] * tiles[1] + 64)
        return ph, pw, [[group[0] + pad] for group in strings], list(shape)

    def check_payload(self, data: bytes, height: int, width: int) -> None:
        """Refuse a payload that does not match the file header (see `checked_payload`)."""
        self.checked_payload(data, height, width)

    @torch.no_grad()
    def decode(self, data: bytes) -> torch.Tensor:
        height, width, strings, shape = self.checked_payload(data)
        try:
            x_hat = self.model.decompress(strings, torch.Size(shape))["x_hat"]
        except MemoryError:
            raise CodecError(f"{self.name} payload cannot be decoded: out of memory") from None
        except Exception as exc:  # CompressAI asserts, overflows and index errors on bad input
            raise CodecError(
                f"{self.name} payload cannot be decoded ({type(exc).__name__}: {one_line(exc)})"
            ) from None
        return quantize(x_hat[..., :height, :width])

    def operator(self) -> CompressAIOperator:
        """The codec as a differentiable operator (the slow preset's DPS constraint)."""
        return CompressAIOperator(self.model)

    def check_params(self, params: dict) -> None:
        """Refuse a file encoded with other weights than the ones loaded here."""
        recorded = params.get("weights_sha256")
        if recorded and self.weights_id and recorded != self.weights_id:
            raise CodecError(
                f"this file was encoded by {self.name} with weights sha256 {recorded}..., but the weights "
                f"loaded here are sha256 {self.weights_id}...: pass --weights the file that encoded it"
            )


ZOO_QUALITIES = {
    "bmshj2018-factorized": 8,
    "bmshj2018-hyperprior": 8,
    "mbt2018-mean": 8,
    "mbt2018": 8,
    "cheng2020-anchor": 6,
    "cheng2020-attn": 6,
}


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    """First 8 hex digits of a SHA-256 over the learned tensors (names, dtypes, shapes, values), so
    the same weights match whatever file format holds them. The entropy coder's tables are left
    out: `update(force=True)` rebuilds them from the learned tensors."""
    digest = hashlib.sha256()
    for name in sorted(state):
        if name.rsplit(".", 1)[-1] in ("_quantized_cdf", "_offset", "_cdf_length"):
            continue
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()[:8]


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors or a torch file (loaded with weights_only=True, no pickle code)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsUnavailable(f"weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable file is a user error here
        raise WeightsUnavailable(
            f"cannot read weights {path}: {str(exc).splitlines()[0]}"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsUnavailable(f"{path} is not a state dict (a mapping of names to tensors)")
    return state


def _download(url: str) -> Path:
    """Fetch `url` into the torch hub cache, failing fast (short socket timeout) when offline."""
    target = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        torch.hub.download_url_to_file(url, str(target), hash_prefix=None, progress=True)
    finally:
        socket.setdefaulttimeout(previous)
    return target


def cached_checkpoint(name: str, quality: int, metric: str = "mse") -> Path:
    """Where the zoo weights of (name, quality) are, or will be once downloaded (torch.hub's cache)."""
    zoo = import_quietly("compressai.zoo.image")
    url = zoo.model_urls[name][metric][quality]
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def zoo_reachable(timeout: float = 3.0) -> bool:
    """Whether CompressAI's weight server answers a TCP connection within `timeout`."""
    try:
        socket.create_connection(("compressai.s3.amazonaws.com", 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def zoo_model(name: str, quality: int, weights: str | Path | None = None, metric: str = "mse"):
    """A CompressAI zoo architecture with real weights, from `weights` or CompressAI's URL."""
    zoo = import_quietly("compressai.zoo.image")
    model_architectures, model_urls = zoo.model_architectures, zoo.model_urls
    load_pretrained = import_quietly("compressai.zoo.pretrained").load_pretrained

    if weights is None:
        url = model_urls[name][metric][quality]
        try:
            path = _download(url)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise WeightsUnavailable(
                f"{name} quality {quality} needs pretrained weights from {url} and the download failed "
                f"({reason}); download that file elsewhere and pass --weights PATH (Python: weights=PATH)"
            ) from None
    else:
        path = Path(weights)
    if standins.checkpoint_is_standin(path):
        print(standins.notice(f"{name} quality {quality} ({path.name})", "CompressAI's zoo weights"), flush=True)
    state = load_pretrained(load_state_dict(path))
    try:
        model = model_architectures[name].from_state_dict(state)
    except (RuntimeError, KeyError, IndexError) as exc:
        raise WeightsUnavailable(
            f"{path} does not hold {name} weights: {str(exc).splitlines()[0]}"
        ) from None
    return model, weights_digest(state)


def _zoo_factory(name: str):
    def factory(
        quality: int, weights: str | Path | None = None, metric: str = "mse"
    ) -> CompressAICodec:
        if metric not in ("mse", "ms-ssim"):
            raise CodecError(f"{name}: metric must be 'mse' or 'ms-ssim', got {metric!r}")
        model, weights_id = zoo_model(name, quality, weights, metric)
        codec = CompressAICodec(model, name, quality, weights_id)
        codec.params["metric"] = metric
        return codec

    return factory


def register() -> None:
    """Add these codecs to the registry (called by percept.codecs.registry)."""
    for name, top in ZOO_QUALITIES.items():
        register_codec(
            name,
            _zoo_factory(name),
            CodecInfo(
                name,
                "compressai",
                1,
                top,
                min(3, top),
                "zoo quality (lambda index); weights download, or --weights PATH",
                "CompressAI pretrained model; offline pass weights=PATH / --weights PATH",
            ),
        )
