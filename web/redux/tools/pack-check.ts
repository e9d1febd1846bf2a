// Checks the output of `npm pack --json` for @actionsync/redux: the files the tarball
// holds must be exactly those listed in web/redux/package-files.txt (no tests, no
// sources, no test data; every entry point and declaration), and the tarball must stay
// under maxTarballBytes. Run by scripts/check-package.sh:
//   node --import tsx web/redux/tools/pack-check.ts PACK_JSON
import { readFileSync } from "node:fs";
import { join } from "node:path";

/**
 * maxTarballBytes bounds the packed tarball (gzip-compressed tar, as npm publish uploads
 * it; 98,742 bytes at 0.2.0, most of it the declarations' doc comments and the README).
 */
const maxTarballBytes = 128 * 1024;

interface PackResult {
  filename: string;
  size: number;
  unpackedSize: number;
  files: { path: string; size: number }[];
}

const [packJson] = process.argv.slice(2);
if (!packJson) throw new Error("usage: pack-check.ts PACK_JSON");
const [pack] = JSON.parse(readFileSync(packJson, "utf8")) as PackResult[];
const listPath = join(import.meta.dirname, "../package-files.txt");
const want = readFileSync(listPath, "utf8")
  .split("\n")
  .map((l) => l.trim())
  .filter((l) => l !== "" && !l.startsWith("#"))
  .sort();
const got = pack.files.map((f) => f.path).sort();
const missing = want.filter((f) => !got.includes(f));
const extra = got.filter((f) => !want.includes(f));
const problems: string[] = [];
if (missing.length > 0) problems.push(`missing from the tarball: ${missing.join(", ")}`);
if (extra.length > 0) problems.push(`in the tarball but not in web/redux/package-files.txt: ${extra.join(", ")}`);
if (pack.size > maxTarballBytes) problems.push(`tarball is ${pack.size} bytes, over the ${maxTarballBytes} bytes allowed`);
console.log(`${pack.filename}: ${got.length} files, tarball ${pack.size} bytes, unpacked ${pack.unpackedSize} bytes`);
if (problems.length > 0) {
  console.error(`npm pack check failed:\n  ${problems.join("\n  ")}\n(update web/redux/package-files.txt if the change is meant)`);
  process.exit(1);
}
console.log("npm pack contents match web/redux/package-files.txt");
