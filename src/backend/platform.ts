/**
 * Where the code runs (Node or a browser), and a way to reach Node's `require` without a static import, so that
 * files of the backend layer stay bundleable for the browser.
 */

/** The two host kinds the backend layer distinguishes. */
export type Platform = 'node' | 'browser';

/** 'node' when running under Node.js (also inside vitest, tsx and tslab), else 'browser'. */
export function currentPlatform(): Platform {
  const proc = (globalThis as { process?: { versions?: { node?: string } } }).process;
  return typeof proc?.versions?.node === 'string' ? 'node' : 'browser';
}

/**
 * Node's `require` (CommonJS, also provided by vitest and tslab). Only call this under Node. Specifiers passed to it
 * should be variables, not literals, so that browser bundlers do not try to resolve Node-only packages.
 */
export function nodeRequire(): NodeRequire {
  if (typeof require === 'function') return require;
  const getBuiltin = (process as { getBuiltinModule?: (id: string) => unknown }).getBuiltinModule;
  if (getBuiltin === undefined) throw new Error('No CommonJS require available in this Node context.');
  const mod = getBuiltin('module') as { createRequire(path: string): NodeRequire };
  return mod.createRequire(`${process.cwd()}/`);
}

/** True when Node can resolve `specifier` from this package (without loading it). */
export function canResolve(specifier: string): boolean {
  try {
    nodeRequire().resolve(specifier);
    return true;
  } catch {
    return false;
  }
}
