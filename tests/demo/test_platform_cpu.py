"""The CPU platform for verl: registered on import, selected only on request, refused where an accelerator exists.

``enable()`` changes process-wide state (verl's platform singleton, environment variables inherited by child
processes), so every test that calls it runs in a fresh interpreter.
"""

from __future__ import annotations

import pytest
import torch
from verl.plugin.platform import PlatformRegistry, platform_manager

from mhpo_verl.cpu_backend.platform import PLATFORM_NAME, CPUDeviceModule, PlatformCPU
from tests.demo.helpers import run_python


def test_importing_registers_the_platform_without_selecting_it(monkeypatch):
    assert PlatformRegistry.get(PLATFORM_NAME) is PlatformCPU
    monkeypatch.delenv("VERL_PLATFORM", raising=False)
    # Auto-detection must never land on the CPU platform, whatever the machine has.
    assert PlatformCPU().is_platform_available(use_smi_check=True) is False
    assert platform_manager._detect_platform_name() != PLATFORM_NAME


def test_verl_platform_variable_selects_it(monkeypatch):
    monkeypatch.setenv("VERL_PLATFORM", "CPU")
    assert platform_manager._detect_platform_name() == PLATFORM_NAME
    assert isinstance(platform_manager._create_platform(PLATFORM_NAME), PlatformCPU)


def test_platform_answers_like_a_single_cpu_device():
    platform = PlatformCPU()
    assert (platform.device_name, platform.vendor_name) == ("cpu", "cpu")
    # verl passes get_device_id() to .to(); an int would mean cuda:<int>.
    assert torch.zeros(1).to(platform.current_device()).device.type == "cpu"
    assert platform.communication_backend_name() == "gloo"
    assert platform.device_count() == 1
    assert platform.get_device_capability() == (None, None)
    assert platform.is_ipc_supported() is False
    # verl's resource check counts GPU/NPU only: on the CPU a Ray "GPU" is a logical training slot.
    assert platform.ray_resource_name() == "GPU"
    assert platform.ray_resource_options(2) == {"num_gpus": 2}
    with platform.nvtx_range("no-op"):
        pass


def test_device_module_reports_host_memory_and_rejects_other_devices():
    device = CPUDeviceModule()
    allocated, peak = device.memory_allocated(), device.max_memory_allocated()
    assert 0 < allocated <= peak
    available, total = device.mem_get_info()
    assert 0 < available <= total == device.get_device_properties(0).total_memory
    assert device.current_device() == torch.cpu.current_device()
    state = device.get_rng_state()
    first = torch.rand(3)
    device.set_rng_state(state)
    assert torch.equal(torch.rand(3), first)
    device.set_device("cpu")
    with pytest.raises(ValueError, match="got 1"):
        device.set_device(1)


def test_enable_switches_verl_to_the_cpu_and_files_the_fsdp2_engine():
    report = run_python(
        """
        import json, os, torch
        from mhpo_verl.cpu_backend import platform as platform_cpu
        assert not platform_cpu.is_enabled()
        platform_cpu.enable()
        platform_cpu.enable()  # idempotent
        # What verl's TrainingWorker calls in a Ray worker (whose env carries the rendezvous address).
        os.environ.update(RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(platform_cpu._free_port()))
        from verl.utils.distributed import initialize_global_process_group_ray
        initialize_global_process_group_ray(timeout_second=None)
        from verl.utils.device import get_device_id, get_device_name, get_nccl_backend
        from verl.workers.engine import EngineRegistry
        value = torch.ones(2)
        torch.distributed.all_reduce(value)
        print(json.dumps({
            "enabled": platform_cpu.is_enabled(),
            "device": get_device_name(),
            "device_id": str(get_device_id()),
            "backend": get_nccl_backend(),
            "engine": EngineRegistry.get_engine_cls("language_model", "fsdp2").__name__,
            "all_reduce": value.tolist(),
            "process_group_backend": torch.distributed.get_backend(),
            "env_platform": os.environ["VERL_PLATFORM"],
            "env_modules": os.environ["VERL_USE_EXTERNAL_MODULES"],
        }))
        """
    )
    assert report == {
        "enabled": True,
        "device": "cpu",
        "device_id": "cpu",
        "backend": "gloo",
        "engine": "FSDPEngineWithLMHead",
        "all_reduce": [1.0, 1.0],
        "process_group_backend": "gloo",
        "env_platform": "cpu",
        "env_modules": "mhpo_verl.cpu_backend.platform",
    }


