"""The two evaluation tasks (evaluation.md), named once for every scorer and report.

* next event: the model sees the history only (the paper's task);
* in-scene: the model is also told the scene of the event to predict, the surface that asks for
  the list, as every served request is.
"""

NEXT_EVENT, IN_SCENE = "next_event", "in_scene"
TASKS = (NEXT_EVENT, IN_SCENE)
