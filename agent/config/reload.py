"""What a config reload (SIGHUP) changes, and what only a restart can change. Pure logic, no I/O.

:func:`plan_reload` compares the running config with a newly loaded (already validated) one and
returns a :class:`ReloadPlan`; the service (``AgentService.reload``) carries it out.

Applied live:

* ``cameras``: a camera that is new is started; one that is gone is stopped; one whose capture
  settings changed (anything but ``triage``, ``escalation_rate``, ``record``, ``mode``, ``learn`` and ``zones``)
  gets a new grabber (its frame sequence starts again at 1); one whose ``triage``, ``escalation_rate``,
  ``record``, ``mode``, ``learn`` or ``zones`` changed keeps its grabber (*retuned*; new zones apply from the
  next frame). ``record`` turns the dataset recorder on or
  off for that camera. Cameras that did not change keep running untouched.
* ``triage`` (the default band), ``snapshots``, ``logging``, and the escalation rate limits
  (``escalation.rate_per_camera``, ``cameras[].escalation_rate``).
* ``taxonomy``: the file is read again on every reload (a changed file applies even when its path
  did not change) and the new frames' tags are mapped with it.
* ``model``: the new model is loaded, checked and warmed up beside the running one, then swapped
  in between two frames.
* ``mode`` and ``learn`` (learn mode, :mod:`agent.escalation.sampler`): a camera switches between the
  prefilter and learn mode between two frames; with no camera left inspecting the model is let go, and
  the first camera back to inspecting loads it.

Needs a restart (reported by field path and left as it runs): ``device_id`` (topics, the MQTT
will), ``mqtt`` (the broker connection), ``outbox`` (the open SQLite queue), ``escalation`` but its
rates (the gRPC channel, breaker, dedupe cache), ``metrics`` (the listening socket), ``health``
(the supervisor's windows and timers) and ``dataset`` (the recorder's folder, bounds and queue; the
cameras it records follow ``cameras[].record`` live), ``plc`` and ``cameras[].plc`` (the PLC links and trigger
gates are built at start). A top-level section added later needs a restart
until this module says otherwise: the safe default.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from agent.config.models import AgentConfig, CameraConfig

__all__ = ["CAMERA_LIVE_FIELDS", "LIVE_SECTIONS", "ReloadPlan", "plan_reload"]

LIVE_SECTIONS = ("cameras", "triage", "model", "snapshots", "logging", "taxonomy", "mode", "learn")
"""Top-level sections a reload applies; every other one (and ``escalation`` but its rates) needs a restart."""

CAMERA_LIVE_FIELDS = ("id", "triage", "escalation_rate", "record", "mode", "learn", "zones")
"""Camera fields that change without a new grabber; a change to any other field restarts the camera."""

_LIVE_ESCALATION = ("rate_per_camera",)
_RESTART_CAMERA_FIELDS = ("plc",)  # built once at start (the PLC links and trigger gates): a restart applies it


@dataclasses.dataclass(frozen=True)
class ReloadPlan:
    """The difference between the running config and a new one, sorted into what a reload does.

    ``config`` is what runs after the reload: the new config, with the running values of every
    setting that needs a restart. Camera ids are in the new config's order; field paths are dotted
    (``mqtt.url``, ``cameras[cam2].triage.accept``).
    """

    config: AgentConfig
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    restarted: tuple[str, ...] = ()
    retuned: tuple[str, ...] = ()
    live: tuple[str, ...] = ()  # changed fields that apply live, cameras' included
    needs_restart: tuple[str, ...] = ()  # changed fields left as they run
    model_changed: bool = False

    @property
    def changed(self) -> bool:
        """True when the new config differs from the running one in anything."""
        return bool(self.live or self.needs_restart or self.added or self.removed)

    def describe(self) -> str:
        """One line for the log and the STATUS= line, e.g.
        ``added camera: cam3; retuned camera: cam2; model reloaded; needs a restart (not applied): mqtt.url``."""
        parts = [f"{what} camera{'s' if len(ids) > 1 else ''}: {', '.join(ids)}"
                 for what, ids in (("added", self.added), ("removed", self.removed),
                                   ("restarted", self.restarted), ("retuned", self.retuned)) if ids]
        other = [p for p in self.live if not p.startswith(("cameras[", "model."))]
        if self.model_changed:
            parts.append("model reloaded")
        if other:
            parts.append(f"applied: {', '.join(other)}")
        if self.needs_restart:
            parts.append(f"needs a restart (not applied): {', '.join(self.needs_restart)}")
        return "; ".join(parts) or "no change"


def plan_reload(running: AgentConfig, new: AgentConfig) -> ReloadPlan:
    """Sort the differences between ``running`` and ``new`` (see the module doc)."""
    old_dump, new_dump = _dump(running), _dump(new)
    live: list[str] = []
    needs_restart: list[str] = []
    for name in AgentConfig.model_fields:
        if name == "cameras":
            continue
        if name == "escalation":
            for key in old_dump[name].keys() | new_dump[name].keys():
                paths = _changed(old_dump[name].get(key), new_dump[name].get(key), f"{name}.{key}")
                (live if key in _LIVE_ESCALATION else needs_restart).extend(paths)
            continue
        paths = _changed(old_dump[name], new_dump[name], name)
        (live if name in LIVE_SECTIONS else needs_restart).extend(paths)

    old_cams = {c.id: c for c in running.cameras}
    new_cams = {c.id: c for c in new.cameras}
    added = tuple(c.id for c in new.cameras if c.id not in old_cams)
    needs_restart += [f"cameras[{c.id}].plc" for c in new.cameras if c.id in added and c.plc is not None]
    removed = tuple(c.id for c in running.cameras if c.id not in new_cams)
    restarted: list[str] = []
    retuned: list[str] = []
    for cam in new.cameras:
        before = old_cams.get(cam.id)
        if before is None:
            continue
        paths = _changed(_dump(before), _dump(cam), f"cameras[{cam.id}]")
        fixed = [p for p in paths if p.startswith(tuple(f"cameras[{cam.id}].{f}" for f in _RESTART_CAMERA_FIELDS))]
        needs_restart.extend(fixed)
        paths = [p for p in paths if p not in fixed]
        if not paths:
            continue
        live.extend(paths)
        if _capture_changed(before, cam):
            restarted.append(cam.id)
        else:
            retuned.append(cam.id)

    keep = {name: getattr(running, name) for name in AgentConfig.model_fields
            if name not in LIVE_SECTIONS and name != "escalation"}
    keep["escalation"] = running.escalation.model_copy(
        update={key: getattr(new.escalation, key) for key in _LIVE_ESCALATION})
    return ReloadPlan(
        config=new.model_copy(update=keep),
        added=added, removed=removed, restarted=tuple(restarted), retuned=tuple(retuned),
        live=tuple(sorted(live)), needs_restart=tuple(sorted(needs_restart)),
        model_changed=running.model != new.model,
    )


def _capture_changed(before: CameraConfig, after: CameraConfig) -> bool:
    return any(getattr(before, name) != getattr(after, name)
               for name in CameraConfig.model_fields if name not in (*CAMERA_LIVE_FIELDS, *_RESTART_CAMERA_FIELDS))


def _dump(model: Any) -> Any:
    return model.model_dump(mode="json", by_alias=True)


def _changed(old: Any, new: Any, path: str) -> list[str]:
    """Dotted paths of the leaves that differ; a list that differs is one leaf."""
    if old == new:
        return []
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(old.keys() | new.keys()):
            out += _changed(old.get(key), new.get(key), f"{path}.{key}")
        return out
    return [path]
