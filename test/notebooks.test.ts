/**
 * The lessons in notebooks/ must run and stay thin.
 *
 * 1. Execution: each notebook runs headless through nbconvert with the repo's kernel
 *    (notebooks/kernels/tslab), into a temp dir; it must exit 0, hold no error outputs, and every cell
 *    tagged "expect-output" must have produced output. tslab reports a failing cell only through the exit
 *    status (its traceback goes to a stderr stream, and it emits no "error" output), so on failure the
 *    notebook is run again with --allow-errors to show that traceback.
 *    Needs Jupyter from Debian: without it these tests fail with the apt-get line, unless
 *    MTP_SKIP_NOTEBOOKS=1. MTP_JUPYTER overrides the jupyter binary (default /usr/bin/jupyter).
 * 2. Static rules for code cells (notebooks stay thin: they import from src/ and call the same functions as the
 *    scripts):
 *    - imports (import/require/import()) come only from "./src/..." or from packages in package.json "dependencies";
 *    - no model code: no `class`, no `tf.variable(`, and no function (declaration, expression or arrow with a block
 *      body) longer than MAX_FUNCTION_LINES lines. Longer helpers belong in src/ with a test.
 *    And each committed notebook file is at most MAX_NOTEBOOK_BYTES: figures load plotly.js from the notebook server
 *    instead of inlining its 4.8 MB (src/plot/notebook.ts).
 * 3. Figures stay interactive: a committed notebook with figures, opened in the server that scripts/notebook.sh starts
 *    (`npm run notebook`: it trusts the lessons; here under a non-root base URL and with temporary Jupyter
 *    data/runtime/config folders), draws every saved figure in headless Chromium with plotly.js fetched once from
 *    the server's /files/ route. Needs Jupyter and Chromium, skipped with the execution tests. About 6 s.
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { chromium } from 'playwright-core';
import { describe, expect, it } from 'vitest';
import { CHROMIUM_ARGS, CHROMIUM_PATH } from '../src/plot/write';

const ROOT = path.resolve(__dirname, '..');
const NOTEBOOK_DIR = path.join(ROOT, 'notebooks');
const NOTEBOOKS = fs
  .readdirSync(NOTEBOOK_DIR)
  .filter((f) => f.endsWith('.ipynb'))
  .sort();
const APT_LINE =
  'apt-get install -y --no-install-recommends jupyter-nbconvert jupyter-client python3-nbclient jupyter-notebook';
const JUPYTER = process.env.MTP_JUPYTER ?? '/usr/bin/jupyter';
const SKIP = process.env.MTP_SKIP_NOTEBOOKS === '1';
const CELL_TIMEOUT_S = 600; // nbconvert's limit for one cell
const RUN_TIMEOUT_MS = 15 * 60_000; // one whole notebook, kernel start included (tslab starts in ~3 s, cells vary)
const MAX_FUNCTION_LINES = 15;
const MAX_NOTEBOOK_BYTES = 1_000_000;

interface Output {
  output_type: string;
  name?: string;
  text?: string | string[];
  data?: Record<string, unknown>;
}
interface Cell {
  cell_type: string;
  source: string | string[];
  metadata: { tags?: string[] };
  outputs?: Output[];
}
interface Notebook {
  cells: Cell[];
  metadata: { kernelspec?: { name: string; display_name: string; language: string } };
}

const readNotebook = (file: string): Notebook => JSON.parse(fs.readFileSync(file, 'utf8')) as Notebook;
const joined = (s: string | string[] | undefined): string => (Array.isArray(s) ? s.join('') : (s ?? ''));
const codeCells = (nb: Notebook): Cell[] => nb.cells.filter((c) => c.cell_type === 'code');
const isTagged = (c: Cell): boolean => (c.metadata.tags ?? []).includes('expect-output');

function jupyterWorks(): boolean {
  return spawnSync(JUPYTER, ['nbconvert', '--version'], { encoding: 'utf8' }).status === 0;
}

/** Runs one notebook through nbconvert; returns the process result and the executed file. */
function execute(name: string, outDir: string, extra: string[] = []) {
  const out = path.join(outDir, name);
  const proc = spawnSync(
    JUPYTER,
    [
      'nbconvert', '--to', 'notebook', '--execute',
      '--ExecutePreprocessor.kernel_name=tslab',
      `--ExecutePreprocessor.timeout=${CELL_TIMEOUT_S}`,
      '--output-dir', outDir, '--output', name,
      ...extra,
      path.join(NOTEBOOK_DIR, name),
    ],
    {
      cwd: ROOT,
      encoding: 'utf8',
      timeout: RUN_TIMEOUT_MS - 60_000,
      env: { ...process.env, JUPYTER_PATH: [NOTEBOOK_DIR, process.env.JUPYTER_PATH].filter(Boolean).join(path.delimiter) },
    },
  );
  return { proc, out };
}

