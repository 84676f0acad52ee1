/**
 * The nano-training loss curve: the library's trainingCurves figure (src/plot/figures.ts) drawn with plotly.js, which
 * the build bundles (loaded on the first training run, so the page opens without it). Redrawn at most every 250 ms.
 */
import { trainingCurves } from '../../../src/plot/figures';

type PlotlyApi = (typeof import('plotly.js-dist-min'))['default'];

export class LossPlot {
  private plotly: Promise<PlotlyApi> | null = null;
  private steps: number[] = [];
  private losses: number[] = [];
  private series = 'nano';
  private last = 0;
  private timer: ReturnType<typeof setTimeout> | null = null;

  constructor(private readonly host: HTMLElement) {}

  reset(series: string): void {
    this.series = series;
    this.steps = [];
    this.losses = [];
    this.host.hidden = false;
    this.plotly ??= import('plotly.js-dist-min').then((m) => m.default);
    this.draw();
  }

  add(step: number, loss: number): void {
    this.steps.push(step);
    this.losses.push(loss);
    const wait = 250 - (performance.now() - this.last);
    if (wait <= 0) this.draw();
    else this.timer ??= setTimeout(() => this.draw(), wait);
  }

  /** Draws now (also the final curve when a run ends). */
  draw(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.last = performance.now();
    const fig = trainingCurves([{ series: this.series, step: this.steps, loss: this.losses, kind: 'train' }], { title: 'Training loss of the nano model', yTitle: 'loss (nats/byte)' });
    const layout = { ...fig.layout, margin: { l: 60, r: 20, t: 50, b: 50 }, height: 320, autosize: true };
    void this.plotly!.then((p) => p.react(this.host, fig.data, layout, { displaylogo: false, responsive: true }));
  }
}
