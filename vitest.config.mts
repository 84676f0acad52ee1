import { defineConfig } from 'vitest/config';

// Generous per-test limits: CI runs the suite on 2 shared cores; the heaviest tests train small models.
export default defineConfig({
  test: {
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
