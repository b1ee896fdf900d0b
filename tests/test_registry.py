from __future__ import annotations

import pytest

from methods.errors import DuplicateNameError, UnknownNameError
from methods.registry import Registry


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
