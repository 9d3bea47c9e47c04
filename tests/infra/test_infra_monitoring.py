"""infra/grafana/voicegate.json and infra/prometheus/alerts.yml against a running gateway: every
panel query and alert expression must name only metrics the gateway exports (its /metrics,
scraped from the real app with every leg on), and both files must have the shape their tools load.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from legs.gateway import Gateway, gateway_settings, start_gateway
from prometheus_client import CollectorRegistry

from voicegate.app import Readiness, ReadinessCollector

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = json.loads((ROOT / "infra" / "grafana" / "voicegate.json").read_text())
ALERTS = yaml.safe_load((ROOT / "infra" / "prometheus" / "alerts.yml").read_text())
PROMETHEUS_OWN = {"up"}  # written by Prometheus itself for every scrape target
PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
    "and", "or", "unless", "offset", "inf", "nan",
}  # fmt: skip
IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (functions, keywords, labels and ranges left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings (label values)
    text = re.sub(r"\{[^{}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\[\]]*\]", "", text)  # ranges and subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", text)
    names = set()
    for match in IDENT.finditer(text):
        word = match.group(0)
        rest = text[match.end() :].lstrip()
        if rest.startswith("(") or word.lower() in PROMQL_WORDS:
            continue  # a function, an aggregation or a keyword
        if re.fullmatch(r"\d.*", word) or text[max(0, match.start() - 1)] in "0123456789.":
            continue
        names.add(word)
    return names


def balanced(expr: str) -> bool:
    depth = {"(": 0, "[": 0, "{": 0}
    closing = {")": "(", "]": "[", "}": "{"}
    for ch in re.sub(r'"(?:[^"\\]|\\.)*"', "", expr):
        if ch in depth:
            depth[ch] += 1
        elif ch in closing:
            depth[closing[ch]] -= 1
            if depth[closing[ch]] < 0:
                return False
    return all(v == 0 for v in depth.values())


def panels() -> Iterator[dict[str, object]]:
    for panel in DASHBOARD["panels"]:
        yield panel
        yield from panel.get("panels", [])


def panel_queries() -> list[tuple[str, str]]:
    return [
        (str(p["title"]), t["expr"])
        for p in panels()
        for t in p.get("targets", [])  # type: ignore[attr-defined]
    ]


def alert_rules() -> list[dict[str, object]]:
    return [rule for group in ALERTS["groups"] for rule in group["rules"]]


@pytest.fixture(scope="module")
def scraped(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """/metrics of a ready gateway with the SIP, Twilio and WebRTC legs on."""
    settings = gateway_settings(
        redis_url,
        tmp_path_factory.mktemp("gw-metrics"),
        sip_enabled=True,
        sip_port=0,
        webrtc_enabled=True,
        webrtc_token="t" * 20,
        edge_loop_budget_pct=50,
        webhook_secret="s" * 32,  # the post-call webhook consumer and its metrics
        recordings_dir=tmp_path_factory.mktemp("gw-recordings"),
        recordings_s3_bucket="calls",  # the recording upload consumer and its metrics
        recordings_s3_endpoint_url="http://127.0.0.1:9",  # nothing is uploaded here
    )
    gw = start_gateway(Gateway, settings)
    try:
        assert httpx.get(gw.base_url + "/readyz", timeout=10, trust_env=False).status_code == 200
        return httpx.get(gw.base_url + "/metrics", timeout=10, trust_env=False).text
    finally:
        gw.server.stop()


@pytest.fixture(scope="module")
def exported(scraped: str) -> set[str]:
    """Every metric name the gateway exports."""
    text = scraped
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names.add(name)
            if kind == "histogram":
                names.update({f"{name}_bucket", f"{name}_sum", f"{name}_count"})
            elif kind == "summary":
                names.update({f"{name}_sum", f"{name}_count"})
        elif line and not line.startswith("#"):
            names.add(IDENT.match(line).group(0))  # type: ignore[union-attr]
    return names


def test_the_name_extraction_reads_promql_as_prometheus_does() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, instance) (rate(a_bucket{instance=~"$i"}'
        "[$__rate_interval]))) / clamp_min(b_total offset 5m, 1e-9) > 0.5 and on (x) c"
        ' or d{check="engine"} == 0 unless sum without (leg) (e[5m:1m])'
    )
    assert metric_names(expr) == {"a_bucket", "b_total", "c", "d", "e"}
    assert balanced(expr) and not balanced("sum(rate(x[5m])")


def test_every_panel_query_names_a_metric_the_gateway_exports(exported: set[str]) -> None:
    queries = panel_queries()
    assert len(queries) >= 20
    for title, expr in queries:
        names = metric_names(expr)
        assert names, (title, expr)
        assert balanced(expr), (title, expr)
        missing = names - exported
        assert not missing, f"panel {title!r}: {sorted(missing)} not exported ({expr})"
    webhook = {n for _, expr in queries for n in metric_names(expr) if "webhook" in n}
    assert webhook >= {
        "voicegate_webhook_delivered_total",
        "voicegate_webhook_dead_lettered_total",
        "voicegate_webhook_delivery_seconds_bucket",
    }
    recording = {n for _, expr in queries for n in metric_names(expr) if "recording" in n}
    assert recording >= {
        "voicegate_recording_uploaded_total",
        "voicegate_recording_upload_retried_total",
        "voicegate_recording_upload_failed_total",
        "voicegate_recording_upload_seconds_bucket",
    }


def test_every_alert_names_metrics_the_gateway_exports(exported: set[str]) -> None:
    for rule in alert_rules():
        expr = str(rule["expr"])
        names = metric_names(expr)
        assert names and balanced(expr), rule
        missing = names - exported - PROMETHEUS_OWN
        assert not missing, f"alert {rule['alert']}: {sorted(missing)} not exported ({expr})"


def test_the_alerts_cover_the_3am_states_with_the_rule_file_shape() -> None:
    rules = alert_rules()
    names = [r["alert"] for r in rules]
    assert len(set(names)) == len(names)
    for needed in (
        "VoiceGateEngineUnready",
        "VoiceGateTicksLate",
        "VoiceGateJournalGrowing",
        "VoiceGateSlotsFull",
    ):
        assert needed in names
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert rule["labels"]["severity"] in {"page", "warn"}  # type: ignore[index]
        assert rule["annotations"]["summary"]  # type: ignore[index]
        if "for" in rule:
            assert re.fullmatch(r"\d+[smh]", str(rule["for"])), rule
    full = next(r for r in rules if r["alert"] == "VoiceGateSlotsFull")
    assert full["for"] == "10m"


def test_the_dashboard_has_the_shape_grafana_imports() -> None:
    ids = [p["id"] for p in panels()]
    assert len(set(ids)) == len(ids)
    variables = {v["name"] for v in DASHBOARD["templating"]["list"]}
    assert variables == {"datasource", "instance"}
    titles = " ".join(str(p["title"]).lower() for p in panels())
    for topic in (
        "fleet",
        "per gateway",
        "tick time",
        "late and skipped ticks",
        "event loop cpu",
        "late and skipped sends",
        "playout holes",
        "barge-in latency",
        "redis",
        "journal",
    ):
        assert topic in titles, topic
    for p in panels():
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        grid = p["gridPos"]
        assert grid["x"] + grid["w"] <= 24  # type: ignore[index,operator]
        refs = [t["refId"] for t in p["targets"]]  # type: ignore[attr-defined]
        assert len(set(refs)) == len(refs)


def test_readiness_is_exported_per_check(scraped: str) -> None:
    # what the engine-unready alert reads: /readyz's answer as gauges
    lines = set(scraped.splitlines())
    assert "voicegate_ready 1.0" in lines
    for check in ("engine", "personas", "numbers"):
        assert f'voicegate_ready_check{{check="{check}"}} 1.0' in lines


def test_a_failing_check_reads_zero() -> None:
    readiness = Readiness()
    readiness.add("engine", lambda: "engine tiny starting")
    readiness.add("personas", lambda: None)
    registry = CollectorRegistry()
    registry.register(ReadinessCollector(readiness))
    assert registry.get_sample_value("voicegate_ready") == 0
    assert registry.get_sample_value("voicegate_ready_check", {"check": "engine"}) == 0
    assert registry.get_sample_value("voicegate_ready_check", {"check": "personas"}) == 1
