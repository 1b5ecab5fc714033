// node install-scripts.js [SKIP...]: the packages under ./node_modules (the cwd's) that have a
// preinstall, install or postinstall script, one per line, but the SKIPped ones; for `npm rebuild`
// after an `npm install --ignore-scripts` (labbuild test image "n8n", tests/apps/recipes/n8n).
const fs = require("fs");
const path = require("path");
const skip = new Set(process.argv.slice(2));
const found = new Set();
function walk(dir) {
  let entries;
  try { entries = fs.readdirSync(dir, { withFileTypes: true }); } catch { return; }
  for (const e of entries) {
    if (!e.isDirectory() || e.name.startsWith(".")) continue;
    const sub = path.join(dir, e.name);
    if (e.name.startsWith("@")) { walk(sub); continue; }
    try {
      const pkg = JSON.parse(fs.readFileSync(path.join(sub, "package.json"), "utf8"));
      const s = pkg.scripts || {};
      if ((s.preinstall || s.install || s.postinstall) && !skip.has(pkg.name)) found.add(pkg.name);
      if (!s.install && fs.existsSync(path.join(sub, "binding.gyp")) && !skip.has(pkg.name)) found.add(pkg.name);
    } catch {}
    walk(path.join(sub, "node_modules"));
  }
}
walk(path.join(process.cwd(), "node_modules"));
console.log([...found].sort().join("\n"));
