// Drive headless Chromium over pages of the built site and report what a reader would hit.
// Usage: node smoke.mjs <chromium> <site-url> <site-dir> <screenshot-dir|-> <path> [<path> ...]
// The site is served at its public address <site-url> (e.g. https://example.org/kexue), straight
// from <site-dir> through request interception, so instant navigation (which only works on the
// site_url origin) is exercised exactly as on the host.
// Optional environment:
//   KEXUE_SEARCH='["query", ...]'  type each query into the search box (light palette) and, once
//                                  the search worker has answered it, record the hits in order
//                                  and the text of their previews;
//   KEXUE_AXE='["/path/", ...]'    run axe-core (WCAG 2 A/AA rules) on these pages (the dark palette:
//                                  the colour rules only, the DOM being the same);
//   KEXUE_DARK='["/path/", ...]'   the pages visited in the dark palette too (default: all of them);
//   KEXUE_MOBILE='["/path/", ...]' open these pages at 390x844 and measure claims tables, display
//                                  math and horizontal overflow;
//   KEXUE_ZOOM='/path/'            click the first figure of this page and check the enlarged view;
//   KEXUE_COPY='/path/'            click the copy button of every executed block of this page and
//                                  record what landed on the clipboard.
// Prints one JSON object: {pages: [{path, status, consoleErrors, pageErrors, katex, rawMath,
// figures, inlineFigures, brokenFigures, unnamedFigures, roles, title, notebook, axe}], search:
// [{query, hits, previews}], mobile: [...], zoom: {...}, copied: [...], navigation: {...}, external: [urls the
// pages tried to fetch outside the site]}.
// Requests to other hosts are aborted and recorded, so "zero external requests" is observed,
// not assumed.
import { existsSync, statSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { chromium } from "playwright-core";

const [executablePath, siteUrl, siteDir, shots, ...paths] = process.argv.slice(2);
const base = siteUrl.replace(/\/$/, "");
const site = new URL(base + "/");
const env = (name, fallback) => JSON.parse(process.env[name] || fallback);
const axePaths = new Set(env("KEXUE_AXE", "[]"));
const darkPaths = env("KEXUE_DARK", JSON.stringify(paths));
const axeSource = createRequire(import.meta.url).resolve("axe-core/axe.min.js");

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

async function serve(context) {
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
}

// axe-core over the whole page: WCAG 2.0/2.1 A and AA rules; violations with their impact. The
// palettes share one DOM and differ only in colours, so the dark palette runs the rules that read
// colours (contrast, links told apart by colour); the light palette runs them all.
const COLOUR_RULES = ["color-contrast", "link-in-text-block"];
async function axe(page, scheme) {
  await page.addScriptTag({ path: axeSource });
  const runOnly = scheme === "light"
    ? { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"] }
    : { type: "rule", values: COLOUR_RULES };
  return page.evaluate(async (runOnly) => {
    const result = await window.axe.run(document, { runOnly, resultTypes: ["violations"] });
    return result.violations.map((v) => ({
      id: v.id, impact: v.impact, help: v.help, count: v.nodes.length,
      nodes: v.nodes.slice(0, 3).map((n) => ({ target: n.target.join(" "), summary: (n.failureSummary || "").slice(0, 300) })),
    }));
  }, runOnly);
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
const mobile = [];
let zoom = null;
let copied = null;
const started = Date.now();
const phases = {};
const lap = (name) => { phases[name] = (Date.now() - started) / 1000; };
let navigation = null;
// One page of the desktop visit: loads, errors, math, figures, notebook, axe-core, screenshot.
async function visit(context, scheme, path) {
  const visitStart = Date.now();
  const page = await context.newPage();
  const consoleErrors = [];
  const pageErrors = [];
  page.on("console", (msg) => { if (msg.type() === "error") consoleErrors.push(msg.text()); });
  page.on("pageerror", (err) => pageErrors.push(String(err)));
  const response = await page.goto(base + path, { waitUntil: "load" });
  await page.waitForLoadState("networkidle");
  const info = await page.evaluate(async () => {
    // Figures load lazily: load them all now, so that a broken one is seen.
    const imgs = [...document.querySelectorAll("article img")];
    for (const img of imgs) img.loading = "eager";
    await Promise.all(imgs.map((img) => img.decode().catch(() => {})));
    const math = [...document.querySelectorAll(".arithmatex")];
    const svgs = [...document.querySelectorAll("article svg.kexue-svg")];
    const figureImgs = [...document.querySelectorAll("article figure.kexue-figure img")];
    const broken = [
      ...imgs.filter((i) => !(i.complete && i.naturalWidth > 0)).map((i) => "img " + (i.alt || i.src.slice(0, 40))),
      ...svgs.filter((s) => { const r = s.getBoundingClientRect(); return !(r.width > 0 && r.height > 0 && s.childElementCount > 0); }).map(() => "svg"),
    ];
    // A figure's name, as assistive technology computes it: aria-labelledby, else alt / aria-label.
    const name = (el) => {
      const ids = (el.getAttribute("aria-labelledby") || "").split(/\s+/).filter(Boolean);
      const labelled = ids.map((id) => document.getElementById(id)?.textContent || "").join(" ").trim();
      return labelled || (el.getAttribute("alt") || el.getAttribute("aria-label") || "").trim();
    };
    const article = document.querySelector("article");
    const text = article ? article.innerText : "";
    return {
      title: document.title,
      katex: document.querySelectorAll(".katex").length,
      mathElements: math.length,
      rawMath: math.filter((m) => !m.querySelector(".katex")).map((m) => m.textContent.slice(0, 80)),
      figures: figureImgs.length + svgs.length,
      inlineFigures: svgs.length + figureImgs.filter((i) => i.src.startsWith("data:")).length,
      zoomable: document.querySelectorAll("article figure.kexue-figure a.kx-zoom").length,
      brokenFigures: broken,
      unnamedFigures: [...svgs, ...figureImgs].filter((f) => !name(f)).length,
      roles: (text.match(/:(?:func|class|meth|data|attr|mod|exc|obj):`?\w/g) || []).slice(0, 10),
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
  if (axePaths.has(path)) {
    const t0 = Date.now();
    info.axe = await axe(page, scheme);
    info.axeSeconds = (Date.now() - t0) / 1000;
  }
  if (shots !== "-") {
    const name = (path.replace(/^\/|\/$/g, "").replace(/[^\w]+/g, "_") || "home") + `-${scheme}.png`;
    await page.screenshot({ path: `${shots}/${name}`, fullPage: true });
  }
  info.seconds = (Date.now() - visitStart) / 1000;
  results.push({ path, colorScheme: scheme, status: response ? response.status() : null, consoleErrors, pageErrors, ...info });
  await page.close();
}

// Run fn over items, k at a time (the pages wait on the network and the renderer far more than
// they compute, so a few at once cut the wall time; results are keyed by path, not order).
async function pool(items, k, fn) {
  const queue = [...items];
  await Promise.all(Array.from({ length: k }, async () => {
    while (queue.length) await fn(queue.shift());
  }));
}

// A phone: claims tables, display math and sideways scrolling at 390 px.
async function phone() {
  const mobilePaths = env("KEXUE_MOBILE", "[]");
  if (mobilePaths.length) {
    const context = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
    await serve(context);
    for (const path of mobilePaths) {
      const page = await context.newPage();
      await page.goto(base + path, { waitUntil: "load" });
      const info = await page.evaluate(() => {
        const vw = document.documentElement.clientWidth;
        const verdicts = [...document.querySelectorAll("article .kx-verdict")];
        const hidden = verdicts.filter((v) => {
          const r = v.getBoundingClientRect();
          const scroller = v.closest(".md-typeset__table, .md-typeset__scrollwrap, table");
          const inScroll = scroller && scroller.scrollWidth > scroller.clientWidth + 1;
          return r.left < 0 || r.right > vw || r.width === 0 || inScroll;
        });
        const displays = [...document.querySelectorAll("article div.arithmatex")]
          .filter((d) => d.scrollWidth > d.clientWidth + 1)
          .map((d) => ({ width: d.scrollWidth, column: d.clientWidth, tex: (d.querySelector("annotation")?.textContent || "").slice(0, 120) }));
        return {
          viewport: vw,
          pageOverflow: document.documentElement.scrollWidth - vw,
          verdicts: verdicts.length,
          verdictsOffScreen: hidden.map((v) => v.textContent),
          wideMath: displays,
        };
      });
      mobile.push({ path, ...info });
      await page.close();
    }
    await context.close();
  }
  lap("mobile");
}

try {
  // Both palettes and the phone at once, two pages at a time each; then, in the light palette,
  // search, instant navigation, zoom and copy, with nothing else running beside them.
  const contexts = {};
  for (const scheme of ["light", "dark"]) {
    contexts[scheme] = await browser.newContext({ colorScheme: scheme, viewport: { width: 1280, height: 900 } });
    await serve(contexts[scheme]);
  }
  lap("start");
  await Promise.all([
    ...Object.entries(contexts).map(([scheme, context]) =>
      pool(scheme === "dark" ? darkPaths : paths, 2, (path) => visit(context, scheme, path))),
    phone(),
  ]);
  lap("pages");
  {
    const context = contexts.light;
    // Search as a reader does it: open the search box and type the query, then read the hits
    // once the search worker has answered that very query. Typing sends the worker one query per
    // keyup ("R", "Ro", "RoP", ...) and it answers them in turn, each answer replacing the list;
    // a slow worker (a busy machine) lags behind the typing, so a list that merely stopped changing
    // for a moment may be the answer to a prefix ("pytest" for "pytest-markdown-docs", "1" for
    // "10"), or the empty list of the cleared box shown as "No matching documents" under the new
    // query. The page's messages to the worker are counted instead (Material's SearchMessageType:
    // 2 = QUERY with the query string, 3 = RESULT, answered in order).
    const queries = env("KEXUE_SEARCH", "[]");
    if (queries.length) {
      const page = await context.newPage();
      await page.addInitScript(() => {
        const Native = window.Worker;
        const seen = window.__kxSearch = { sent: [], answered: 0 };
        window.Worker = class extends Native {
          constructor(...args) {
            super(...args);
            // Registered before Material's listener, which renders the list in the same event.
            this.addEventListener("message", (ev) => { if (ev.data && ev.data.type === 3) seen.answered++; });
          }
          postMessage(message, ...rest) {
            if (message && message.type === 2) seen.sent.push(message.data);
            return super.postMessage(message, ...rest);
          }
        };
      });
      page.on("pageerror", (err) => search.push({ query: "(page)", error: String(err) }));
      await page.goto(base + "/", { waitUntil: "load" });
      const input = page.locator("input.md-search__input");
      // Resolves once the box holds the query, the worker was sent it last and has answered everything.
      const answered = (query) => page.waitForFunction((q) => {
        const s = window.__kxSearch;
        const last = s.sent.length ? s.sent[s.sent.length - 1] : "";
        return document.querySelector("input.md-search__input").value === q && last === q && s.answered === s.sent.length;
      }, query, { timeout: 30000 }).then(() => true, () => false);
      // Open the search as a reader would: the magnifier icon where the layout shows one (narrow
      // screens), else the search box in the header (a hidden icon would only time out).
      const icon = page.locator("label[for='__search']:visible");
      if (await icon.count()) await icon.first().click({ timeout: 5000 }).catch(() => {});
      else await input.click({ timeout: 5000 }).catch(() => {});
      for (const query of queries) {
        // Clear the box and wait until the worker has answered that too, so nothing of the
        // previous query is still pending when this one is typed.
        await input.fill("");
        await input.press("End");
        await answered("");
        await input.pressSequentially(query, { delay: 10 });
        // Characters typed through an input method arrive without key events of their own; the
        // search reacts to keyup, as it does when an IME commits. End gives it one.
        await input.press("End");
        if (!(await answered(query))) {
          const state = await page.evaluate(() => ({ ...window.__kxSearch, sent: window.__kxSearch.sent.slice(-3) }));
          search.push({ query, hits: [], previews: [], error: `the search worker did not answer within 30 s: ${JSON.stringify(state)}` });
          continue;
        }
        const { hits, previews, meta } = await page.evaluate(() => ({
          meta: document.querySelector(".md-search-result__meta")?.textContent || "",
          hits: [...document.querySelectorAll(".md-search-result__item > a")].map((a) => a.href),
          previews: [...document.querySelectorAll(".md-search-result__item")].slice(0, 5).map((li) => li.innerText.slice(0, 400)),
        }));
        search.push({ query, hits: hits.map(sitePath), previews, meta });
      }
      await page.close();
    }
    lap("search");
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
    // Zoom: click a figure, the enlarged figure opens in a dialog; Escape closes it.
    const zoomPath = process.env.KEXUE_ZOOM;
    if (zoomPath) {
      const zp = await context.newPage();
      await zp.goto(base + zoomPath, { waitUntil: "load" });
      const link = zp.locator("figure.kexue-figure a.kx-zoom").first();
      const href = await link.getAttribute("href");
      await link.scrollIntoViewIfNeeded();
      await link.click();
      await zp.waitForSelector("dialog.kx-lightbox[open] img", { timeout: 5000 }).catch(() => {});
      const opened = await zp.evaluate(async () => {
        const img = document.querySelector("dialog.kx-lightbox[open] img");
        if (!img) return null;
        await img.decode().catch(() => {});
        return { src: img.src, naturalWidth: img.naturalWidth, width: img.getBoundingClientRect().width };
      });
      await zp.keyboard.press("Escape");
      const closed = await zp.evaluate(() => !document.querySelector("dialog.kx-lightbox[open]"));
      zoom = { path: zoomPath, href, opened, closed };
      await zp.close();
    }
    // Copy buttons: what each executed block's button puts on the clipboard.
    const copyPath = process.env.KEXUE_COPY;
    if (copyPath) {
      await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: site.origin });
      const cp = await context.newPage();
      await cp.goto(base + copyPath, { waitUntil: "load" });
      copied = [];
      const buttons = cp.locator(".kx-run button[data-md-type='copy']");
      for (let i = 0; i < await buttons.count(); i++) {
        await cp.evaluate(() => navigator.clipboard.writeText(""));
        await buttons.nth(i).click();
        await cp.waitForTimeout(100);
        copied.push(await cp.evaluate(() => navigator.clipboard.readText()));
      }
      await cp.close();
    }
  }
  for (const context of Object.values(contexts)) await context.close();
  lap("desktop done");
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify({ pages: results, search, mobile, zoom, copied, navigation, external, phases }));
