"""One base model, many LoRA adapters in the same batch, P(yes) per record and adapter.

The base is loaded once with ``AutoModelForSequenceClassification`` (fp32 on CPU, bf16 on CUDA) and
run through its own modules, so attention, masks, pooling and positions are exactly the model's.
Every linear layer some adapter targets is wrapped in a :class:`MultiLoraLinear`. A batch of ``B``
records runs through the layers below the lowest layer any loaded adapter touches once (the
*shared lower layers*); at that layer a forward pre-hook replicates the hidden states (and every
batch-shaped argument: masks, positions) once per adapter, adapter-major, so ``K`` adapters see
``K*B`` rows through the upper layers. Each adapter's own head then gives its logits, with the
model's pooling: BERT's pooler on the first token for encoders, the last non-padding token for
decoders (Llama/Mistral/Qwen ``...ForSequenceClassification``). Since only that token of the last
layer is read, the last layer's position-wise part runs at that token only (``pooled_only``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import transformers
from torch import nn
from transformers import AutoModelForSequenceClassification
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.bert.modeling_bert import eager_attention_forward

from .adapters import AdapterError, LoraAdapter
from .multilora import MultiLoraLinear, RowGroups


@dataclass(frozen=True)
class Architecture:
    """Where the parts of a sequence-classification model are: layers, the module after them, the head."""

    kind: Literal["encoder", "decoder"]
    inner: nn.Module
    layers_path: str
    post_path: str
    head_name: str
    stages: tuple[nn.Module, ...]  # the transformer layers, then the post module (pooler / final norm)

    @property
    def n_layers(self) -> int:
        return len(self.stages) - 1

    def stage_of(self, module_path: str) -> int:
        """Index of the stage (layer, or ``n_layers`` for the post module) that holds ``module_path``."""
        if module_path.startswith(self.layers_path + "."):
            return int(module_path[len(self.layers_path) + 1:].split(".", 1)[0])
        if module_path == self.post_path or module_path.startswith(self.post_path + "."):
            return self.n_layers
        raise AdapterError(f"LoRA on {module_path!r} is outside the transformer layers ({self.layers_path}.N) "
                           f"and {self.post_path}; the engine does not support it")


def architecture(model: nn.Module) -> Architecture:
    """Recognise a BERT-like encoder (``.classifier`` on the pooler) or a Llama-like decoder (``.score``)."""
    prefix = model.base_model_prefix
    inner = getattr(model, prefix, None)
    encoder_layers = getattr(getattr(inner, "encoder", None), "layer", None)
    if isinstance(encoder_layers, nn.ModuleList) and getattr(inner, "pooler", None) is not None \
            and isinstance(getattr(model, "classifier", None), nn.Linear):
        return Architecture("encoder", inner, f"{prefix}.encoder.layer", f"{prefix}.pooler", "classifier",
                            (*encoder_layers, inner.pooler))
    decoder_layers = getattr(inner, "layers", None)
    if isinstance(decoder_layers, nn.ModuleList) and isinstance(getattr(inner, "norm", None), nn.Module) \
            and isinstance(getattr(model, "score", None), nn.Linear):
        return Architecture("decoder", inner, f"{prefix}.layers", f"{prefix}.norm", "score",
                            (*decoder_layers, inner.norm))
    raise ValueError(f"{type(model).__name__}: unsupported model; the engine runs BERT-like encoders "
                     "(pooler + classifier) and Llama-like decoders (layers + norm + score)")


def _repeat(value: Any, batch: int, copies: int) -> Any:
    """Replicate batch-shaped tensors (ndim >= 2, first dim ``batch``) ``copies`` times, adapter-major."""
    if isinstance(value, torch.Tensor):
        if value.dim() >= 2 and value.shape[0] == batch:
            return value.repeat(copies, *([1] * (value.dim() - 1)))
        return value
    if isinstance(value, (tuple, list)):
        return type(value)(_repeat(item, batch, copies) for item in value)
    if isinstance(value, dict):
        return {key: _repeat(item, batch, copies) for key, item in value.items()}
    return value


def _first_query_attention(module: nn.Module, hidden: torch.Tensor, attention_mask: torch.Tensor | None,
                           **kwargs: Any) -> tuple[torch.Tensor, Any]:
    """BERT self-attention for the first token's query only: ``[rows, 1, hidden]`` (keys, values: all tokens)."""
    rows, width = hidden.shape[:2]
    size = module.attention_head_size
    query = module.query(hidden[:, :1]).view(rows, 1, -1, size).transpose(1, 2)
    key = module.key(hidden).view(rows, width, -1, size).transpose(1, 2)
    value = module.value(hidden).view(rows, width, -1, size).transpose(1, 2)
    if isinstance(attention_mask, torch.Tensor) and attention_mask.dim() == 4 and attention_mask.shape[-2] > 1:
        attention_mask = attention_mask[:, :, :1]
    attend = ALL_ATTENTION_FUNCTIONS.get_interface(module.config._attn_implementation, eager_attention_forward)
    out, weights = attend(module, query, key, value, attention_mask, dropout=0.0, scaling=module.scaling, **kwargs)
    return out.reshape(rows, 1, -1).contiguous(), weights


