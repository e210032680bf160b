"""Offline work, never imported by the running agent: evaluation (:mod:`.evaluation`), INT8
quantization behind its gate (:mod:`.quantize`), model inspection and evaluation commands
(:mod:`.models`), promotion and rollback into a running agent (:mod:`.promote`), TensorRT plans
(:mod:`.engine`), fine-tuning (:mod:`.training`, the ``train`` extra), datasets: export, import,
synthetic (:mod:`.dataset`), batch tagging of files (:mod:`.batch`),
and ``edge-agent demo``'s run on a synthetic camera with a private broker (:mod:`.demo`). The command line
(:mod:`agent.cli`) parses the arguments and calls these.
"""
