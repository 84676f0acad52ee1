/**
 * The lab page's build (`npm run lab:build`, `npm run lab`): web/ is the root, web/dist the output, with relative URLs
 * so the built folder works from any path. Beside the bundle it ships everything the page loads, so nothing comes
 * from a CDN: the zoo (`zoo/manifest.json` and every weights file it lists), tfjs-backend-wasm's `.wasm` binaries
 * (`tfjs-wasm/`) and the first MiB of each training corpus (`corpus/<name>.txt`, for the nano-training panel).
 * The development and preview servers make the page cross-origin isolated, so it may train data-parallel.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { defineConfig, type Plugin } from 'vite';
import { CORPUS_NAMES } from '../src/data/corpora';
import { loadCorpus } from '../src/data/corpus';

/** web/ */
const WEB = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(WEB, '..');
/** Corpus bytes shipped per corpus, for training a nano model in the page. */
const CORPUS_BYTES = 1 << 20;

/** Every static file the page needs: its URL path under the build → a function giving its bytes. */
function staticFiles(): Map<string, () => Uint8Array> {
  const files = new Map<string, () => Uint8Array>();
  const zoo = path.join(ROOT, 'models');
  const manifest = path.join(zoo, 'manifest.json');
  if (fs.existsSync(manifest)) {
    files.set('zoo/manifest.json', () => fs.readFileSync(manifest));
    const models = (JSON.parse(fs.readFileSync(manifest, 'utf8')) as { models: Record<string, { weights: string }> }).models;
    for (const entry of Object.values(models)) files.set(`zoo/${entry.weights}`, () => fs.readFileSync(path.join(zoo, entry.weights)));
  }
  const wasmDir = path.join(ROOT, 'node_modules/@tensorflow/tfjs-backend-wasm/dist');
  for (const f of fs.readdirSync(wasmDir).filter((f) => f.endsWith('.wasm'))) files.set(`tfjs-wasm/${f}`, () => fs.readFileSync(path.join(wasmDir, f)));
  for (const name of CORPUS_NAMES) files.set(`corpus/${name}.txt`, () => loadCorpus(name, { maxBytes: CORPUS_BYTES }).bytes);
  return files;
}

const TYPES: Record<string, string> = { '.json': 'application/json', '.wasm': 'application/wasm', '.txt': 'text/plain; charset=utf-8' };

/**
 * The headers that make a page cross-origin isolated (`crossOriginIsolated`), the condition for SharedArrayBuffer,
 * which data-parallel training shares its step through. Everything the page loads is its own origin's, so
 * require-corp blocks nothing.
 */
const CROSS_ORIGIN_ISOLATION: Record<string, string> = {
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Embedder-Policy': 'require-corp',
};

/** Sends CROSS_ORIGIN_ISOLATION with every response of the development and preview servers (the workers' scripts too). */
function crossOriginIsolation(): Plugin {
  const headers = (_req: unknown, res: { setHeader(name: string, value: string): void }, next: () => void) => {
    for (const [name, value] of Object.entries(CROSS_ORIGIN_ISOLATION)) res.setHeader(name, value);
    next();
  };
  return {
    name: 'mtp-lab-isolation',
    configureServer: (server) => void server.middlewares.use(headers),
    configurePreviewServer: (server) => void server.middlewares.use(headers),
  };
}

/** Serves the static files in development and writes them into the build. */
function labStatic(): Plugin {
  const files = staticFiles();
  return {
    name: 'mtp-lab-static',
    configureServer(server) {
      server.middlewares.use((req, res, next) => {
        const key = decodeURIComponent((req.url ?? '').split('?')[0]).replace(/^\//, '');
        const read = files.get(key);
        if (!read) return next();
        res.setHeader('Content-Type', TYPES[path.extname(key)] ?? 'application/octet-stream');
        res.end(read());
      });
    },
    generateBundle() {
      for (const [fileName, read] of files) this.emitFile({ type: 'asset', fileName, source: read() });
    },
  };
}

export default defineConfig({
  root: WEB,
  base: './',
  plugins: [crossOriginIsolation(), labStatic()],
  worker: { format: 'es' },
  build: {
    outDir: path.join(WEB, 'dist'),
    emptyOutDir: true,
    target: 'es2022',
    chunkSizeWarningLimit: 8000,
    reportCompressedSize: false,
    rolldownOptions: { checks: { pluginTimings: false } }, // the worker's bundle takes long in one transform; that is expected
  },
  server: { host: '127.0.0.1', port: 5173 },
  preview: { host: '127.0.0.1', port: 4173 },
});
