// Parse an AsyncAPI document with @asyncapi/parser and print its diagnostics as JSON lines.
// usage: node scripts/asyncapi-validate.mjs NPM_PREFIX DOCUMENT  (exit 1 on any error)
// NPM_PREFIX: where `make asyncapi-tools` installed the parser (~/.cache/dspex/npm/asyncapi).
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";

const require = createRequire(join(process.argv[2], "package.json"));
const { Parser } = require("@asyncapi/parser");
const { document, diagnostics } = await new Parser().parse(readFileSync(process.argv[3], "utf8"));
for (const d of diagnostics) {
  console.log(JSON.stringify({ severity: d.severity, code: d.code, message: d.message, path: d.path }));
}
const errors = diagnostics.filter((d) => d.severity === 0).length;
console.log(JSON.stringify({ parsed: document !== undefined, errors }));
process.exit(errors === 0 && document !== undefined ? 0 : 1);
