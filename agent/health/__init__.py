"""The gateway's health (:mod:`.gateway`). The agent's health, sd_notify and doctor are in :mod:`agent.ops`."""
