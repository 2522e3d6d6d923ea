// Doctor page: findings of the trace doctor over a window (placeholder until the page is built).
export function renderDoctor(app) {
  app.textContent = 'Doctor';
  return null;
}
