import os
import subprocess

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _private_torch_hub(tmp_path_factory, monkeypatch):
    """Downloads in tests never touch the user's torch.hub cache (a served test file left there
    would be found, hash-checked and refused by later runs)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.getbasetemp() / "torch_home"))


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` run only where CUDA is present."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (marked gpu)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture()
def small_disk(tmp_path):
    """A real 4 MiB filesystem (a tmpfs) for full-disk tests; skipped where it cannot be
    mounted (not root, or no mount permission in a container)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    rc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)],
                        capture_output=True).returncode  # fmt: skip
    if rc != 0:
        pytest.skip("cannot mount a tmpfs here")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter (GroupNorm affine included) non-trivial values, reproducibly."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 and ("norm" in name or "bn" in name):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=gen) if name.endswith("weight")
                        else 0.2 * torch.randn(p.shape, generator=gen))
    return model


@pytest.fixture
def rand_images():
    def make(batch=2, channels=3, size=64, seed=0):
        return torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(seed))

    return make
