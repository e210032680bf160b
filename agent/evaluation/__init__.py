"""Model evaluation: detection and classification metrics (pure numpy), reading a
YOLO-format labelled dataset, and the eval.json / report.html report."""

from agent.evaluation.classification import ClassificationMetrics, ClassScores, evaluate_classification
from agent.evaluation.dataset import LabelledImage, YoloDataset, evaluate_detector, read_yolo_dataset
from agent.evaluation.detection import (
    IOU_THRESHOLDS,
    ClassMetrics,
    DetectionEvaluator,
    DetectionMetrics,
    compute_ap,
    match_predictions,
)
from agent.evaluation.report import EvalContext, ReportFiles, write_detection_report

__all__ = [
    "IOU_THRESHOLDS",
    "ClassMetrics",
    "ClassScores",
    "ClassificationMetrics",
    "DetectionEvaluator",
    "DetectionMetrics",
    "EvalContext",
    "LabelledImage",
    "ReportFiles",
    "YoloDataset",
    "compute_ap",
    "evaluate_classification",
    "evaluate_detector",
    "match_predictions",
    "read_yolo_dataset",
    "write_detection_report",
]
