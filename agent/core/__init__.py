"""The shared data types every stage speaks (frame, detections, triage decision, tag event) and the seams
between the stages (:mod:`agent.core.ports`). numpy only: nothing here imports a stage."""
