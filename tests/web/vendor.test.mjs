// The vendored uPlot (src/web/vendor/, embedded in the binary) is
// byte-identical to the locked npm package's dist files, so an upgrade is
// `npm install --save-exact uplot@X` plus copying those files (the commands
// are in docs/dashboard.md). Needs no browser and no server.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { it } from "node:test";
import { fileURLToPath } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const require = createRequire(import.meta.url);

const FILES = [
  ["dist/uPlot.iife.min.js", "uPlot.iife.min.js"],
  ["dist/uPlot.min.css", "uPlot.min.css"],
  ["LICENSE", "uPlot.LICENSE"],
];

it("src/web/vendor holds the locked uplot's files, byte for byte", () => {
  const lock = JSON.parse(readFileSync(path.join(ROOT, "package-lock.json"), "utf8"));
  const locked = lock.packages["node_modules/uplot"].version;
  const pkg = JSON.parse(readFileSync(path.join(ROOT, "package.json"), "utf8"));
  assert.equal(pkg.devDependencies.uplot, locked, "package.json pins uplot at the locked version");
  const dir = path.dirname(require.resolve("uplot/package.json"));
  assert.equal(require("uplot/package.json").version, locked, "node_modules holds the locked uplot (npm ci)");
  for (const [from, to] of FILES) {
    const want = readFileSync(path.join(dir, from));
    const have = readFileSync(path.join(ROOT, "src/web/vendor", to));
    assert.ok(have.equals(want), `src/web/vendor/${to} differs from uplot@${locked}/${from}: copy it again`);
  }
  const head = readFileSync(path.join(ROOT, "src/web/vendor/uPlot.iife.min.js"), "utf8").slice(0, 200);
  assert.match(head, new RegExp(`\\(v${locked.replaceAll(".", "\\.")}\\)`), "the bundle names the locked version");
});