/** The stderr streams of an --allow-errors run: where tslab puts a failing cell's traceback. */
function failureDetails(name: string, outDir: string): string {
  const { out } = execute(name, outDir, ['--allow-errors']);
  if (!fs.existsSync(out)) return '';
  const streams = codeCells(readNotebook(out)).flatMap((c) =>
    (c.outputs ?? []).filter((o) => o.output_type === 'stream' && o.name === 'stderr').map((o) => joined(o.text)),
  );
  return streams.join('\n').split('\n').slice(-40).join('\n');
}

if (SKIP) console.log('notebooks: execution tests skipped (MTP_SKIP_NOTEBOOKS=1)');

(SKIP ? describe.skip : describe)("notebooks execute with the repo's tslab kernel", () => {
  if (!SKIP && !jupyterWorks()) {
    const message =
      `'${JUPYTER} nbconvert' does not run. Install Jupyter from Debian: ${APT_LINE}` +
      ' (or point MTP_JUPYTER at another jupyter, or set MTP_SKIP_NOTEBOOKS=1 to skip these tests)';
    it('needs Jupyter', () => {
      throw new Error(message);
    });
    return;
  }

  for (const name of NOTEBOOKS) {
    it(
      `${name} runs without errors`,
      () => {
        const outDir = fs.mkdtempSync(path.join(os.tmpdir(), 'mtp-notebook-'));
        try {
          const { proc, out } = execute(name, outDir);
          if (proc.error) throw new Error(`nbconvert on ${name}: ${String(proc.error)}`);
          if (proc.status !== 0) {
            throw new Error(
              `nbconvert failed on ${name} (exit status ${proc.status}):\n` +
                `${(proc.stderr ?? '').split('\n').slice(-25).join('\n')}\n` +
                `--- stderr streams of the cells (--allow-errors run) ---\n${failureDetails(name, outDir)}`,
            );
          }
          const cells = codeCells(readNotebook(out));
          const errors = cells.flatMap((c) => (c.outputs ?? []).filter((o) => o.output_type === 'error'));
          expect(errors, 'error outputs').toEqual([]);
          const tagged = cells.filter(isTagged);
          expect(tagged.length, 'cells tagged "expect-output"').toBeGreaterThan(0);
          for (const cell of tagged) {
            expect(cell.outputs?.length ?? 0, `no output from cell:\n${joined(cell.source)}`).toBeGreaterThan(0);
          }
        } finally {
          fs.rmSync(outDir, { recursive: true, force: true });
        }
      },
      RUN_TIMEOUT_MS,
    );
  }
});

