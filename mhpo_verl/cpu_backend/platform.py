"""A CPU platform for verl, so that verl's own training engine (FSDP2) runs on a machine with no accelerator.

verl 0.9 resolves its device through ``verl.plugin.platform``. It ships CUDA, ROCm and Ascend platforms and, when
none of them finds hardware, falls back to CUDA; every ``get_device_name()`` / ``get_device_id()`` then points at a
GPU that is not there. This module adds the missing platform:

* :class:`PlatformCPU` (device ``cpu``, collective backend ``gloo``, no IPC, memory statistics from the process's
  resident memory) is registered with verl's ``PlatformRegistry`` under the name ``cpu`` when this module is
  imported. Registration alone changes nothing: auto-detection never picks it.
* :func:`enable` makes it the platform of this process. It refuses on a machine with an accelerator, and it must run
  before ``verl.workers.engine`` is imported (that package reads the device name once, at import). It also files
  verl's FSDP2 engines under the ``cpu`` device key of verl's ``EngineRegistry``, which lists them only for
  ``cuda``/``npu``, and exports ``VERL_PLATFORM=cpu`` plus ``VERL_USE_EXTERNAL_MODULES`` so that processes started
  from here (Ray workers) enable it too when they ``import verl``.
* verl's workers start their process group with ``initialize_global_process_group_ray()``, which asks torch for
  the backend ``"cpu:gloo,<device>:<backend>"``; torch rejects ``"cpu:gloo,cpu:gloo"``. :func:`enable` makes that
  helper default to plain ``gloo`` (an explicit ``backend=`` still wins) in every module that imported it, before
  or after, so verl's ``TrainingWorker`` also starts inside Ray workers. :func:`init_process_group` starts the
  group for a single process without Ray.

Only the FSDP2 strategy works on the CPU: FSDP1 in verl hard-codes ``sync_module_states=True``, which needs a GPU.
Attention must be ``sdpa`` (not flash-attention) and ``use_torch_compile`` off.
"""

from __future__ import annotations

import os
import resource
import sys
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import psutil
import torch
from verl.plugin.platform import PlatformBase, PlatformRegistry, set_platform
from verl.plugin.platform import platform_manager as _platform_manager

__all__ = [
    "CPU_ENGINE_STRATEGIES",
    "PLATFORM_NAME",
    "CPUDeviceModule",
    "PlatformCPU",
    "accelerator_present",
    "enable",
    "init_process_group",
    "is_enabled",
]

PLATFORM_NAME = "cpu"
"""Name under which the platform is registered; ``VERL_PLATFORM=cpu`` selects it."""

CPU_ENGINE_STRATEGIES = ("fsdp2",)
"""verl engine strategies that work on the CPU (FSDP1 needs a GPU for ``sync_module_states``)."""

_THIS_MODULE = __name__


