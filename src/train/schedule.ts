/** Learning-rate schedule: linear warm-up to the peak, then cosine decay to minLrRatio · peak (nanoGPT). */
export interface ScheduleConfig {
  lr: number;
  warmupSteps: number;
  steps: number;
  minLrRatio: number;
}

/** Learning rate at 0-based step `step`. */
export function lrAt(step: number, s: ScheduleConfig): number {
  const minLr = s.lr * s.minLrRatio;
  if (step < s.warmupSteps) return (s.lr * (step + 1)) / s.warmupSteps;
  if (step >= s.steps) return minLr;
  const span = Math.max(1, s.steps - s.warmupSteps);
  const progress = (step - s.warmupSteps) / span; // 0 → 1
  return minLr + 0.5 * (1 + Math.cos(Math.PI * progress)) * (s.lr - minLr);
}
