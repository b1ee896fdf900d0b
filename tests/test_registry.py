"""The registry shape (methods/registry.py) and the contract every entry of every registry keeps.

The contract test finds the registries itself: it imports every module of methods/, sims/,
actors/ and cluster/ and collects each `Registry` it finds, so a new registry is checked without
being listed here. Per registry: it declares one entry type; importing its `home` module alone (in
a fresh interpreter) registers every entry. Per entry: it is registered once (one name, one
registry), it satisfies its registry's entry type, `create(name, **defaults(name))` and
`create(name)` work (or the entry is config-less: `defaults` is None and a config is refused), an
unknown config key is refused naming the nearest valid one, and a mistyped name is an
`UnknownNameError` that suggests the right one.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import pkgutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import pytest

from methods.errors import ConfigError, DuplicateNameError, EntryTypeError, UnknownNameError
from methods.registry import CONFIG_LESS, FROM_ENTRY, REPLACE_FIELDS, Entry, Registry

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("methods", "sims", "actors", "cluster")  # sweeps/ are entry points and hold no registry


# -- the registry itself -------------------------------------------------------------------------


def test_duplicate_name_is_an_error():
    reg = Registry("widget")
    reg.register("a")(1)
    with pytest.raises(DuplicateNameError, match="registered twice"):
        reg.register("a")(2)


def test_unknown_name_lists_closest_and_known():
    reg = Registry("widget")
    for name in ("adaround", "brecq", "qdrop"):
        reg.register(name)(name)
    with pytest.raises(UnknownNameError) as exc:
        reg.get("adarond")
    msg = str(exc.value)
    assert "Did you mean 'adaround'" in msg and "brecq" in msg
    assert reg.names() == ["adaround", "brecq", "qdrop"] and "qdrop" in reg and len(reg) == 3


@dataclasses.dataclass(frozen=True)
class _Cfg:
    lr: float = 0.1
    steps: int = 3


@dataclasses.dataclass(frozen=True)
class _Method:
    name: str
    config_cls: type | None = _Cfg

    def create(self, **config: Any) -> tuple[str, Any]:
        from methods.registry import config_from_dict

        return self.name, config_from_dict(self.config_cls, config)


def test_entry_type_is_checked_at_registration():
    reg = Registry("toy method", _Method)
    reg.register("sgd")(_Method("sgd"))
    with pytest.raises(EntryTypeError, match="toy method entry must be a _Method"):
        reg.register("adam")("not a method")
    classes = Registry("toy class", _Method, classes=True, creator=CONFIG_LESS)
    with pytest.raises(EntryTypeError, match="subclass of _Method"):
        classes.register("inst")(_Method("x"))
    noncreating = Registry("toy cfg", _Cfg)  # FROM_ENTRY needs `config_cls` and `create`
    with pytest.raises(EntryTypeError, match="create"):
        noncreating.register("c")(_Cfg())


def test_create_from_entry_builds_the_config_and_refuses_unknown_keys():
    reg = Registry("toy method", _Method)
    reg.register("sgd")(_Method("sgd"))
    assert reg.create("sgd", lr=0.5) == ("sgd", _Cfg(lr=0.5))
    assert reg.defaults("sgd") == {"lr": 0.1, "steps": 3}
    with pytest.raises(ConfigError, match="Unknown _Cfg key 'stpes'. Did you mean 'steps'"):
        reg.create("sgd", stpes=4)
    reg.register("fixed")(_Method("fixed", None))
    assert reg.defaults("fixed") is None
    with pytest.raises(ConfigError, match="takes no config"):
        reg.create("fixed", lr=1.0)


def test_replace_fields_and_config_less_creators():
    values = Registry("toy value", _Cfg, creator=REPLACE_FIELDS)
    values.register("fast")(_Cfg(lr=1.0))
    assert values.create("fast", steps=9) == _Cfg(lr=1.0, steps=9)
    assert values.defaults("fast") == {"lr": 1.0, "steps": 3}
    with pytest.raises(ConfigError, match="Did you mean 'lr'"):
        values.create("fast", lrr=2.0)

    @runtime_checkable
    class Fn(Protocol):
        def __call__(self, x: int) -> int: ...

    fns = Registry("toy function", Fn, creator=CONFIG_LESS, ordered=True)
    fns.register("zeta")(abs)
    fns.register("alpha")(int)
    assert fns.create("zeta") is abs and fns.defaults("zeta") is None
    assert fns.names() == ["zeta", "alpha"] and list(fns) == ["zeta", "alpha"]  # registration order
    with pytest.raises(ConfigError, match="takes no config"):
        fns.create("zeta", x=1)
    with pytest.raises(EntryTypeError):
        fns.register("three")(3)


def test_a_registry_knows_where_it_was_defined():
    reg = Registry("toy")
    assert reg.module == __name__ and reg.home == __name__
    assert Registry("toy", home="methods.ptq").home == "methods.ptq"


# -- the contract over every registry of the project ---------------------------------------------


def _import_everything() -> None:
    for pkg in PACKAGES:
        package = importlib.import_module(pkg)
        for info in pkgutil.walk_packages(package.__path__, f"{pkg}."):
            importlib.import_module(info.name)


def project_registries() -> dict[str, tuple[Registry, str]]:
    """kind → (registry, the name of its variable in its defining module), for the whole project."""
    _import_everything()
    found: dict[str, tuple[Registry, str]] = {}
    for module_name, module in sorted(sys.modules.items()):
        if module_name.split(".")[0] not in PACKAGES or module is None:
            continue
        for attr, value in vars(module).items():
            if isinstance(value, Registry) and value.module == module_name:
                other = found.get(value.kind)
                assert other is None or other[0] is value, f"two registries of kind {value.kind!r}"
                found[value.kind] = (value, attr)
    return found


REGISTRIES = project_registries()
ENTRIES = [(kind, name) for kind, (reg, _) in sorted(REGISTRIES.items()) for name in reg.names()]

def test_the_project_has_its_registries():
    expected = {"PTQ method", "TTA method", "ranker", "search method", "route planner", "diffusion method",
                "corruption", "rig", "zoo model", "device", "model config", "actor profile"}
    assert expected <= set(REGISTRIES), sorted(expected - set(REGISTRIES))
    assert "method" not in REGISTRIES  # the mixed registry is gone: one registry, one kind of entry


@pytest.mark.parametrize("kind", sorted(REGISTRIES))
def test_registry_declares_one_entry_type(kind):
    reg, _ = REGISTRIES[kind]
    assert reg.entry is not None, (
        f"{reg.module}: Registry({kind!r}) declares no entry type; pass entry=<class or Protocol> "
        "(and classes=True when the entries are classes)"
    )
    assert callable(getattr(reg.creator, "create", None)) and callable(getattr(reg.creator, "defaults", None))
    assert len(reg) > 0, f"registry {kind!r} is empty after importing every module"


@pytest.mark.parametrize(("kind", "name"), ENTRIES, ids=[f"{k}:{n}" for k, n in ENTRIES])
def test_entry_keeps_the_contract(kind, name):
    reg, _ = REGISTRIES[kind]
    entry = reg.get(name)
    reg.check_entry(entry)  # satisfies the registry's entry type (it was checked at registration too)
    if reg.creator is FROM_ENTRY:
        assert isinstance(entry, Entry)
    defaults = reg.defaults(name)
    if defaults is None:  # config-less: create(name) takes nothing, and says so when given a config
        built = reg.create(name)
        assert built is not None
        if reg.creator is CONFIG_LESS:
            assert built is entry
        with pytest.raises(ConfigError, match="takes no config"):
            reg.create(name, no_such_field=1)
    else:
        assert reg.create(name, **defaults) is not None
        assert reg.create(name) is not None
        with pytest.raises(ConfigError, match="no_such_field"):
            reg.create(name, no_such_field=1)
    typo = name + "x"
    assert typo not in reg
    with pytest.raises(UnknownNameError, match=f"Did you mean .*{name!r}"):
        reg.get(typo)


def test_every_entry_is_registered_once():
    where: dict[int, list[str]] = {}
    for kind, (reg, _) in REGISTRIES.items():
        for name, entry in reg.items():
            where.setdefault(id(entry), []).append(f"{kind}:{name}")
    twice = [names for names in where.values() if len(names) > 1]
    assert not twice, f"objects registered more than once: {twice}"


# Importing torch and numpy once and forking per home keeps this to a few seconds; each child
# imports only the registry's home (and what it imports), then reports the names it sees.
_PROBE = r"""
import json, os, sys
import numpy, torch  # noqa: F401  (third-party, preloaded; the project is imported per child)
for home, module, attr in json.loads(sys.argv[1]):
    pid = os.fork()
    if pid == 0:
        import importlib
        importlib.import_module(home)
        reg = getattr(sys.modules[module], attr)
        print(json.dumps([reg.kind, reg.names()]), flush=True)
        os._exit(0)
    os.waitpid(pid, 0)
"""


@pytest.fixture(scope="module")
def names_seen_from_home() -> tuple[dict[str, list[str]], str]:
    """kind → the names registered after importing only that registry's home, in a fresh process."""
    probes = [(reg.home, reg.module, attr) for reg, attr in REGISTRIES.values()]
    proc = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(probes)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, check=False)
    return dict(map(json.loads, proc.stdout.splitlines())), proc.stderr


@pytest.mark.parametrize("kind", sorted(REGISTRIES))
def test_importing_a_registrys_home_registers_every_entry(kind, names_seen_from_home):
    reg, _ = REGISTRIES[kind]
    seen, stderr = names_seen_from_home
    assert kind in seen, f"importing {reg.home!r} failed:\n{stderr[-3000:]}"
    lost = sorted(set(reg.names()) - set(seen[kind]))
    assert not lost, (
        f"`import {reg.home}` registers {seen[kind]} but not {lost}: import the members in the home "
        "module, or pass home= the module that imports them"
    )
