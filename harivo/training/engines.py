"""The distribution engines a run trains under, all through Accelerate: one process, DDP or FSDP (version 2)
(`accelerate launch --config_file configs/accelerate/ddp.yaml` or `fsdp.yaml`).

The trainer hands Accelerate one module, `TrainedModules`: the stage's trainable modules, whose `forward` is the
stage's loss, so each engine sees the forward and backward it wraps (DDP's gradient buckets, FSDP's gathers).
The frozen base model stays outside it, replicated on every process in the mixed-precision dtype.

Under FSDP the trainable parameters, their gradients and the optimizer's states are sharded over the processes
(one FSDP unit: `fsdp_auto_wrap_policy: NO_WRAP`). What only the main process does with whole weights (saving,
validation, export) runs inside `gathered`, and saving goes through `full_weights`: the weights gathered with
PyTorch's `torch.distributed.checkpoint.state_dict` into a weightless copy made at start (`meta_copy`), so a
checkpoint is written exactly as under one process (safetensors + JSON).
"""

import contextlib
import copy

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType

ENGINES = {
    DistributedType.NO: "one process",
    DistributedType.MULTI_CPU: "DDP",
    DistributedType.MULTI_GPU: "DDP",
    DistributedType.FSDP: "FSDP",
    DistributedType.DEEPSPEED: "DeepSpeed",
}


class TrainedModules(torch.nn.Module):
    """The stage's trainable modules as one module whose `forward(batch)` is the stage's `loss(batch)`."""

    def __init__(self, modules: dict[str, torch.nn.Module], loss):
        super().__init__()
        self.trainable = torch.nn.ModuleDict(modules)
        self._loss = loss

    def forward(self, batch: dict):
        return self._loss(batch)


def engine_name(accelerator: Accelerator) -> str:
    return ENGINES.get(accelerator.distributed_type, str(accelerator.distributed_type))


def is_sharded(accelerator: Accelerator) -> bool:
    """Whether the trainable parameters are split over the processes (FSDP)."""
    return accelerator.distributed_type == DistributedType.FSDP


def check_engine(accelerator: Accelerator, stage_name: str) -> None:
    """
    Refuse, in one line, an engine setting harivo cannot train correctly.

    Raises:
        `ValueError`: FSDP other than version 2 with one unit, FSDP on a stage other than `harivo`, or DeepSpeed.
    """
    if accelerator.distributed_type == DistributedType.FSDP:
        plugin = accelerator.state.fsdp_plugin
        if plugin.fsdp_version != 2:
            raise ValueError("FSDP: harivo trains with FSDP version 2; set fsdp_version: 2 in the Accelerate config.")
        if plugin.auto_wrap_policy is not None:
            raise ValueError(
                "FSDP: harivo shards the trainable modules as one unit; set fsdp_auto_wrap_policy: NO_WRAP in the"
                " Accelerate config (configs/accelerate/fsdp.yaml)."
            )
        if stage_name != "harivo":
            raise ValueError(
                f"FSDP shards the harivo stage's adapter; train the {stage_name} stage with DDP"
                " (configs/accelerate/ddp.yaml)."
            )
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        raise ValueError(
            "DeepSpeed's ZeRO optimizer state holds Python objects that harivo's checkpoints (safetensors + JSON, never"
            " unpickled) cannot hold; use FSDP (configs/accelerate/fsdp.yaml), which shards the same states as ZeRO-2."
        )


def meta_copy(module: torch.nn.Module) -> torch.nn.Module:
    """A copy of `module` (its structure, configs and attributes) whose parameters and buffers are on the meta device:
    no memory, ready for `load_state_dict(..., assign=True)`."""
    memo = {}
    for tensor in [*module.parameters(), *module.buffers()]:
        empty = torch.empty_like(tensor, device="meta")
        if isinstance(tensor, torch.nn.Parameter):
            empty = torch.nn.Parameter(empty, requires_grad=tensor.requires_grad)
        memo[id(tensor)] = empty
    return copy.deepcopy(module, memo)


def local(tensor: torch.Tensor) -> torch.Tensor:
    """This process's part of a tensor (the tensor itself unless sharded)."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


@contextlib.contextmanager
def gathered(accelerator: Accelerator, module: torch.nn.Module):
    """Inside, `module`'s parameters are whole on every process (under FSDP they are gathered; a collective: every
    process enters it), so the main process may run the stage's own modules (validation)."""
    if not is_sharded(accelerator):
        yield
        return
    module.unshard()
    try:
        yield
    finally:
        module.reshard()


def full_weights(accelerator: Accelerator, module: torch.nn.Module, copies: dict[str, torch.nn.Module]):
    """
    The trainable modules with whole weights, for the main process to save or export: `module`'s own under one
    process or DDP; under FSDP, `copies` (from `meta_copy`) filled with the gathered weights (a collective: every
    process calls it; the others get `None`).
    """
    if not is_sharded(accelerator):
        return dict(accelerator.unwrap_model(module).trainable.items())
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not accelerator.is_main_process:
        return None
    for name, copied in copies.items():
        prefix = f"trainable.{name}."
        own = {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}
        copied.load_state_dict(own, strict=True, assign=True)
    return copies


def load_full_weights(module: torch.nn.Module, states: dict[str, dict[str, torch.Tensor]]) -> None:
    """Load whole weights `{name: state}` (as `Stage.read_trainable` reads them) into the sharded `module`."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    flat = {f"trainable.{name}.{key}": value for name, state in states.items() for key, value in state.items()}
    result = set_model_state_dict(module, flat, options=StateDictOptions(full_state_dict=True, strict=False))
    missing = [key for key in result.missing_keys if "queue" not in key]
    if missing or result.unexpected_keys:
        raise RuntimeError(f"Checkpoint weights do not match: missing {missing}, extra {result.unexpected_keys}.")


def optimizer_state(accelerator: Accelerator, module: torch.nn.Module, optimizer) -> dict:
    """The optimizer's state for a checkpoint: its own `state_dict()`, or under FSDP the whole state keyed by
    parameter names (gathered; a collective), which any number of processes can load back."""
    if not is_sharded(accelerator):
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_optimizer_state_dict(module, optimizer.optimizer, options=options)


def load_optimizer_state(accelerator: Accelerator, module: torch.nn.Module, optimizer, state: dict) -> None:
    if not is_sharded(accelerator):
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    if any(isinstance(key, int) for key in state.get("state", {})):
        raise ValueError("the optimizer state was written by one process or DDP; resume it with the same engine")
    set_optimizer_state_dict(module, optimizer.optimizer, state, options=StateDictOptions(full_state_dict=True))
