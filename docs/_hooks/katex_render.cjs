// Render TeX with KaTeX for the build (server-side): read a JSON array of
// {"tex": string, "display": bool} on stdin, write a JSON array of
// {"html": string} or {"error": string} on stdout. One process per page.
"use strict";
const katex = require("katex");

let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => { input += chunk; });
process.stdin.on("end", () => {
  const items = JSON.parse(input);
  const out = items.map(({ tex, display }) => {
    try {
      return {
        html: katex.renderToString(tex, {
          displayMode: Boolean(display),
          throwOnError: true,
          output: "htmlAndMathml",
          strict: "ignore",
          trust: false,
        }),
      };
    } catch (err) {
      return { error: String(err && err.message ? err.message : err) };
    }
  });
  process.stdout.write(JSON.stringify(out));
});
