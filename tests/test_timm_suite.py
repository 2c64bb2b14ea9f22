"""timm's own ``tests/test_models.py``, run as written over every registered architecture.

``bash scripts/setup_integrations.sh timm`` (part of the CI's setup) fetches the file from the
sdist of the installed timm version into ``.venvs/timm-tests``; nothing of timm's is vendored.
``tests/timm_suite/routing_conftest.py`` routes its model list and ``create_model`` to this library. The
outcome of every test is recorded per test function (pass / fail / skip, and the tests that name
timm architectures, not applicable); every failure must be one of :data:`KNOWN_FAILURES`, each
listed with its reason in docs/integrations.md ("timm's own test suite").
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Test functions that fail by design, and why (the same list as the docs' table).
KNOWN_FAILURES = {
    "test_model_forward_torchscript": "TorchScript cannot compile the clock (a Python loop whose "
    "schedule depends on the input); refused with UnsupportedError naming torch.export / "
    "torch.compile",
    "test_model_forward_fx": "torch.fx cannot trace the clock; refused with InputError naming "
    "forward_timesteps / forward_intermediates / FeatureGetterNet / torch.export",
    "test_model_backward_fx": "as test_model_forward_fx",
    "test_model_forward_fx_torchscript": "as test_model_forward_fx",
}
#: Fails, by design, for the architectures whose prune_intermediate_layers refuses (later layers
#: feed kept ones back, or the family does not remove layers); it must pass for the others.
PRUNE_CONTRACT = "test_prune_intermediate_layers_contract"
PRUNE_REFUSED = (
    "prune_intermediate_layers refuses (UnsupportedError naming forward_intermediates and "
    "features_only): later layers feed earlier ones back (top-down, ConvRNN feedback), or the "
    "family does not remove layers"
)


def _prune_refused(arch: str) -> bool:
    import blt_models as bm

    model = bm.create_model(arch, device="meta")
    return any(model._why_layers_must_stay(i) for i in range(len(model.layer_names) - 1))


#: (test function, architecture) pairs that fail by design, and why.
KNOWN_MODEL_FAILURES = {
    ("test_model_backward", "blt_vs"): "the reference BLT-VS leaves retina.norm_td / lgn.norm_td "
    "(and, standard unrolling, v1.td_skip) unused: nothing reaches them; timm wants a gradient "
    "for every parameter",
}


def _suite_file() -> Path:
    import timm

    path = ROOT / ".venvs" / "timm-tests" / f"timm-{timm.__version__}" / "tests" / "test_models.py"
    if not path.exists():
        pytest.skip(
            f"{path.relative_to(ROOT)} is missing: fetch it with "
            "`bash scripts/setup_integrations.sh timm` (the slow CI target does)"
        )
    return path


def _outcomes(junit: Path) -> tuple[dict[str, Counter], list[tuple[str, str]]]:
    """``{test function: Counter(pass=, fail=, skip=, n/a=)}`` from pytest's JUnit XML, and the
    failing ``(function, architecture)`` pairs."""
    counts: dict[str, Counter] = defaultdict(Counter)
    failed = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = case.get("name", "")
        function = name.split("[")[0]
        skipped = case.find("skipped")
        if case.find("failure") is not None or case.find("error") is not None:
            counts[function]["fail"] += 1
            failed.append((function, name.split("[", 1)[-1].rstrip("]").split("-")[-1]))
        elif skipped is not None:
            reason = skipped.get("message", "")
            # the conftest's reason (not imported: it routes timm's functions when imported)
            counts[function]["n/a" if "not applicable:" in reason else "skip"] += 1
        else:
            counts[function]["pass"] += 1
    return counts, failed


@pytest.mark.slow
def test_timm_test_models_passes_every_applicable_test(tmp_path):
    suite = _suite_file()
    shutil.copy(suite, tmp_path / "test_models.py")
    shutil.copy(ROOT / "tests" / "timm_suite" / "routing_conftest.py", tmp_path / "conftest.py")
    (tmp_path / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")
    junit = tmp_path / "results.xml"
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    # Every registered architecture (59: 816 s on 2 idle cores); a glob list chooses fewer.
    env.setdefault("BLT_TIMM_SUITE_MODELS", "*")
    env.pop("GITHUB_ACTIONS", None)  # timm trims its model lists there; ours are small anyway
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-W", "ignore", f"--junitxml={junit}",
         str(tmp_path / "test_models.py")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=3600,
    )  # fmt: skip
    seconds = time.monotonic() - start
    assert junit.exists(), proc.stdout[-4000:] + proc.stderr[-2000:]
    counts, failed = _outcomes(junit)
    table = {f: dict(c) for f, c in sorted(counts.items())}
    record = ROOT / ".venvs" / "timm-tests" / f"results-{suite.parents[1].name}.json"
    record.write_text(json.dumps({"seconds": round(seconds), "per_function": table}, indent=1))
    print(f"timm's test_models.py against blt-models in {seconds:.0f} s:")
    for function, c in table.items():
        print(f"  {function}: {c}")
    unexpected = sorted(
        (f, arch) for f, arch in failed if f not in KNOWN_FAILURES and (f, arch) not in
        KNOWN_MODEL_FAILURES and not (f == PRUNE_CONTRACT and _prune_refused(arch))
    )  # fmt: skip
    assert not unexpected, f"unexpected failures {unexpected}:\n{proc.stdout[-8000:]}"
    # The tests that apply to any library ran and passed for every architecture.
    import blt_models as bm

    ran = set(bm.list_models(env["BLT_TIMM_SUITE_MODELS"].split(",")))
    n = len(ran)
    for function in ("test_model_forward", "test_model_backward", "test_model_default_cfgs",
                     "test_model_forward_features", "test_model_forward_intermediates_features",
                     "test_model_forward_intermediates"):  # fmt: skip
        known = sum(1 for f, arch in KNOWN_MODEL_FAILURES if f == function and arch in ran)
        assert counts[function]["pass"] == n - known, (function, dict(counts[function]))