class CPUDeviceModule:
    """Stands in for ``torch.cuda`` where verl calls ``get_torch_device().<fn>()``.

    Synchronisation, streams and cache control are no-ops on the CPU. Memory statistics describe host memory: what
    verl logs as "allocated" and "reserved" is this process's resident set, and the maxima are its peak resident
    set (Linux ``VmHWM``, which ``reset_peak_memory_stats`` resets through ``/proc/self/clear_refs``, so verl's
    per-step peaks mean the same as on a GPU; elsewhere the never-reset ``ru_maxrss``).
    """

    Stream = torch.cpu.Stream
    Event = torch.cpu.Event
    stream = staticmethod(torch.cpu.stream)
    current_stream = staticmethod(torch.cpu.current_stream)
    get_rng_state = staticmethod(torch.get_rng_state)
    set_rng_state = staticmethod(torch.set_rng_state)

    @staticmethod
    def is_available() -> bool:
        return True

    @staticmethod
    def device_count() -> int:
        return 1

    @staticmethod
    def current_device() -> str:
        return "cpu"

    @staticmethod
    def set_device(device: Any) -> None:
        if str(device) not in {"0", "cpu", "cpu:0"}:
            raise ValueError(f"the CPU platform has one device (0 / 'cpu'); got {device!r}")

    @staticmethod
    def get_device_name(device: Any = None) -> str:
        return "CPU"

    @staticmethod
    def get_device_properties(device: Any = None) -> SimpleNamespace:
        return SimpleNamespace(name="CPU", total_memory=psutil.virtual_memory().total)

    @staticmethod
    def synchronize(device: Any = None) -> None:
        return None

    @staticmethod
    def empty_cache() -> None:
        return None

    @staticmethod
    def ipc_collect() -> None:
        return None

    @staticmethod
    def set_per_process_memory_fraction(fraction: float, device: Any = None) -> None:
        return None

    @staticmethod
    def reset_peak_memory_stats(device: Any = None) -> None:
        try:
            with open("/proc/self/clear_refs", "w") as clear_refs:
                clear_refs.write("5")  # Linux >= 4.0: resets VmHWM to the current resident set
        except OSError:
            pass  # not Linux: the peak stays the process lifetime's

    @staticmethod
    def reset_accumulated_memory_stats(device: Any = None) -> None:
        return None

    @staticmethod
    def mem_get_info(device: Any = None) -> tuple[int, int]:
        memory = psutil.virtual_memory()
        return memory.available, memory.total

    @staticmethod
    def memory_allocated(device: Any = None) -> int:
        return psutil.Process().memory_info().rss

    memory_reserved = memory_allocated

    @classmethod
    def max_memory_allocated(cls, device: Any = None) -> int:
        peak = _resident_high_water_mark()
        if peak is None:
            # ru_maxrss is in KiB on Linux (bytes on macOS) and never reset.
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            peak = peak if sys.platform == "darwin" else peak * 1024
        # the kernel updates the high-water mark lazily: it can trail the current resident set
        return max(peak, cls.memory_allocated())

    max_memory_reserved = max_memory_allocated


def _resident_high_water_mark() -> int | None:
    """Peak resident set in bytes since the last reset (Linux ``VmHWM``), or None where /proc has no such line."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


@PlatformRegistry.register(platform=PLATFORM_NAME)
class PlatformCPU(PlatformBase):
    """verl platform for plain CPUs: one device, ``gloo`` collectives, no profiler, no IPC."""

    _device_module = CPUDeviceModule()

    @property
    def device_name(self) -> str:
        return "cpu"

    @property
    def vendor_name(self) -> str:
        return "cpu"

    @property
    def device_module(self) -> CPUDeviceModule:
        return self._device_module

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check: bool = False) -> bool:
        # Never auto-detected: the CPU is a fallback the user asks for, not hardware to discover.
        return False

    def current_device(self) -> str:
        # verl passes get_device_id() straight to `.to(...)` / `device=`; the integer 0 would mean cuda:0 there.
        # torch.cpu.current_device() answers "cpu" for the same reason.
        return "cpu"

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index: int) -> None:
        self._device_module.set_device(device_index)

    def synchronize(self, device_index: int | None = None) -> None:
        return None

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        # verl toggles CUDA's expandable segments around weight syncs; the CPU allocator has no such setting.
        return None

    def empty_cache(self) -> None:
        return None

    def get_device_capability(self, device_index: int = 0) -> tuple[int | None, int | None]:
        return None, None

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        # verl copies this variable between Ray workers; no CPU runtime reads it, so a private name is harmless.
        return "MHPO_VERL_CPU_VISIBLE_DEVICES"

    @contextmanager
    def nvtx_range(self, msg: str):
        yield

    def profiler_start(self) -> None:
        return None

    def profiler_stop(self) -> None:
        return None

    def ray_resource_name(self) -> str:
        # verl places training workers on Ray's accelerator resource and its resource check counts only GPU/NPU.
        # On the CPU platform a Ray "GPU" is a logical slot for one training process: start Ray with
        # num_gpus=<training processes>. Nothing in such a process touches CUDA (enable() refuses if it could).
        return "GPU"

    def ray_resource_options(self, num_gpus: float) -> dict[str, Any]:
        return {"num_gpus": num_gpus}

    def ray_noset_envvars(self) -> list[str]:
        return []

    def is_ipc_supported(self) -> bool:
        return False

    def cudart(self) -> Any:
        return None


def accelerator_present() -> str | None:
    """Type of the accelerator torch can see (``"cuda"``, ``"xpu"``, ...), or None on a CPU-only machine."""
    if torch.cuda.is_available():
        return "cuda"
    accelerator = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
    return accelerator.type if accelerator is not None else None


def is_enabled() -> bool:
    """Whether verl's platform in this process is the CPU platform."""
    return isinstance(getattr(_platform_manager, "_current_platform", None), PlatformCPU)


