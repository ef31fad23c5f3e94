// Bundles the console's front end into dist/ (committed: `cargo build` alone serves it, and
// CI rebuilds it and fails when the committed files differ from their sources).
import * as esbuild from "esbuild";

await esbuild.build({
  entryPoints: { editor: "src/editor.tsx", compare: "src/compare.ts", preview: "src/preview.ts" },
  bundle: true,
  minify: true,
  format: "iife",
  target: ["chrome120", "firefox120", "safari17"],
  outdir: "dist",
  legalComments: "none",
  logLevel: "warning",
  define: { "process.env.NODE_ENV": '"production"' },
});
