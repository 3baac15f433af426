// Render Mermaid texts with the real Mermaid in one headless Chromium, so the tests can check
// what people will see (and that Mermaid accepts every text at all).
//
//   node render.mjs [--png] OUT_DIR FILE.mmd...
//
// Every FILE.mmd is rendered by mermaid.render() in one page (Mermaid's own bundle, the one
// mermaid-cli uses) to OUT_DIR/NAME.svg; with --png also to OUT_DIR/NAME.png through
// mermaid-cli's renderMermaid (fonts embedded, as `mmdc` draws it). Prints one JSON line per
// input: {"name", "ok", "error"}. Exits 0 even when a diagram is rejected (the caller says
// which); exits 2 when Chromium cannot start.
import { readFile, writeFile, mkdir } from "node:fs/promises";
import { createRequire } from "node:module";
import path from "node:path";
import puppeteer from "puppeteer";
import { renderMermaid } from "@mermaid-js/mermaid-cli";

const require = createRequire(import.meta.url);
const args = process.argv.slice(2);
const png = args.includes("--png");
const [outDir, ...inputs] = args.filter((a) => a !== "--png");
if (!outDir || inputs.length === 0) {
  console.error("usage: node render.mjs [--png] OUT_DIR FILE.mmd...");
  process.exit(2);
}
await mkdir(outDir, { recursive: true });
let browser;
try {
  browser = await puppeteer.launch({
    executablePath: process.env.PUPPETEER_EXECUTABLE_PATH || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu"],
    headless: true,
  });
} catch (err) {
  console.error(`cannot start Chromium: ${err.message}`);
  process.exit(2);
}
try {
  const page = await browser.newPage();
  await page.setContent('<!doctype html><html><body><div id="c"></div></body></html>');
  await page.addScriptTag({ path: require.resolve("mermaid/dist/mermaid.min.js") });
  await page.evaluate(() => window.mermaid.initialize({ startOnLoad: false }));
  let n = 0;
  for (const file of inputs) {
    const name = path.basename(file).replace(/\.mmd$/, "");
    const definition = await readFile(file, "utf8");
    n += 1;
    const result = await page.evaluate(
      async (text, id) => {
        try {
          const { svg } = await window.mermaid.render(id, text);
          // Serialised from the DOM as XML (as mmdc does): the HTML labels become XHTML.
          const box = document.getElementById("c");
          box.innerHTML = svg;
          const xml = new XMLSerializer().serializeToString(box.firstElementChild);
          box.innerHTML = "";
          return { svg: xml, error: null };
        } catch (err) {
          return { svg: null, error: String(err?.message ?? err) };
        }
      },
      definition,
      `d${n}`,
    );
    if (result.svg !== null) {
      await writeFile(path.join(outDir, `${name}.svg`), result.svg);
      if (png) {
        const out = await renderMermaid(browser, definition, "png", {
          viewport: { width: 1600, height: 900, deviceScaleFactor: 1.5 },
        });
        await writeFile(path.join(outDir, `${name}.png`), out.data);
      }
    }
    console.log(JSON.stringify({ name, ok: result.svg !== null, error: result.error }));
  }
} finally {
  await browser.close();
}
