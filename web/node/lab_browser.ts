/**
 * The lab page in headless Chromium, for the browser tests and `npm run lab:measure` (Node only): build the page with
 * Vite, serve the built files on 127.0.0.1 (cross-origin isolated by vite preview, or not by a plain static server),
 * and open it in Debian's Chromium (/usr/bin/chromium) driven by playwright-core, with every request that leaves
 * 127.0.0.1 blocked and recorded (the page must work offline), and every console error and uncaught exception recorded.
 *
 * Chromium 156 flags (docs/backends.md, the browser): WebGL 2 runs on SwiftShader through ANGLE's Vulkan backend by
 * default, even with --disable-gpu; WebGPU needs --enable-unsafe-webgpu (its adapter is then SwiftShader too), and a
 * secure context, which http://127.0.0.1 is.
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { CHROMIUM_ARGS, CHROMIUM_PATH } from '../../src/plot/write';

/** web/ */
export const WEB_DIR = path.resolve(__dirname, '..');
/** The lab's Chromium flags: the figure writer's, plus WebGPU. */
export const LAB_CHROMIUM_ARGS = [...CHROMIUM_ARGS, '--enable-unsafe-webgpu'];

/** The part of Vite's API used here (imported by name at run time: the repository's Node code resolves modules as node10, which cannot see Vite's ESM-only types). */
interface ViteApi {
  build(config: object): Promise<unknown>;
  preview(config: object): Promise<{ resolvedUrls: { local: string[] } | null; close(): Promise<void> }>;
}
const VITE: string = 'vite';
const vite = () => import(VITE) as Promise<ViteApi>;

/** Builds the page into `outDir` (default web/dist); returns how long it took in ms. */
export async function buildLab(outDir = path.join(WEB_DIR, 'dist')): Promise<number> {
  const t0 = performance.now();
  const { build } = await vite();
  await build({ configFile: path.join(WEB_DIR, 'vite.config.ts'), configLoader: 'runner', logLevel: 'warn', build: { outDir, emptyOutDir: true } });
  return performance.now() - t0;
}

export interface LabServer {
  /** The page's URL, e.g. http://127.0.0.1:41234/. */
  url: string;
  close(): Promise<void>;
}

/** Serves a built page (vite preview, as `npm run lab` does) on 127.0.0.1 at a free port. */
export async function serveLab(outDir = path.join(WEB_DIR, 'dist')): Promise<LabServer> {
  if (!fs.existsSync(path.join(outDir, 'index.html'))) throw new Error(`${outDir} holds no built page: run npm run lab:build first`);
  const { preview } = await vite();
  const server = await preview({ configFile: path.join(WEB_DIR, 'vite.config.ts'), configLoader: 'runner', logLevel: 'warn', build: { outDir }, preview: { host: '127.0.0.1', port: 0, strictPort: false, open: false } });
  const url = server.resolvedUrls?.local[0];
  if (!url) throw new Error('vite preview started without a local URL');
  return { url, close: () => server.close() };
}

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript',
  '.css': 'text/css',
  '.json': 'application/json',
  '.wasm': 'application/wasm',
  '.txt': 'text/plain; charset=utf-8',
};

/**
 * Serves a built page as a plain static server would (node:http, on 127.0.0.1 at a free port): without vite preview's
 * cross-origin isolation headers, so the page runs without SharedArrayBuffer.
 */
export async function serveStatic(outDir = path.join(WEB_DIR, 'dist')): Promise<LabServer> {
  if (!fs.existsSync(path.join(outDir, 'index.html'))) throw new Error(`${outDir} holds no built page: run npm run lab:build first`);
  const root = path.resolve(outDir);
  const server = http.createServer((req, res) => {
    const rel = decodeURIComponent(new URL(req.url ?? '/', 'http://127.0.0.1').pathname).replace(/^\/+/, '') || 'index.html';
    const file = path.resolve(root, rel);
    if (!file.startsWith(root + path.sep) || !fs.statSync(file, { throwIfNoEntry: false })?.isFile()) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'Content-Type': TYPES[path.extname(file)] ?? 'application/octet-stream' });
    fs.createReadStream(file).pipe(res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const close = () =>
    new Promise<void>((resolve, reject) => {
      server.close((e) => (e ? reject(e) : resolve()));
      server.closeAllConnections();
    });
  return { url: `http://127.0.0.1:${port}/`, close };
}

/** What a session with the page recorded. */
export interface LabPage {
  browser: Browser;
  page: Page;
  /** Console errors and uncaught exceptions, in order. */
  errors: string[];
  /** Requests to anywhere but 127.0.0.1 (blocked). */
  offsite: string[];
}

/**
 * Launches Chromium (flags: `opts.args`, default LAB_CHROMIUM_ARGS) and opens `url` (query e.g. '?backend=webgl');
 * waits until the page has started (data-ready).
 */
export async function openLab(url: string, query = '', opts: { width?: number; height?: number; args?: string[] } = {}): Promise<LabPage> {
  if (!fs.existsSync(CHROMIUM_PATH)) throw new Error(`the browser tests need Chromium at ${CHROMIUM_PATH}: apt-get install -y chromium`);
  const { chromium } = await import('playwright-core');
  const browser = await chromium.launch({ executablePath: CHROMIUM_PATH, args: opts.args ?? LAB_CHROMIUM_ARGS, headless: true });
  const page = await browser.newPage({ viewport: { width: opts.width ?? 1280, height: opts.height ?? 1000 } });
  page.setDefaultTimeout(120_000); // a busy 2-core machine: loading a model on SwiftShader can take a while
  const errors: string[] = [];
  const offsite: string[] = [];
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(`console: ${m.text()}`);
  });
  page.on('pageerror', (e) => errors.push(`exception: ${e.message}`));
  await page.context().route(
    (u) => u.hostname !== '127.0.0.1',
    (route) => {
      offsite.push(route.request().url());
      return route.abort();
    },
  );
  await page.goto(url + query);
  await page.waitForFunction(() => document.body.dataset.ready === 'true', undefined, { timeout: 120_000 });
  return { browser, page, errors, offsite };
}
