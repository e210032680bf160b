"""Recording the frames the agent inspects, as the live agent does it: the recorder (a listener of the
runtime, :mod:`.recorder`), the on-disk record (:mod:`.record`) and its store (:mod:`.store`). Exporting,
importing and synthesising datasets is offline work: :mod:`agent.tooling.dataset`."""
