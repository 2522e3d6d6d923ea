// Monitor page: per-service and per-operation RED metrics over time (placeholder until built).
export function renderMonitor(app) {
  app.textContent = 'Monitor';
  return null;
}
