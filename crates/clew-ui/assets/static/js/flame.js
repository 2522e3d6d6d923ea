// Flame graph of one trace (placeholder until built).
export function renderFlame() {
  return null;
}