(SKIP ? describe.skip : describe)('the library inside the tslab kernel', () => {
  it('trains with data-parallel worker threads (the kernel loads src/ as .js modules; the workers still find their .ts)', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mtp-kernel-'));
    try {
      const src = (m: string) => JSON.stringify(`./src/${m}`); // the repo's kernel runs at the repository root
      const source = [
        `import { initBackend, resolveConfig } from ${src('index')};`,
        `import { trainRun } from ${src('node')};`,
        "await initBackend('wasm');",
        "const cfg = resolveConfig('nano', { train: { steps: 4, evalEvery: 4, workers: 2, corpus: 'prose', maxCorpusBytes: 20000 } });",
        `const r = await trainRun({ config: cfg, outDir: ${JSON.stringify(path.join(dir, 'run'))} });`,
        "console.log('trained', r.steps, 'steps with', cfg.train.workers, 'workers');",
        'r.model.dispose();',
      ].join('\n');
      const nb = { cells: [{ cell_type: 'code', execution_count: null, id: 'dp', metadata: {}, outputs: [], source }], metadata: { kernelspec: { display_name: 'TypeScript', language: 'typescript', name: 'tslab' } }, nbformat: 4, nbformat_minor: 5 };
      const file = path.join(dir, 'dp.ipynb');
      fs.writeFileSync(file, JSON.stringify(nb));
      const proc = spawnSync(JUPYTER, ['nbconvert', '--to', 'notebook', '--execute', '--allow-errors', '--ExecutePreprocessor.kernel_name=tslab', '--output-dir', dir, '--output', 'out.ipynb', file], {
        cwd: ROOT,
        encoding: 'utf8',
        timeout: 300_000,
        env: { ...process.env, JUPYTER_PATH: [NOTEBOOK_DIR, process.env.JUPYTER_PATH].filter(Boolean).join(path.delimiter) },
      });
      expect(proc.status, proc.stderr).toBe(0);
      const outputs = codeCells(readNotebook(path.join(dir, 'out.ipynb'))).flatMap((c) => c.outputs ?? []);
      expect(outputs.map((o) => joined(o.text) || JSON.stringify(o)).join('\n')).toMatch(/trained 4 steps with 2 workers/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 300_000);
});

(SKIP ? describe.skip : describe)('saved figures draw in the notebook server', () => {
  it('every figure of a committed notebook plots, with plotly.js loaded once from the server', async () => {
    const name = NOTEBOOKS.find((n) => fs.readFileSync(path.join(NOTEBOOK_DIR, n), 'utf8').includes('id=\\"mtp-figure-'));
    if (!name) throw new Error('no committed notebook has a showFigure output');
    const dirs = fs.mkdtempSync(path.join(os.tmpdir(), 'mtp-jupyter-'));
    const token = Math.random().toString(36).slice(2);
    const env = { ...process.env, MTP_TRUST_NOTEBOOKS: '1', JUPYTER_DATA_DIR: path.join(dirs, 'data'),
      JUPYTER_RUNTIME_DIR: path.join(dirs, 'runtime'), JUPYTER_CONFIG_DIR: path.join(dirs, 'config') };
    const server = spawn('bash', [path.join(ROOT, 'scripts/notebook.sh'), '--no-browser', '--ip=127.0.0.1',
      `--port=${20000 + Math.floor(Math.random() * 20000)}`, `--NotebookApp.token=${token}`,
      '--NotebookApp.base_url=/mtp-lab/'], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let log = '';
    server.stdout.on('data', (d) => (log += d));
    server.stderr.on('data', (d) => (log += d));
    const browser = await chromium.launch({ executablePath: CHROMIUM_PATH, args: CHROMIUM_ARGS, headless: true });
    try {
      let base: string | undefined;
      for (let i = 0; i < 300 && !base && server.exitCode === null; i++) {
        base = /(http:\/\/127\.0\.0\.1:\d+\/mtp-lab\/)/.exec(log)?.[1];
        await new Promise((r) => setTimeout(r, 100));
      }
      if (!base) throw new Error(`the notebook server did not start:\n${log.slice(-2000)}`);
      const page = await browser.newPage();
      const fetched: string[] = [];
      page.on('response', (r) => void (r.url().includes('plotly.min.js') && fetched.push(`${r.status()} ${r.url()}`)));
      await page.goto(`${base}notebooks/notebooks/${name}?token=${token}`);
      const figures = '.output_html div[id^="mtp-figure-"]';
      await page
        .waitForFunction((sel) => {
          const divs = Array.from(document.querySelectorAll(sel));
          return divs.length > 0 && divs.every((d) => d.querySelector('.main-svg') || /could not/.test(d.textContent ?? ''));
        }, figures, { timeout: 30_000 })
        .catch(() => undefined); // the expectations below say what is missing
      const shown = await page.$$eval(figures, (divs) =>
        divs.map((d) => (d.querySelector('.main-svg') ? 'plotted' : `not plotted: ${d.textContent}`)),
      );
      expect(shown.length, `figure outputs in ${name}`).toBeGreaterThan(0);
      expect(shown, `${name} in the notebook server`).toEqual(shown.map(() => 'plotted'));
      expect(fetched).toEqual([`200 ${base}files/node_modules/plotly.js-dist-min/plotly.min.js?v=${
        JSON.parse(fs.readFileSync(path.join(ROOT, 'node_modules/plotly.js-dist-min/package.json'), 'utf8')).version}`]);
    } finally {
      await browser.close();
      const exited = new Promise((r) => server.once('exit', r));
      if (server.exitCode === null) server.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
      fs.rmSync(dirs, { recursive: true, force: true });
    }
  }, 90_000);
});

/** Code with comments and string/template contents blanked, so the rules below see only code. */
function stripCommentsAndStrings(code: string): string {
  return code.replace(/\/\*[\s\S]*?\*\/|\/\/[^\n]*|(["'`])(?:\\[\s\S]|(?!\1)[^\\])*\1/g, (m, quote?: string) =>
    quote ? quote + m.slice(1, -1).replace(/[^\n]/g, ' ') + quote : m.replace(/[^\n]/g, ' '),
  );
}

/** The module specifiers a cell imports; `code` is the same cell after stripCommentsAndStrings. */
function importsOf(raw: string, code: string): string[] {
  const re = /\bimport\s[^'"`;]*?\bfrom\s*["']([^"']+)["']|\bimport\s*["']([^"']+)["']|\b(?:require|import)\s*\(\s*["']([^"']+)["']\s*\)/g;
  return [...raw.matchAll(re)]
    .filter((m) => code.startsWith(m[0].slice(0, 6), m.index)) // the keyword is code, not inside a comment or string
    .map((m) => m[1] ?? m[2] ?? m[3]);
}

/** Line counts of functions longer than `max` lines: from the line holding `function`/`=> {` to its closing brace. */
function longFunctions(code: string, max: number): number[] {
  const lines = code.split('\n');
  const found: number[] = [];
  lines.forEach((line, i) => {
    const start = line.search(/\bfunction\b|=>\s*\{/);
    if (start < 0) return;
    let depth = 0;
    let opened = false;
    for (let j = i; j < lines.length; j++) {
      for (const ch of j === i ? lines[j].slice(start) : lines[j]) {
        if (ch === '{') {
          depth++;
          opened = true;
        } else if (ch === '}') {
          depth--;
        }
        if (opened && depth === 0) {
          if (j - i + 1 > max) found.push(j - i + 1);
          return;
        }
      }
    }
  });
  return found;
}

describe('notebooks stay thin (static rules)', () => {
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as {
    dependencies?: Record<string, string>;
  };
  const deps = new Set(Object.keys(pkg.dependencies ?? {}));
  const packageOf = (spec: string) => spec.split('/').slice(0, spec.startsWith('@') ? 2 : 1).join('/');

  it('there is at least one notebook', () => {
    expect(NOTEBOOKS.length).toBeGreaterThan(0);
  });

  for (const name of NOTEBOOKS) {
    it(`${name}: at most ${MAX_NOTEBOOK_BYTES / 1e6} MB`, () => {
      const bytes = fs.statSync(path.join(NOTEBOOK_DIR, name)).size;
      const why = `${name} is ${(bytes / 1e6).toFixed(2)} MB; an inlined plotly.js (showFigure { plotly: 'inline' })?`;
      expect(bytes, why).toBeLessThanOrEqual(MAX_NOTEBOOK_BYTES);
    });

    it(`${name}: repo kernel, allowed imports, no model code`, () => {
      const nb = readNotebook(path.join(NOTEBOOK_DIR, name));
      expect(nb.metadata.kernelspec).toEqual({
        name: 'tslab',
        display_name: 'TypeScript (mtp-lab)',
        language: 'typescript',
      });
      const problems: string[] = [];
      codeCells(nb).forEach((cell, k) => {
        const raw = joined(cell.source);
        const code = stripCommentsAndStrings(raw);
        const where = `code cell ${k + 1}`;
        for (const spec of importsOf(raw, code)) {
          if (!spec.startsWith('./src/') && !deps.has(packageOf(spec))) {
            problems.push(`${where}: import "${spec}" (allowed: "./src/..." or a package.json dependency)`);
          }
        }
        if (/\bclass\s/.test(code)) problems.push(`${where}: defines a class (model code belongs in src/)`);
        if (/\btf\s*\.\s*variable\s*\(/.test(code)) problems.push(`${where}: calls tf.variable( (model code belongs in src/)`);
        for (const n of longFunctions(code, MAX_FUNCTION_LINES)) {
          problems.push(`${where}: a ${n}-line function (max ${MAX_FUNCTION_LINES}; move it to src/)`);
        }
      });
      expect(problems).toEqual([]);
    });
  }
});
