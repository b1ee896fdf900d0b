"""Every task of the farm, registered: importing this module fills `actors.task.TASKS`.

Each task registers itself when its module is imported (`@register_task`); a sweep imports only
the task it runs (the task modules load torch, models and simulators). This module imports them
all, for the contract test (`tests/actors/test_task_registry.py`) and for whoever lists tasks.
A new task module is added here.
"""

from __future__ import annotations

from actors import (  # noqa: F401  (imported for their @register_task)
    arena_task,
    calibration_worker,
    demo_task,
    diffusion_quant_task,
    galvo_rig,
    model_shard,
    roofline_device,
    sam_calibration,
    segmentation_task,
    toy_task,
    tta_stream,
)
from actors.task import TASKS

__all__ = ["TASKS"]
