"""The application under test of tests/e2e/test_otlp_e2e.py: the official openai SDK,
instrumented by opentelemetry-instrumentation-openai-v2, exporting its spans and metrics with
the OpenTelemetry SDK's OTLP/HTTP (protobuf) exporters. Its own process, so that the
OpenTelemetry globals never leak between tests. Prints one JSON line per call: the fingerprint
and the id the SDK got.

    python otlp_app.py ENDPOINT BASE_URL MODEL CALLS [--legacy] [--gzip] [--service NAME]
"""

from __future__ import annotations

import argparse
import json
import os

import opentelemetry.instrumentation.openai_v2 as openai_v2
from openai import OpenAI
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

parser = argparse.ArgumentParser()
parser.add_argument("endpoint")
parser.add_argument("base_url")
parser.add_argument("model")
parser.add_argument("calls", type=int)
parser.add_argument("--legacy", action="store_true")
parser.add_argument("--gzip", action="store_true")
parser.add_argument("--service", default="shop")
options = parser.parse_args()

if options.legacy:
    # openai-v2 2.4b0 still ships its legacy-conventions code path, chosen by
    # opentelemetry-util-genai's is_experimental_mode(); 1.1b0 (the pin that imports) always
    # answers True, whatever OTEL_SEMCONV_STABILITY_OPT_IN says, so the choice that earlier
    # releases made from that variable is made here.
    openai_v2.is_experimental_mode = lambda: False
else:
    os.environ["OTEL_SEMCONV_STABILITY_OPT_IN"] = "gen_ai_latest_experimental"

compression = Compression.Gzip if options.gzip else Compression.NoCompression
resource = Resource.create({"service.name": options.service})
tracer_provider = TracerProvider(resource=resource)
tracer_provider.add_span_processor(
    BatchSpanProcessor(
        OTLPSpanExporter(endpoint=options.endpoint + "/v1/traces", compression=compression)
    )
)
reader = PeriodicExportingMetricReader(
    OTLPMetricExporter(endpoint=options.endpoint + "/v1/metrics", compression=compression),
    export_interval_millis=60_000,  # once, at shutdown: the counts of all the calls
)
meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
openai_v2.OpenAIInstrumentor().instrument(
    tracer_provider=tracer_provider, meter_provider=meter_provider
)

client = OpenAI(base_url=options.base_url, api_key="sk-otlp-e2e", max_retries=0)
for _ in range(options.calls):
    completion = client.chat.completions.create(
        model=options.model, messages=[{"role": "user", "content": "hi"}]
    )
    print(json.dumps({"fingerprint": completion.system_fingerprint, "id": completion.id}))
tracer_provider.shutdown()
meter_provider.shutdown()
