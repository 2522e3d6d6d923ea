// The guide's example: an order handled with awaits, a detached promise, a timer and a job queue
// whose worker was started before any request.
//   node workflow.cjs --variant fixed            # one whole trace per order
//   node workflow.cjs --variant broken-queue     # the queued job starts a new trace
//   node workflow.cjs --variant no-context-manager
// Prints the order's trace id on stdout.
'use strict';

const { EventEmitter } = require('node:events');
const { setTimeout: sleep } = require('node:timers/promises');
const { context, trace, SpanStatusCode } = require('@opentelemetry/api');
const { initTracing } = require('./tracing.cjs');

const variant = process.argv[process.argv.indexOf('--variant') + 1];
const provider = initTracing({ contextManager: variant !== 'no-context-manager' });
const tracer = trace.getTracer('orders-example');

// ANCHOR: queue
// A job queue with one long-lived worker, started when the process starts (a batching writer, a
// connection pool, a rate limiter). The worker's callbacks run in the context the worker was
// started in, i.e. none, not in the context of whoever enqueued the job.
class JobQueue extends EventEmitter {
  constructor() {
    super();
    this.jobs = [];
    this.timer = setInterval(() => this.drain(), 5);
  }
  push(job) {
    this.jobs.push(job);
  }
  drain() {
    for (const job of this.jobs.splice(0)) this.emit('job', job);
  }
  close() {
    clearInterval(this.timer);
  }
}
// ANCHOR_END: queue

const queue = new JobQueue();
const done = new Map();

// ANCHOR: worker
queue.on('job', (job) => {
  // Fixed: run the job in the context captured when it was enqueued. Broken: job.ctx is not set,
  // the callback runs in the interval's (empty) context and send-email starts a new trace.
  const run = () =>
    tracer.startActiveSpan('send-email', async (span) => {
      span.setAttribute('app.order_id', job.orderId);
      await sleep(5); // talking to the mail server
      span.end();
      done.get(job.orderId)();
    });
  if (job.ctx) context.with(job.ctx, run);
  else run();
});

function enqueueEmail(orderId, carryContext) {
  const finished = new Promise((resolve) => done.set(orderId, resolve));
  queue.push({ orderId, ctx: carryContext ? context.active() : undefined });
  return finished;
}
// ANCHOR_END: worker

// ANCHOR: handle
async function handleOrder(orderId) {
  return tracer.startActiveSpan('handle-order', async (root) => {
    // Awaits keep the context (AsyncLocalStorage follows the promise chain).
    await tracer.startActiveSpan('load-cart', async (span) => {
      await sleep(5);
      span.end();
    });
    // The request waits for the e-mail job it queued.
    await enqueueEmail(orderId, variant === 'fixed');
    // Fire-and-forget work: a detached promise and a timer also keep the context (they are
    // created inside handle-order), and outlive the request span while staying in its trace.
    const audit = tracer.startActiveSpan('write-audit-log', async (span) => {
      await sleep(10);
      span.end();
    });
    const reminder = new Promise((resolve) =>
      setTimeout(() => tracer.startActiveSpan('schedule-reminder', (span) => {
        span.end();
        resolve();
      }), 5));
    root.setStatus({ code: SpanStatusCode.OK });
    root.end();
    await Promise.all([audit, reminder]); // only so that this example exits after them
    return root.spanContext().traceId;
  });
}
// ANCHOR_END: handle

handleOrder('o-2001')
  .then(async (traceId) => {
    queue.close();
    await provider.shutdown(); // flush before exit, or the last spans are lost
    console.log(traceId);
  })
  .catch((e) => {
    console.error(e);
    process.exit(1);
  });