def test_enable_refuses_on_an_accelerator_and_after_verl_bound_its_engine_elsewhere():
    report = run_python(
        """
        import json, torch
        from mhpo_verl.cpu_backend import platform as platform_cpu
        messages = []
        real = torch.cuda.is_available
        torch.cuda.is_available = lambda: True
        try:
            platform_cpu.enable()
        except RuntimeError as error:
            messages.append(str(error))
        torch.cuda.is_available = real
        import verl.workers.engine  # binds verl's engine to the default (CUDA) platform
        try:
            platform_cpu.enable()
        except RuntimeError as error:
            messages.append(str(error))
        print(json.dumps({"messages": messages, "enabled": platform_cpu.is_enabled()}))
        """
    )
    assert report["enabled"] is False
    accelerator, too_late = report["messages"]
    assert "refusing" in accelerator and "'cuda'" in accelerator
    assert "imported before" in too_late and "'cuda'" in too_late


# The former path is what users type and what older printed commands show: it must keep working.
@pytest.mark.parametrize("module", ["mhpo_verl.cpu_backend.platform", "mhpo_verl.platform_cpu"])
def test_child_processes_pick_the_platform_up_at_import_verl(module):
    report = run_python(
        """
        import json
        import verl
        from verl.utils.device import get_device_name
        print(json.dumps({"device": get_device_name()}))
        """,
        env={"VERL_PLATFORM": "cpu", "VERL_USE_EXTERNAL_MODULES": module},
    )
    assert report == {"device": "cpu"}


def test_the_former_module_path_is_the_same_platform():
    from mhpo_verl import platform_cpu
    from mhpo_verl.cpu_backend import platform

    assert platform_cpu.PlatformCPU is platform.PlatformCPU and platform_cpu.enable is platform.enable
    assert set(platform.__all__) <= set(dir(platform_cpu))


def test_gloo_default_reaches_modules_that_imported_verls_helper_first():
    """verl's engine_workers binds initialize_global_process_group_ray by name at import; enabling the platform
    afterwards must still change what that binding does (issue 11, defect 7)."""
    report = run_python(
        """
        import json, os
        import verl.workers.engine_workers as engine_workers  # binds the helper before the platform exists
        from mhpo_verl.cpu_backend import platform as platform_cpu
        platform_cpu.enable()
        os.environ.update(RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(platform_cpu._free_port()))
        engine_workers.initialize_global_process_group_ray(timeout_second=None)  # exactly verl's call
        import torch
        print(json.dumps({"backend": torch.distributed.get_backend()}))
        """
    )
    assert report == {"backend": "gloo"}


def test_peak_memory_can_be_reset_like_on_a_gpu():
    """verl resets the peak before a stage and reads it after: the CPU peak must follow the same protocol.

    Runs in a fresh interpreter: in a long test process the allocator may hold freed memory that a new block
    reuses without the resident set growing, and earlier tests leave their own peak behind.
    """
    mib = 2**20
    report = run_python(
        """
        import json
        import torch
        from mhpo_verl.platform_cpu import CPUDeviceModule

        device = CPUDeviceModule()
        device.reset_peak_memory_stats()
        baseline = device.max_memory_allocated()
        block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched; above glibc's mmap threshold, so freed to the OS
        with_block = device.max_memory_allocated()
        del block
        after_free = device.max_memory_allocated()
        device.reset_peak_memory_stats()
        after_reset = device.max_memory_allocated()
        print(json.dumps({"baseline": baseline, "with_block": with_block, "after_free": after_free,
                          "after_reset": after_reset, "current": device.memory_allocated()}))
        """
    )
    assert report["with_block"] >= report["baseline"] + 48 * mib  # the block raised the peak
    # Freeing does not lower a peak (the kernel's resident counters are approximate to a few pages).
    assert report["after_free"] >= report["with_block"] - 4 * mib
    assert report["after_reset"] <= report["with_block"] - 48 * mib  # a reset forgets the freed block
    assert report["after_reset"] >= report["current"] - 8 * mib  # ...and starts again from what is resident
