"""Batch tagging (``edge-agent tag``): the daemon's cascade over image files, folders and videos.

* :mod:`agent.tooling.batch.items`: pure logic: item ids and their order, output formats, the record of one
  item, the resume set, the run summary.
* :mod:`agent.tooling.batch.sources`: I/O: walking PATHs, telling images and videos by their content, decoding.
* :mod:`agent.tooling.batch.output`: I/O: the output file (JSON Lines, CSV, JSON), appended and flushed per item,
  read back to resume.
* :mod:`agent.tooling.batch.runner`: the loop: sources -> :class:`agent.runtime.inspector.FrameInspector`
  -> record -> output.
"""
