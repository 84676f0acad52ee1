/** The part of plotly.js the page uses (the package ships no types). */
declare module 'plotly.js-dist-min' {
  const Plotly: {
    react(root: HTMLElement, data: unknown[], layout: unknown, config?: unknown): Promise<unknown>;
  };
  export default Plotly;
}
