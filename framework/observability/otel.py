"""The CLI's OpenTelemetry SDK, configured the standard way: from the OTEL_* variables.

Only the CLI calls `configure_from_env` (a library never installs providers: it uses the
application's, see statesaga.observability.telemetry). It needs `pip install 'statesaga[otel]'`.

- `OTEL_TRACES_EXPORTER`: `console` prints each span (as JSON, on stderr, so a command's own
  output on stdout stays clean), `otlp` sends them to `OTEL_EXPORTER_OTLP_ENDPOINT`
  (http/protobuf by default, as the specification says; `OTEL_EXPORTER_OTLP_PROTOCOL=grpc`
  needs opentelemetry-exporter-otlp-proto-grpc), `none`, or the name of an installed
  exporter plugin (entry-point group `opentelemetry_traces_exporter`). Several, comma-separated.
- `OTEL_METRICS_EXPORTER`: `console`, `otlp`, `prometheus` (served by `prometheus_text`,
  which the dashboard's `/metrics` returns, and by a worker on its own port: see
  `serve_prometheus`), `none`.
- `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`,
  `OTEL_METRIC_EXPORT_INTERVAL`, `OTEL_SDK_DISABLED` as the SDK reads them.

Unlike the zero-code distro, nothing is exported unless an exporter variable is set: a plain
`statesaga run` must not try to reach a collector that is not there. A setting that cannot be
used (an unknown exporter, one whose package is missing, `OTEL_LOGS_EXPORTER=bogus`) is one
WARNING line and is ignored, as the specification says: telemetry never stops the work.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry import metrics, trace

from ..errors import StatesagaError

# The name it logged under before the tree's split: operators filter and alert on it.
log = logging.getLogger("statesaga.otel")

_INSTALL = "pip install 'statesaga[otel]'"


def _names(value: str | None) -> list[str]:
    return [n.strip().lower() for n in (value or "").split(",") if n.strip()]


def _importable(*modules: str) -> bool:
    from importlib.util import find_spec

    try:
        return all(find_spec(m) is not None for m in modules)
    except ModuleNotFoundError:  # a parent package is missing
        return False


def _plugin(group: str, name: str, variable: str, known: str) -> Any:
    from importlib.metadata import entry_points

    for ep in entry_points(group=group):
        if ep.name == name:
            return ep.load()()
    raise StatesagaError(f"{variable}: unknown exporter {name!r} (known: {known})")


def _otlp(signal: str, env: Mapping[str, str]) -> Any:
    protocol = (
        env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    )
    kind = "trace_exporter" if signal == "traces" else "metric_exporter"
    cls = "OTLPSpanExporter" if signal == "traces" else "OTLPMetricExporter"
    module = f"opentelemetry.exporter.otlp.proto.{'grpc' if protocol == 'grpc' else 'http'}"
    try:
        mod = __import__(f"{module}.{kind}", fromlist=[cls])
    except ImportError:
        package = module.replace(".", "-")
        hint = f"pip install {package}" if protocol == "grpc" else _INSTALL
        raise StatesagaError(
            f"OTEL_{signal.upper()}_EXPORTER=otlp over {protocol} needs {package}: {hint}"
        ) from None
    return getattr(mod, cls)()


def _resource(service: str, env: Mapping[str, str]) -> Any:
    from opentelemetry.sdk.resources import Resource

    named = "OTEL_SERVICE_NAME" in env or "service.name=" in env.get("OTEL_RESOURCE_ATTRIBUTES", "")
    return Resource.create({} if named else {"service.name": service})


def configure_from_env(
    service: str = "statesaga",
    *,
    prometheus: bool = False,
    environ: Mapping[str, str] | None = None,
) -> list[str]:
    """Install SDK providers as the OTEL_* variables say (and a Prometheus reader when asked,
    for a process that serves /metrics). Providers already installed are left alone.
    Returns what was set up, e.g. ["traces: console"], for the start-up log line."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    traces = [n for n in _names(env.get("OTEL_TRACES_EXPORTER")) if n != "none"]
    meters = [n for n in _names(env.get("OTEL_METRICS_EXPORTER")) if n != "none"]
    if (
        prometheus
        and "prometheus" not in meters
        and _importable("opentelemetry.sdk", "opentelemetry.exporter.prometheus")
    ):
        meters.append("prometheus")  # asked for, not required: /metrics says what is missing
    _check_logs_exporter(env)
    if not traces and not meters:
        return []
    if not _importable("opentelemetry.sdk"):
        _ignored(
            StatesagaError(
                f"OTEL_*_EXPORTER is set but the OpenTelemetry SDK is not installed: {_INSTALL}"
            )
        )
        return []
    done: list[str] = []
    resource = _resource(service, env)
    if traces and isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        processors = _usable(traces, lambda name: _span_processor(name, env))
        if processors:
            trace.set_tracer_provider(_tracer_provider(list(processors.values()), resource))
            done.append(f"traces: {', '.join(processors)}")
    if meters and type(metrics.get_meter_provider()).__name__ == "_ProxyMeterProvider":
        readers = _usable(meters, lambda name: _metric_reader(name, env))
        if readers:
            metrics.set_meter_provider(_meter_provider(list(readers.values()), resource))
            done.append(f"metrics: {', '.join(readers)}")
    return done


