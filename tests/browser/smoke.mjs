// Drive headless Chromium over pages of the built site and report what a reader would hit.
// Usage: node smoke.mjs <chromium> <site-url> <site-dir> <screenshot-dir|-> <path> [<path> ...]
// The site is served at its public address <site-url> (e.g. https://example.org/kexue), straight
// from <site-dir> through request interception, so instant navigation (which only works on the
// site_url origin) is exercised exactly as on the host.
// Optional env KEXUE_SEARCH='["query", ...]': type each query into the site search (light palette).
// Prints one JSON object: {pages: [{path, status, consoleErrors, pageErrors, katex, rawMath,
// figures, brokenFigures, title, notebook}], search: [{query, hits}], navigation: {...},
// external: [urls the pages tried to fetch outside the site]}.
// Requests to other hosts are aborted and recorded, so "zero external requests" is observed,
// not assumed.
import { existsSync, statSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const [executablePath, siteUrl, siteDir, shots, ...paths] = process.argv.slice(2);
const base = siteUrl.replace(/\/$/, "");
const site = new URL(base + "/");

// The file of the built site that the host would serve for a URL under the site's address.
function fileFor(url) {
  let rel = decodeURIComponent(url.pathname.slice(site.pathname.length));
  let file = join(siteDir, rel);
  if (rel === "" || rel.endsWith("/") || (existsSync(file) && statSync(file).isDirectory())) file = join(file, "index.html");
  return existsSync(file) ? file : null;
}

// Site paths (as passed on the command line) of a link's URL: "/articles/hsic/".
function sitePath(href) {
  const u = new URL(href, site);
  return "/" + u.pathname.slice(site.pathname.length);
}

const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
const external = [];
const results = [];
const search = [];
let navigation = null;
try {
  for (const scheme of ["light", "dark"]) {
    const context = await browser.newContext({ colorScheme: scheme, viewport: { width: 1280, height: 900 } });
    await context.route("**/*", (route) => {
      const url = new URL(route.request().url());
      if (url.protocol === "data:") return route.continue();
      if (url.origin === site.origin && url.pathname.startsWith(site.pathname)) {
        const file = fileFor(url);
        if (file) return route.fulfill({ path: file });
        return route.fulfill({ status: 404, path: join(siteDir, "404.html") });
      }
      external.push(route.request().url());
      return route.abort();
    });
    for (const path of paths) {
      const page = await context.newPage();
      const consoleErrors = [];
      const pageErrors = [];
      page.on("console", (msg) => { if (msg.type() === "error") consoleErrors.push(msg.text()); });
      page.on("pageerror", (err) => pageErrors.push(String(err)));
      const response = await page.goto(base + path, { waitUntil: "load" });
      await page.waitForLoadState("networkidle");
      const info = await page.evaluate(() => {
        const math = [...document.querySelectorAll(".arithmatex")];
        const imgs = [...document.querySelectorAll("article img")];
        const svgs = [...document.querySelectorAll("article svg.kexue-svg")];
        const broken = [
          ...imgs.filter((i) => !(i.complete && i.naturalWidth > 0)).map((i) => "img " + (i.alt || i.src.slice(0, 40))),
          ...svgs.filter((s) => { const r = s.getBoundingClientRect(); return !(r.width > 0 && r.height > 0 && s.childElementCount > 0); }).map(() => "svg"),
        ];
        return {
          title: document.title,
          katex: document.querySelectorAll(".katex").length,
          mathElements: math.length,
          rawMath: math.filter((m) => !m.querySelector(".katex")).map((m) => m.textContent.slice(0, 80)),
          figures: imgs.length + svgs.length,
          brokenFigures: broken,
          scheme: document.body.getAttribute("data-md-color-scheme"),
        };
      });
      // The notebook button, if any: download it the way a reader would and check it is a notebook.
      info.notebook = await page.evaluate(async () => {
        const a = document.querySelector("a.kx-notebook");
        if (!a) return null;
        const res = await fetch(a.href);
        const text = await res.text();
        try {
          const nb = JSON.parse(text);
          return { href: a.getAttribute("href"), download: a.getAttribute("download"), status: res.status,
                   nbformat: nb.nbformat, cells: (nb.cells || []).length,
                   codeCells: (nb.cells || []).filter((c) => c.cell_type === "code").length };
        } catch (e) {
          return { href: a.getAttribute("href"), status: res.status, error: String(e) };
        }
      });
      if (shots !== "-") {
        const name = (path.replace(/^\/|\/$/g, "").replace(/[^\w]+/g, "_") || "home") + `-${scheme}.png`;
        await page.screenshot({ path: `${shots}/${name}`, fullPage: true });
      }
      results.push({ path, colorScheme: scheme, status: response ? response.status() : null, consoleErrors, pageErrors, ...info });
      await page.close();
    }
    if (scheme === "light") {
      for (const query of JSON.parse(process.env.KEXUE_SEARCH || "[]")) {
        const page = await context.newPage();
        page.on("pageerror", (err) => search.push({ query, error: String(err) }));
        // Material opens the search with the query of a ?q= link, as a shared search link does.
        await page.goto(base + "/?q=" + encodeURIComponent(query), { waitUntil: "load" });
        let hits = [];
        try {
          await page.waitForSelector(".md-search-result__item a", { timeout: 15000 });
          hits = (await page.$$eval(".md-search-result__item a", (as) => as.map((a) => a.href))).map(sitePath);
        } catch (e) { /* no results: reported as an empty list */ }
        const meta = await page.$eval(".md-search-result__meta", (m) => m.textContent).catch(() => "");
        search.push({ query, hits, meta });
        await page.close();
      }
      // Instant navigation: a click on a tab swaps the page in place (the JS context survives),
      // which Material only does on the site_url origin.
      const page = await context.newPage();
      await page.goto(base + "/", { waitUntil: "load" });
      await page.evaluate(() => { window.__kxMarker = 42; });
      const before = await page.title();
      await page.click('.md-tabs__link[href*="articles"]');
      await page.waitForFunction((t) => document.title !== t, before, { timeout: 15000 }).catch(() => {});
      navigation = {
        from: sitePath(base + "/"),
        to: sitePath(page.url()),
        titleChanged: (await page.title()) !== before,
        keptState: await page.evaluate(() => window.__kxMarker === 42),
      };
      await page.close();
    }
    await context.close();
  }
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify({ pages: results, search, navigation, external }));
