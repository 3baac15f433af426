// Render Mermaid texts with the real Mermaid (through mermaid-cli's renderMermaid, in one
// headless Chromium for the whole batch) so the tests can check what people will see.
//
//   node render.mjs OUT_DIR NAME.mmd...   writes OUT_DIR/NAME.svg (and NAME.png with --png)
//
// Prints one JSON line per input: {"name", "ok", "error"}. Exits 0 even when a diagram is
// rejected (the caller reports which); exits 2 when the browser cannot start.
import { readFile, writeFile, mkdir } from "node:fs/promises";
import path from "node:path";
import puppeteer from "puppeteer";
import { renderMermaid } from "@mermaid-js/mermaid-cli";

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
  for (const file of inputs) {
    const name = path.basename(file).replace(/\.mmd$/, "");
    const definition = await readFile(file, "utf8");
    try {
      const { data } = await renderMermaid(browser, definition, "svg");
      await writeFile(path.join(outDir, `${name}.svg`), data);
      if (png) {
        const out = await renderMermaid(browser, definition, "png", {
          viewport: { width: 1600, height: 900, deviceScaleFactor: 1.5 },
        });
        await writeFile(path.join(outDir, `${name}.png`), out.data);
      }
      console.log(JSON.stringify({ name, ok: true, error: null }));
    } catch (err) {
      console.log(JSON.stringify({ name, ok: false, error: String(err?.message ?? err) }));
    }
  }
} finally {
  await browser.close();
}
