"""Model evaluation: detection and classification metrics (pure numpy), reading a
YOLO-format labelled dataset or a classify folder dataset, the INT8 gate and the promotion
comparison, and the eval.json / report.html reports.

Import the module you need (:mod:`.dataset`, :mod:`.detection`, :mod:`.classify_dataset`,
:mod:`.report`, ...): this package imports nothing, so reading a dataset does not load the
HTML report writer.
"""