def _ignored(exc: StatesagaError) -> None:
    # The OpenTelemetry specification: a setting that cannot be used is warned about and
    # ignored, so a typo in telemetry settings never stops the work.
    log.warning("%s; ignored (telemetry goes on without it)", exc)


def _usable(names: list[str], build: Callable[[str], Any]) -> dict[str, Any]:
    """Each exporter named that can be made, by name; the others are warned about."""
    made: dict[str, Any] = {}
    for name in names:
        try:
            made[name] = build(name)
        except StatesagaError as exc:
            _ignored(exc)
        except Exception as exc:  # an installed exporter plugin that fails as it is made
            _ignored(StatesagaError(f"exporter {name!r} failed: {type(exc).__name__}: {exc}"))
    return made


#: The values of OTEL_LOGS_EXPORTER the specification defines. statesaga's logs go to stderr
#: (`--log-format json` for a collector), so none of them changes anything here.
_LOGS_EXPORTERS = ("otlp", "console", "none")


def _check_logs_exporter(env: Mapping[str, str]) -> None:
    for name in _names(env.get("OTEL_LOGS_EXPORTER")):
        if name not in _LOGS_EXPORTERS:
            known = ", ".join(_LOGS_EXPORTERS)
            _ignored(
                StatesagaError(f"OTEL_LOGS_EXPORTER: unknown exporter {name!r} (known: {known})")
            )


def _span_processor(name: str, env: Mapping[str, str]) -> Any:
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SimpleSpanProcessor,
    )

    if name == "console":
        # At once, so spans show while a person watches (and are not lost on exit).
        return SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stderr))
    if name == "otlp":
        return BatchSpanProcessor(_otlp("traces", env))
    exporter = _plugin(
        "opentelemetry_traces_exporter", name, "OTEL_TRACES_EXPORTER", "console, otlp, none"
    )
    return BatchSpanProcessor(exporter)


def _tracer_provider(processors: list[Any], resource: Any) -> Any:
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider(resource=resource)
    for processor in processors:
        provider.add_span_processor(processor)
    return provider


def _metric_reader(name: str, env: Mapping[str, str]) -> Any:
    from opentelemetry.sdk.metrics.export import (
        ConsoleMetricExporter,
        PeriodicExportingMetricReader,
    )

    if name == "console":
        return PeriodicExportingMetricReader(ConsoleMetricExporter(out=sys.stderr))
    if name == "otlp":
        return PeriodicExportingMetricReader(_otlp("metrics", env))
    if name == "prometheus":
        try:
            from opentelemetry.exporter.prometheus import PrometheusMetricReader
        except ImportError:
            raise StatesagaError(
                f"OTEL_METRICS_EXPORTER=prometheus needs opentelemetry-exporter-prometheus: "
                f"{_INSTALL}"
            ) from None
        return PrometheusMetricReader()
    exporter = _plugin(
        "opentelemetry_metrics_exporter",
        name,
        "OTEL_METRICS_EXPORTER",
        "console, otlp, prometheus, none",
    )
    return PeriodicExportingMetricReader(exporter)


def _meter_provider(readers: list[Any], resource: Any) -> Any:
    from opentelemetry.sdk.metrics import MeterProvider

    return MeterProvider(metric_readers=readers, resource=resource)


def prometheus_wanted(environ: Mapping[str, str] | None = None) -> bool:
    """`OTEL_METRICS_EXPORTER` names prometheus."""
    env = os.environ if environ is None else environ
    return "prometheus" in _names(env.get("OTEL_METRICS_EXPORTER"))


def serve_prometheus(
    port: int | None = None, host: str | None = None, environ: Mapping[str, str] | None = None
) -> str:
    """Serve this process's metrics for Prometheus at http://HOST:PORT/metrics, on a thread
    of its own: `port` and `host`, else OTEL_EXPORTER_PROMETHEUS_PORT and _HOST, else the
    specification's defaults (9464, localhost). A port that is taken is one clear line.
    Returns the URL."""
    env = os.environ if environ is None else environ
    try:
        from prometheus_client import start_http_server
    except ImportError:
        raise StatesagaError(f"a metrics port needs prometheus_client: {_INSTALL}") from None
    where = host or env.get("OTEL_EXPORTER_PROMETHEUS_HOST") or "localhost"
    raw = port if port is not None else env.get("OTEL_EXPORTER_PROMETHEUS_PORT", "9464")
    try:
        number = int(raw)
    except ValueError:
        raise StatesagaError(
            f"OTEL_EXPORTER_PROMETHEUS_PORT must be a port number, not {raw!r}"
        ) from None
    try:
        start_http_server(number, addr=where)
    except OSError as exc:
        raise StatesagaError(
            f"cannot serve metrics on {where}:{number}: {exc.strerror or exc}"
        ) from None
    return f"http://{where}:{number}/metrics"


def prometheus_text() -> tuple[bytes, str]:
    """The body and content type of a Prometheus `/metrics` page: the metrics of this process,
    read when `configure_from_env(prometheus=True)` (or the application) installed a
    PrometheusMetricReader. Empty (just the process's default collectors) otherwise."""
    try:
        from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
    except ImportError:
        raise StatesagaError(f"/metrics needs prometheus_client: {_INSTALL}") from None
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


__all__ = ["configure_from_env", "prometheus_text", "prometheus_wanted", "serve_prometheus"]
