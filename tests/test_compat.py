"""No cap on abstractruntime; an incompatible one fails at import, naming its version.

Issue: ``pyproject.toml`` capped ``abstractruntime<0.14`` while upstream had released
0.14 and 0.15. We cannot test those here, so instead of a cap the package checks, when
imported, the upstream features it uses, and raises ImportError naming what is missing.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import re
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_pyproject_keeps_the_floor_and_has_no_cap() -> None:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        pytest.skip("tomllib needs Python 3.11")
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (spec,) = [d for d in deps if re.match(r"abstractruntime\b", d)]
    assert spec.replace(" ", "") == "abstractruntime>=0.6"


def test_the_installed_runtime_passes_the_check() -> None:
    from abstractruntime_celery import compat

    assert compat.missing_features() == []
    compat.require_compatible_runtime()
    assert compat.installed_version() == metadata.version("abstractruntime")


def signature_without(func: Any, name: str) -> inspect.Signature:
    sig = inspect.signature(func)
    return sig.replace(parameters=[p for p in sig.parameters.values() if p.name != name])


def loader_without(drop: str = "", version: str = "9.9.9") -> Any:
    """A loader of the real abstractruntime modules, except that ``drop`` ("module:attr"
    or "Runtime.method:param") is missing, and the root reports ``version``."""
    import abstractruntime

    where, _, name = drop.partition(":")

    class Runtime(abstractruntime.Runtime):  # type: ignore[misc, valid-type]
        pass

    if where.startswith("Runtime."):
        method = where.split(".", 1)[1]
        original = getattr(abstractruntime.Runtime, method)

        def without(self: Any, **kwargs: Any) -> Any:  # a signature that lacks ``name``
            return original(self, **kwargs)

        without.__signature__ = signature_without(original, name)  # type: ignore[attr-defined]
        setattr(Runtime, method, without)

    def load(module_name: str) -> ModuleType:
        real = importlib.import_module(module_name)
        fake = ModuleType(module_name)
        fake.__dict__.update(real.__dict__)
        if module_name == "abstractruntime":
            fake.__version__ = version  # type: ignore[attr-defined]
            fake.Runtime = Runtime  # type: ignore[attr-defined]
        if module_name == where:
            del fake.__dict__[name]
        return fake

    return load


@pytest.mark.parametrize("drop, named", [
    ("Runtime.start:run_id", "Runtime.start(run_id=)"),
    ("Runtime.resume:max_steps", "Runtime.resume(max_steps=)"),
    ("abstractruntime:QueryableRunStore", "abstractruntime.QueryableRunStore"),
    ("abstractruntime.scheduler.registry:WorkflowRegistry", "abstractruntime.scheduler.registry.WorkflowRegistry"),
])
def test_a_runtime_missing_a_feature_raises_import_error_naming_version_and_feature(drop: str, named: str) -> None:
    from abstractruntime_celery import compat

    load = loader_without(drop)
    assert compat.missing_features(load) == [named]
    with pytest.raises(ImportError, match=r"installed abstractruntime 9\.9\.9: it lacks " + re.escape(named)):
        compat.require_compatible_runtime(load)


def test_a_runtime_without_create_if_absent_or_the_handlers_dict_is_refused() -> None:
    from abstractruntime_celery import compat

    base = loader_without()

    class OldStore:  # a RunStore before 0.6: no create_if_absent
        pass

    def no_create(name: str) -> ModuleType:
        module = base(name)
        if name == "abstractruntime.storage.base":
            module.RunStore = OldStore  # type: ignore[attr-defined]
        return module

    assert compat.missing_features(no_create) == ["RunStore.create_if_absent"]

    def no_handlers(name: str) -> ModuleType:
        module = base(name)
        if name == "abstractruntime":
            real_init = module.Runtime.__init__

            class Runtime(module.Runtime):  # type: ignore[name-defined, misc]
                @functools.wraps(real_init)  # same signature
                def __init__(self, **kwargs: Any) -> None:
                    real_init(self, **kwargs)
                    self._handlers = SimpleNamespace()  # not the dict the driver wraps

            module.Runtime = Runtime  # type: ignore[attr-defined]
        return module

    with pytest.raises(ImportError, match=r"9\.9\.9.*Runtime\._handlers"):
        compat.require_compatible_runtime(no_handlers)


def test_importing_the_package_with_an_incompatible_runtime_fails_naming_its_version(tmp_path: Path) -> None:
    """A real import, in a subprocess, of the package beside a fake 'abstractruntime 0.99.0'
    whose Runtime.start takes no run_id and which has no scheduler package."""
    fake = tmp_path / "abstractruntime"
    fake.mkdir()
    (fake / "__init__.py").write_text(textwrap.dedent('''
        __version__ = "0.99.0"

        class Runtime:
            def start(self, *, workflow, vars=None):
                raise NotImplementedError
    '''))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]))
    proc = subprocess.run([sys.executable, "-c", "import abstractruntime_celery"], cwd=str(tmp_path), env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: abstractruntime_celery cannot use the installed abstractruntime 0.99.0")
    for feature in ("module abstractruntime.scheduler.registry", "Runtime.start(run_id=)",
                    "abstractruntime.QueryableRunStore"):
        assert feature in last
