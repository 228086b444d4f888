"""Where a model's starting weights come from, parsed once from `teacher.weights` /
`distill.weights`, and fetching them: `auto` (ImageNet weights when they are cached or can be
downloaded, else random initialisation, said in one line), `none` (random initialisation),
`imagenet` (the model zoo's pretrained weights: torchvision's, or timm's through its hub) or the
path of a local checkpoint."""
from __future__ import annotations

import contextlib
import functools
import io
import os
import pickle
import socket
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn

from compress.core import architectures
from compress.core.errors import CompressError, summary
from compress.core.heads import classifier_head

DOWNLOAD_TIMEOUT_S = 20  # per socket operation: an offline machine that drops packets must not hang a run
PROBE_TIMEOUT_S = 3  # opening a connection to a weights host; measured: the HF hub's own retries cost 40 s offline
HF_HUB = "https://huggingface.co"
HF_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm looks for in a hub repository, in its order


@functools.cache
def reachable(url: str) -> bool:
    """Can a TCP connection to `url`'s host be opened within PROBE_TIMEOUT_S, name lookup included?
    Asked once per host and process, so an offline machine learns it in seconds, not after each
    library's retries. The lookup runs in a thread: a socket timeout does not bound getaddrinfo."""
    parsed = urlparse(url)
    answer: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((parsed.hostname or "", parsed.port or 443), timeout=PROBE_TIMEOUT_S):
                answer.append(True)
        except OSError:
            answer.append(False)

    worker = threading.Thread(target=probe, daemon=True)
    worker.start()
    worker.join(PROBE_TIMEOUT_S)
    return bool(answer and answer[0])


@dataclass(frozen=True)
class WeightsSource:
    kind: Literal["auto", "none", "imagenet", "file"]
    path: str = ""

    @classmethod
    def parse(cls, text: str) -> WeightsSource:
        if text in ("", "none"):
            return cls("none")
        if text in ("auto", "imagenet"):
            return cls(text)  # type: ignore[arg-type]
        return cls("file", text)

    @property
    def file(self) -> str | None:
        """The checkpoint to read, when the weights come from one (a stage input the cache key covers)."""
        return self.path if self.kind == "file" else None

    def files(self) -> list[str]:
        return [self.path] if self.kind == "file" else []

    def describe(self) -> str:
        return {"none": "random initialisation", "imagenet": "ImageNet weights", "auto": "ImageNet weights if available",
                "file": f"the checkpoint {self.path}"}[self.kind]


def _torchvision_weights(arch: str):
    weights = torchvision.models.get_model_weights(arch).DEFAULT
    return weights, Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def _download_torchvision(arch: str):
    """torchvision's DEFAULT weights enum for `arch`, its file in the local cache (downloaded once)."""
    weights, cache = _torchvision_weights(arch)
    if cache.is_file():
        return weights
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        if not reachable(weights.url):
            raise ConnectionError(f"{urlparse(weights.url).hostname} is unreachable")
        with contextlib.redirect_stdout(io.StringIO()):  # torch.hub announces every download on stdout
            torch.hub.load_state_dict_from_url(weights.url, progress=False, check_hash=True)
    except Exception as exc:  # offline, proxy, HTTP error: all end the same way for the user
        raise CompressError(
            f"ImageNet weights for {arch} are not cached at {cache} and could not be downloaded "
            f"({type(exc).__name__}); copy {weights.url} to that path (or set TORCH_HOME), "
            "or use weights = \"none\"") from None
    finally:
        socket.setdefaulttimeout(previous)
    return weights


def imagenet_model(arch: str) -> nn.Module:
    """The architecture with its zoo's ImageNet weights (1000-class head), from the local cache or
    downloaded once into it (torchvision: $TORCH_HOME/hub/checkpoints; timm: the Hugging Face cache)."""
    if architectures.is_timm(arch):
        return _timm_pretrained(arch)
    return architectures.without_auxiliary_heads(torchvision.models.get_model(arch, weights=_download_torchvision(arch)))


