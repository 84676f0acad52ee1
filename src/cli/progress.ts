/**
 * Progress bar for long runs (cli-progress). On a terminal it redraws in place; elsewhere (CI logs,
 * pipes) it prints a line every few seconds.
 */
import { SingleBar } from 'cli-progress';

export function progressBar(label: string, fields: string): SingleBar {
  return new SingleBar({
    format: `${label} [{bar}] {value}/{total} | ${fields} | eta {eta_formatted}`,
    barsize: 24,
    hideCursor: true,
    noTTYOutput: true,
    notTTYSchedule: 5000,
    etaBuffer: 20,
  });
}