class MultiLoraModel:
    """The base model with its loaded adapters; :meth:`probabilities` scores a padded batch."""

    def __init__(self, model: nn.Module, share_lower: bool = True) -> None:
        """Wrap a loaded ``...ForSequenceClassification`` model (its device and dtype are kept)."""
        weight = next(model.parameters())
        self.device, self.dtype = weight.device, weight.dtype
        self.share_lower = share_lower
        self.model = model.eval()
        self.arch = architecture(self.model)
        self.config = self.model.config
        self.adapters: dict[str, LoraAdapter] = {}
        self.groups = RowGroups()
        self.wrapped: dict[str, MultiLoraLinear] = {}
        self._fan: tuple[int, int, int] | None = None  # (first replicated stage, records, copies)
        self._head_w = self._head_b = None
        for index, stage in enumerate(self.arch.stages):
            stage.register_forward_pre_hook(self._fan_hook(index), with_kwargs=True)
        self.pooled_only = True  # the last layer's position-wise part runs at the pooled token only
        self.first_query_only = True  # with pooled_only, BERT's last layer: the first token's query only
        self._pooled: torch.Tensor | None = None  # decoder: each row's pooled position in the batch being run
        self._mlp_shape: torch.Size | None = None
        last = self.arch.stages[self.arch.n_layers - 1]
        if self.arch.kind == "encoder":
            last.attention.register_forward_hook(self._first_token_only)
            self._first_query_only(last.attention)
        else:
            last.mlp.register_forward_pre_hook(self._gather_pooled)
            last.mlp.register_forward_hook(self._scatter_pooled)

    @classmethod
    def load(cls, base_path: str | Path, device: str = "cpu", share_lower: bool = True) -> MultiLoraModel:
        """Load a base model folder once: fp32 on CPU, bf16 on CUDA."""
        dtype = torch.float32 if torch.device(device).type == "cpu" else torch.bfloat16
        verbosity = transformers.logging.get_verbosity()
        transformers.logging.set_verbosity_error()  # the base's own head is unused: no "MISSING" report
        try:
            model = AutoModelForSequenceClassification.from_pretrained(str(base_path), num_labels=2, dtype=dtype)
        finally:
            transformers.logging.set_verbosity(verbosity)
        return cls(model.to(device), share_lower=share_lower)

    @property
    def max_positions(self) -> int | None:
        """The base model's position limit (``max_position_embeddings``), if it has one."""
        return getattr(self.config, "max_position_embeddings", None)

    @property
    def question_ids(self) -> list[str]:
        return list(self.adapters)

    @property
    def fan_stage(self) -> int:
        """First stage run once per adapter: the lowest adapted stage, or 0 without layer sharing."""
        if not self.share_lower or not self.adapters:
            return 0
        return min(self.arch.stage_of(path) for adapter in self.adapters.values() for path in adapter.modules)

    def _fan_hook(self, index: int) -> Callable:
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
            if self._fan is None or index < self._fan[0] or self._fan[2] == 1:
                return None
            _, batch, copies = self._fan
            return _repeat(args, batch, copies), _repeat(kwargs, batch, copies)
        return hook

    # Only the pooled token of the last layer's output is read (BERT's pooler: the first token; a
    # decoder: the last non-padding one), and the layer's position-wise part (BERT: attention output
    # onwards; decoder: the MLP) is most of its work. So in a batch that part runs at that token only:
    # BERT's last layer continues with the first token alone; a decoder's MLP runs on the pooled
    # tokens and leaves zeros elsewhere (positions never read).
    def _first_token_only(self, module: nn.Module, args: tuple, output: Any) -> Any:
        if self._fan is None or not self.pooled_only:
            return None
        return (output[0][:, :1], *output[1:])

    # In BERT's last layer, the attention output is read at the first token only, so only that token
    # needs a query: keys and values still run over every token, the query, the attention scores and
    # the residual of the attention output at that token alone.
    def _first_query_only(self, attention: nn.Module) -> None:
        self_attention, output = getattr(attention, "self", None), getattr(attention, "output", None)
        if output is None or not all(hasattr(self_attention, name) for name in
                                     ("query", "key", "value", "attention_head_size", "scaling", "config")):
            return  # not BERT's self-attention layout: the whole attention runs
        whole = self_attention.forward

        def forward(hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, cache: Any = None,
                    **kwargs: Any) -> tuple:
            if self._fan is None or not (self.pooled_only and self.first_query_only) or cache is not None:
                return whole(hidden_states, attention_mask=attention_mask, cache=cache, **kwargs)
            return _first_query_attention(self_attention, hidden_states, attention_mask, **kwargs)

        self_attention.forward = forward
        output.register_forward_pre_hook(self._first_token_residual)

    def _first_token_residual(self, module: nn.Module, args: tuple) -> tuple | None:
        if self._fan is None or not (self.pooled_only and self.first_query_only) or len(args) != 2:
            return None
        return args[0], args[1][:, :1]

    def _gather_pooled(self, module: nn.Module, args: tuple) -> tuple | None:
        if self._pooled is None:
            return None
        hidden = args[0]
        self._mlp_shape = hidden.shape
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        return (hidden[rows, self._pooled].unsqueeze(1), *args[1:])

    def _scatter_pooled(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        if self._pooled is None:
            return None
        full = output.new_zeros(self._mlp_shape)
        full[torch.arange(full.shape[0], device=full.device), self._pooled] = output[:, 0]
        return full

    def _base_linear(self, path: str) -> nn.Linear:
        try:
            module = self.model.get_submodule(path)
        except AttributeError:
            raise AdapterError(f"LoRA targets {path!r}, which this base model does not have") from None
        module = module.base if isinstance(module, MultiLoraLinear) else module
        if not isinstance(module, nn.Linear):
            raise AdapterError(f"LoRA on {path!r} ({type(module).__name__}): the engine applies LoRA to nn.Linear only")
        return module

    def _check(self, adapter: LoraAdapter) -> None:
        if not adapter.modules:
            raise AdapterError(f"{adapter.source.path}: adapter {adapter.question_id!r} has no LoRA weights")
        for path, weights in adapter.modules.items():
            self.arch.stage_of(path)
            linear = self._base_linear(path)
            if weights.a.shape[0] != linear.in_features or weights.b.shape[1] != linear.out_features:
                raise AdapterError(f"{adapter.source.path}: LoRA on {path!r} is {weights.a.shape[0]}->{weights.b.shape[1]}, "
                                   f"the base layer is {linear.in_features}->{linear.out_features}")
        head = getattr(self.model, self.arch.head_name)
        if adapter.head["weight"].shape != head.weight.shape:
            raise AdapterError(f"{adapter.source.path}: head weight {tuple(adapter.head['weight'].shape)} does not fit "
                               f"this base model's {tuple(head.weight.shape)}")

    def add(self, adapter: LoraAdapter) -> None:
        """Load (or replace) the adapter of ``adapter.question_id``; the base weights are untouched."""
        self._check(adapter)
        previous = self.adapters.get(adapter.question_id)
        self.adapters[adapter.question_id] = adapter
        try:
            self._rebuild()
        except Exception:
            if previous is None:
                del self.adapters[adapter.question_id]
            else:
                self.adapters[adapter.question_id] = previous
            self._rebuild()
            raise

    def remove(self, question_id: str) -> LoraAdapter:
        """Unload a question's adapter; raises ``KeyError`` if it is not loaded."""
        adapter = self.adapters.pop(question_id)
        self._rebuild()
        return adapter

    def _rebuild(self) -> None:
        adapters = list(self.adapters.values())
        for path in sorted({path for adapter in adapters for path in adapter.modules} - set(self.wrapped)):
            parent, _, child = path.rpartition(".")
            wrapper = MultiLoraLinear(self._base_linear(path), self.groups)
            setattr(self.model.get_submodule(parent), child, wrapper)
            self.wrapped[path] = wrapper
        for path, wrapper in self.wrapped.items():
            wrapper.set_adapters([(w.a, w.b, w.scale) if (w := adapter.modules.get(path)) else None
                                  for adapter in adapters])
        if not adapters:
            self._head_w = self._head_b = None
            return
        kw = {"dtype": self.dtype, "device": self.device}
        self._head_w = torch.stack([adapter.head["weight"].T for adapter in adapters]).to(**kw)
        self._head_b = torch.stack([adapter.head.get("bias", torch.zeros(2)) for adapter in adapters]).to(**kw)[:, None]

    def _last_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        pad = self.config.get_text_config().pad_token_id
        if pad is None:
            return attention_mask.sum(1) - 1
        positions = torch.arange(input_ids.shape[1], device=input_ids.device, dtype=torch.int32)
        return (positions * (input_ids != pad).to(torch.int32)).argmax(-1)

    @torch.inference_mode()
    def probabilities(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """P(yes) ``[records, adapters]`` float32 for a right-padded batch, adapters in load order."""
        if not self.adapters:
            raise RuntimeError("no adapters loaded")
        input_ids, attention_mask = input_ids.to(self.device), attention_mask.to(self.device)
        copies, batch = len(self.adapters), input_ids.shape[0]
        fan = self.fan_stage
        self.groups.start(copies)
        self._fan = (fan, batch, copies)
        if self.arch.kind == "decoder":
            last = self._last_tokens(input_ids, attention_mask)
            if self.pooled_only:
                self._pooled = last.repeat(copies if fan < self.arch.n_layers else 1)
        try:
            out = self.arch.inner(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        finally:
            self._fan = self._pooled = self._mlp_shape = None
            self.groups.stop()
        if self.arch.kind == "encoder":
            features = out.pooler_output
        else:
            features = out.last_hidden_state[torch.arange(copies * batch, device=self.device), last.repeat(copies)]
        if features.shape[0] != copies * batch:
            raise RuntimeError(f"fan-out did not happen: {features.shape[0]} rows for {copies}x{batch}")
        logits = torch.baddbmm(self._head_b, features.view(copies, batch, -1), self._head_w)
        return torch.softmax(logits.float(), dim=-1)[..., 1].T.contiguous()