def _timm_cached_file(name: str) -> str | None:
    """The model's weights in the Hugging Face cache, if they are there (looked up without the network)."""
    from huggingface_hub import try_to_load_from_cache
    hub_id = getattr(architectures._timm().models.get_pretrained_cfg(name), "hf_hub_id", None)
    if not isinstance(hub_id, str):
        return None
    for filename in HF_FILES:
        found = try_to_load_from_cache(hub_id, filename)
        if isinstance(found, str):
            return found
    return None


def _timm_pretrained(arch: str) -> nn.Module:
    """timm's ImageNet weights: from the Hugging Face cache when there, else downloaded once into it."""
    timm, name = architectures._timm(), arch[len(architectures.TIMM):]
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        cached = _timm_cached_file(name)
        if cached:
            return timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": cached})
        if not reachable(HF_HUB):
            raise ConnectionError("huggingface.co is unreachable")
        return timm.create_model(name, pretrained=True)
    except Exception as exc:
        raise CompressError(f"ImageNet weights for {arch} are not in the Hugging Face cache and could not be "
                            f"downloaded ({summary(exc, 120)}); set HF_HOME to a "
                            "cache holding them, or use weights = \"none\"") from None
    finally:
        socket.setdefaulttimeout(previous)


def resolve_auto(arch: str, text: str) -> tuple[str, str | None]:
    """`weights = "auto"` made concrete for `arch`: ("imagenet", None) when the weights are cached or
    could be downloaded now, else ("none", why). Anything else is returned as it is."""
    if WeightsSource.parse(text).kind != "auto":
        return text, None
    try:
        if architectures.is_timm(arch):
            _timm_pretrained(arch)
        else:
            _download_torchvision(arch)
    except CompressError as exc:
        return "none", str(exc).split(";")[0]
    return "imagenet", None


def load_checkpoint(path: str | Path) -> tuple[dict, dict]:
    """(state_dict, meta) from our format or a bare state_dict; never unpickles code."""
    path = Path(path)
    if not path.is_file():
        raise CompressError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CompressError(f"checkpoint {path} holds Python objects or code, which compress does not unpickle "
                            "(that could run code); save the model's state_dict instead: "
                            "torch.save(model.state_dict(), PATH)") from None
    except Exception as exc:
        raise CompressError(f"checkpoint {path} cannot be read as a PyTorch file ({type(exc).__name__}); "
                            "is it truncated or another format?") from None
    if isinstance(obj, dict) and "state_dict" in obj:
        state, meta = obj["state_dict"], obj.get("meta", {})
    elif isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state, meta = obj, {}
    else:
        raise CompressError(f"checkpoint {path} holds neither a state_dict nor {{state_dict, meta}}")
    state = OrderedDict(state)
    if meta.get("state_metadata") is not None:
        state._metadata = OrderedDict(meta["state_metadata"])  # type: ignore[attr-defined]
    return state, meta


def load_start(model: nn.Module, path: str, arch: str) -> bool:
    """Start `model` from the weights in the checkpoint at `path` (compress's or a bare
    state_dict). A checkpoint from another task keeps its backbone; its head is re-initialised.
    Returns whether the head is new (its weights did not fit the classes)."""
    state, _ = load_checkpoint(path)
    head_name, _ = classifier_head(model)
    own = model.state_dict()
    head = head_name + "."
    kept = {k: v for k, v in state.items() if not (k.startswith(head) and (k not in own or v.shape != own[k].shape))}
    fresh = len(kept) < len(state) or not any(k.startswith(head) for k in kept)
    state = kept
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise CompressError(f"checkpoint {path} does not fit {arch}: {str(exc).splitlines()[-1].strip()}") from None
    missing = [k for k in missing if not k.startswith(head)]
    if missing or unexpected:
        raise CompressError(f"checkpoint {path} does not fit {arch}: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return fresh