def enable() -> PlatformCPU:
    """Make verl run on the CPU in this process (and in processes it starts). Safe to call again.

    Raises:
        RuntimeError: an accelerator is visible (use verl's own platform there), or verl's engine package was
            already imported for another device (call this first).
    """
    accelerator = accelerator_present()
    if accelerator is not None:
        raise RuntimeError(
            f"refusing to enable verl's CPU platform: torch sees a {accelerator!r} accelerator. The CPU platform is "
            "for machines without one; on this machine verl's own platform applies."
        )
    engine_module = sys.modules.get("verl.workers.engine.fsdp.transformer_impl")
    if engine_module is not None and getattr(engine_module, "device_name", "cpu") != "cpu":
        raise RuntimeError(
            "verl.workers.engine was imported before the CPU platform was enabled, so it is bound to device "
            f"{engine_module.device_name!r}; call mhpo_verl.cpu_backend.platform.enable() before importing it."
        )
    if not is_enabled():
        set_platform(PlatformCPU())
    _default_to_gloo_process_groups()
    _register_cpu_engines()
    _export_to_child_processes()
    return _platform_manager._current_platform


def init_process_group(rank: int = 0, world_size: int = 1) -> None:
    """Start the ``gloo`` process group verl's engines expect, unless one exists.

    ``MASTER_ADDR``/``MASTER_PORT`` are taken from the environment; a single process gets a free local port.
    """
    if torch.distributed.is_initialized():
        return
    os.environ.setdefault("RANK", str(rank))
    os.environ.setdefault("LOCAL_RANK", str(rank))
    os.environ.setdefault("WORLD_SIZE", str(world_size))
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    if "MASTER_PORT" not in os.environ:
        if world_size != 1:
            raise ValueError(f"MASTER_PORT must be set for a process group of {world_size} processes")
        os.environ["MASTER_PORT"] = str(_free_port())
    torch.distributed.init_process_group(
        backend="gloo", rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"])
    )


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _default_to_gloo_process_groups() -> None:
    # verl's workers call initialize_global_process_group_ray() with no backend, which then asks torch for
    # "cpu:gloo,<device>:<backend>" -- "cpu:gloo,cpu:gloo" here, which torch rejects. Default the backend to gloo.
    # verl's modules import the function by name (engine_workers, checkpoint_engine), so replacing the module
    # attribute would miss every module imported before this call. Changing the default of the one function object
    # reaches all of them, whatever the import order; an explicit backend= still wins.
    from verl.utils.distributed import initialize_global_process_group_ray as initialize

    timeout_default, backend_default = initialize.__defaults__
    if backend_default is None:
        initialize.__defaults__ = (timeout_default, "gloo")
    elif backend_default != "gloo":
        raise RuntimeError(
            "verl.utils.distributed.initialize_global_process_group_ray has the default backend "
            f"{backend_default!r}, expected None (verl 0.9.1); the CPU platform cannot make it default to gloo"
        )


def _register_cpu_engines() -> None:
    from verl.workers.engine import EngineRegistry
    from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead, FSDPEngineWithValueHead

    engines = {"language_model": FSDPEngineWithLMHead, "value_model": FSDPEngineWithValueHead}
    for model_type, engine_class in engines.items():
        registered = EngineRegistry._engines.setdefault(model_type, {})
        for strategy in CPU_ENGINE_STRATEGIES:
            if registered.get(strategy, {}).get(PLATFORM_NAME) is None:
                EngineRegistry.register(model_type=model_type, backend=strategy, device=PLATFORM_NAME)(engine_class)


def _export_to_child_processes() -> None:
    os.environ["VERL_PLATFORM"] = PLATFORM_NAME
    modules = [name for name in os.environ.get("VERL_USE_EXTERNAL_MODULES", "").split(",") if name]
    if _THIS_MODULE not in modules:
        os.environ["VERL_USE_EXTERNAL_MODULES"] = ",".join([*modules, _THIS_MODULE])


# A process started with VERL_PLATFORM=cpu that imports this module (through VERL_USE_EXTERNAL_MODULES at
# `import verl`) is a child of a process that enabled the platform: enable it here too.
if os.environ.get("VERL_PLATFORM", "").strip().lower() == PLATFORM_NAME and not is_enabled():
    enable()
