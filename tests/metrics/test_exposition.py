"""The text format on numbers: values, escaping, histogram series, the standard process metrics; prometheus_client
writes it and its parser reads it back."""

from __future__ import annotations

import math

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.ops.exposition import Family, format_value, render
from agent.ops.histogram import Histogram, LabelledHistograms


@pytest.mark.parametrize(("value", "text"), [
    (3, "3"),  # integers without a point
    (3.0, "3"),
    (0.25, "0.25"),
    (1e-9, "1e-09"),  # Python's repr: Prometheus parses it
    (math.inf, "+Inf"),
    (-math.inf, "-Inf"),
    (math.nan, "NaN"),
])
def test_format_value(value: float, text: str) -> None:
    assert format_value(value) == text


def test_labels_and_help_are_escaped_and_parse_back() -> None:
    fam = Family("edge_agent_test_total", "counter", 'help with \\ and\nnewline')
    fam.add(2, camera='cam "1"\\x\ny')
    text = render([fam], standard=False)
    assert text == ('# HELP edge_agent_test_total help with \\\\ and\\nnewline\n'
                    '# TYPE edge_agent_test_total counter\n'
                    'edge_agent_test_total{camera="cam \\"1\\"\\\\x\\ny"} 2.0\n')
    (parsed,) = text_string_to_metric_families(text)
    assert parsed.samples[0].labels == {"camera": 'cam "1"\\x\ny'} and parsed.samples[0].value == 2


def test_histogram_buckets_are_cumulative_and_end_in_inf() -> None:
    h = Histogram((0.01, 0.1, 1.0))
    for v in (0.0625, 0.01, 0.125, 0.5, 7.0):  # 0.01 is in the 0.01 bucket (le means <=); 7 only in +Inf
        h.observe(v)
    snap = h.snapshot()
    assert snap.cumulative == (1, 2, 4) and snap.count == 5 and snap.sum == 7.6975
    text = render([Family("x_seconds", "histogram", "h").add_histogram(snap, stage="a")], standard=False)
    assert text.splitlines()[2:] == [  # le as the agent always wrote it: "1", not "1.0"
        'x_seconds_bucket{le="0.01",stage="a"} 1.0', 'x_seconds_bucket{le="0.1",stage="a"} 2.0',
        'x_seconds_bucket{le="1",stage="a"} 4.0', 'x_seconds_bucket{le="+Inf",stage="a"} 5.0',
        'x_seconds_sum{stage="a"} 7.6975', 'x_seconds_count{stage="a"} 5.0']
    (parsed,) = text_string_to_metric_families(text)
    assert parsed.type == "histogram" and len(parsed.samples) == 6


def test_the_standard_process_metrics_follow_ours_and_no_global_registry_is_touched() -> None:
    import prometheus_client

    before = set(prometheus_client.REGISTRY._names_to_collectors)  # the library's global registry
    text = render([Family("edge_agent_ready", "gauge", "r").add(1)])
    families = {fam.name: fam for fam in text_string_to_metric_families(text)}
    assert next(iter(families)) == "edge_agent_ready"  # ours first
    for name in ("process_resident_memory_bytes", "process_cpu_seconds", "process_open_fds", "python_info"):
        assert name in families, sorted(families)
    assert families["process_resident_memory_bytes"].samples[0].value > 1e6  # this very process, in bytes
    assert set(prometheus_client.REGISTRY._names_to_collectors) == before
    # one scrape's families do not leak into the next (several services in one process stay apart)
    assert "edge_agent_ready" not in render([], standard=False) and render([], standard=False) == ""


def test_labelled_histograms_keep_presets_even_when_empty() -> None:
    hs = LabelledHistograms((1.0,), preset=("prefilter", "publish"))
    hs.observe("escalation", 2.0)
    snaps = hs.snapshots()
    assert sorted(snaps) == ["escalation", "prefilter", "publish"]
    assert snaps["prefilter"].count == 0 and snaps["escalation"].cumulative == (0,) and snaps["escalation"].count == 1


@pytest.mark.parametrize(("make", "message"), [
    (lambda: Family("bad-name", "gauge", "h"), "not a valid Prometheus name"),  # '-' is not allowed
    (lambda: Family("frames", "counter", "h"), "must end in _total"),  # counters end in _total
    (lambda: Family("x", "gauge", "h").add(1, le="0.1"), "label name 'le' is not allowed"),  # reserved
    (lambda: Histogram((1.0, 0.5)), "distinct and ascending"),
])
def test_mistakes_are_refused(make: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()  # type: ignore[operator]
