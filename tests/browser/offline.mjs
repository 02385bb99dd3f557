// Open the offline copy of the site from file:// in headless Chromium, as a reader who unpacked
// the zip would, and check that navigation and search work without any server.
// Usage: node offline.mjs <chromium> <path/to/site/index.html>
// Prints {home, navigatedTo, search: {query, hits}, external: [...], pageErrors: [...]}.
import { pathToFileURL } from "node:url";
import { chromium } from "playwright-core";

const [executablePath, index] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--allow-file-access-from-files",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
const external = [];
const pageErrors = [];
const out = {};
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  await context.route("**/*", (route) => {
    const url = new URL(route.request().url());
    if (url.protocol === "file:" || url.protocol === "data:" || url.protocol === "blob:") return route.continue();
    external.push(route.request().url());
    return route.abort();
  });
  const page = await context.newPage();
  page.on("pageerror", (err) => pageErrors.push(String(err)));
  await page.goto(pathToFileURL(index).href, { waitUntil: "load" });
  out.home = await page.title();
  await Promise.all([page.waitForNavigation({ waitUntil: "load" }), page.click('.md-tabs__link[href*="articles"]')]);
  out.navigatedTo = new URL(page.url()).pathname.split("/").slice(-2).join("/");
  await page.goto(pathToFileURL(index).href, { waitUntil: "load" });
  await page.click("label.md-search__icon, .md-search__input").catch(() => {});
  await page.fill(".md-search__input", "HSIC");
  let hits = [];
  try {
    await page.waitForSelector(".md-search-result__item a", { timeout: 20000 });
    hits = await page.$$eval(".md-search-result__item a", (as) => as.map((a) => a.getAttribute("href")));
  } catch (e) { /* no results */ }
  out.search = { query: "HSIC", hits };
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify({ ...out, external, pageErrors }));
