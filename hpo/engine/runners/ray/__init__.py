"""Ray Tune execution: the runner, its searcher, the trainable and the reaper of lost trials."""

from hpo.engine.runners.ray.runner import RayRunner

__all__ = ["RayRunner"]
