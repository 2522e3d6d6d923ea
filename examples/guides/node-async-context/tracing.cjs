// OpenTelemetry set-up for a Node.js service sending to Clew over OTLP/HTTP (the guide's step 1).
// Service name and endpoint from the standard variables:
//   OTEL_SERVICE_NAME=orders OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 node workflow.cjs
'use strict';

// ANCHOR: setup
const { context, trace } = require('@opentelemetry/api');
const { AsyncLocalStorageContextManager } = require('@opentelemetry/context-async-hooks');
const { OTLPTraceExporter } = require('@opentelemetry/exporter-trace-otlp-http');
const { resourceFromAttributes } = require('@opentelemetry/resources');
const { BasicTracerProvider, BatchSpanProcessor } = require('@opentelemetry/sdk-trace-base');

function initTracing({ contextManager = true } = {}) {
  const endpoint = process.env.OTEL_EXPORTER_OTLP_ENDPOINT || 'http://127.0.0.1:4318';
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({ 'service.name': process.env.OTEL_SERVICE_NAME || 'orders' }),
    spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter({ url: `${endpoint}/v1/traces` }))],
  });
  trace.setGlobalTracerProvider(provider);
  // The context manager is what makes "the current span" follow awaits, promises, timers and
  // callbacks. Without one (BasicTracerProvider does not install it; NodeSDK and NodeTracerProvider
  // do), every span started after an await is the root of a new trace.
  if (contextManager) context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  return provider;
}
// ANCHOR_END: setup

module.exports = { initTracing };
