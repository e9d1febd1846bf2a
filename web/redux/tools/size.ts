// Measures @actionsync/redux as an app's bundler sees it and checks it against the size
// budget: every export of the built package (web/redux/dist/index.js) bundled by esbuild
// (ESM, browser, minified), then gzip level 9.
//
// - "with its runtime": redux and react stay external (the app has them); protobuf-es and
//   Connect (connect, connect-web) are included, as an app that does not use them
//   already pays for them. This is the budgeted figure.
// - "library alone": protobuf-es and Connect external too.
//
//   node --import tsx web/redux/tools/size.ts     (after npm run build in web/redux)
import { build } from "esbuild";
import { join } from "node:path";
import { gzipSync } from "node:zlib";

/**
 * budgets bound the min+gzip sizes, set a few percent above what was measured when they
 * were set (issue 13, esbuild 0.28.2, with the shared stream's lease locks for insecure
 * origins: 51.6 KiB with its runtime, 19.8 KiB alone).
 */
const budgets = { withRuntime: 53 * 1024, alone: 20.5 * 1024 };

const dist = join(import.meta.dirname, "../dist");

async function minGzip(entry: string, external: string[]): Promise<{ min: number; gzip: number }> {
  const out = await build({
    stdin: { contents: `export * from ${JSON.stringify(join(dist, entry))};`, resolveDir: dist, loader: "js" },
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    minify: true,
    legalComments: "none",
    write: false,
    external,
    logLevel: "error",
  });
  const code = out.outputFiles[0].contents;
  return { min: code.length, gzip: gzipSync(code, { level: 9 }).length };
}

const kib = (n: number) => `${(n / 1024).toFixed(1)} KiB`;
const apps = ["redux", "react", "react-redux"];
const runtime = ["@bufbuild/protobuf", "@bufbuild/protobuf/*", "@connectrpc/connect", "@connectrpc/connect/*", "@connectrpc/connect-web"];
const withRuntime = await minGzip("index.js", apps);
const alone = await minGzip("index.js", [...apps, ...runtime]);
const react = await minGzip("react.js", [...apps, ...runtime]);
console.log(`@actionsync/redux with its runtime (protobuf-es, Connect): ${kib(withRuntime.min)} min, ${kib(withRuntime.gzip)} min+gzip (budget ${kib(budgets.withRuntime)})`);
console.log(`@actionsync/redux alone: ${kib(alone.min)} min, ${kib(alone.gzip)} min+gzip (budget ${kib(budgets.alone)})`);
console.log(`@actionsync/redux/react: ${kib(react.min)} min, ${kib(react.gzip)} min+gzip`);
const over = [
  withRuntime.gzip > budgets.withRuntime ? `with its runtime ${withRuntime.gzip} > ${budgets.withRuntime}` : "",
  alone.gzip > budgets.alone ? `alone ${alone.gzip} > ${budgets.alone}` : "",
].filter((s) => s !== "");
if (over.length > 0) {
  console.error(`size budget exceeded (bytes min+gzip): ${over.join("; ")}. Trim the code or, if the growth is worth it, raise the budget in web/redux/tools/size.ts and the figures in web/redux/README.md`);
  process.exit(1);
}
console.log("within the size budget");
