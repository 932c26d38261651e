// The published shape: ESM (dist/esm) and CommonJS (dist/cjs) builds, each with its type
// declarations; then the examples (build/examples), type-checked against the package as a
// user's code would be. One TypeScript process: the ESM program is type-checked (strict), the
// CommonJS files are the same modules transpiled (the sources are isolatedModules-safe), and
// the examples' program reuses the parsed library files.
import { copyFileSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import ts from "typescript";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const parsed = new Map();

function config(name) {
  const file = join(root, name);
  const { config: json, error } = ts.readConfigFile(file, ts.sys.readFile);
  if (error) throw new Error(ts.flattenDiagnosticMessageText(error.messageText, "\n"));
  return ts.parseJsonConfigFileContent(json, ts.sys, root, undefined, file);
}

function host(options) {
  const base = ts.createCompilerHost(options);
  const getSourceFile = base.getSourceFile.bind(base);
  base.getSourceFile = (fileName, language, ...rest) => {
    const key = `${fileName}\0${typeof language === "object" ? language.languageVersion : language}`;
    if (!parsed.has(key)) parsed.set(key, getSourceFile(fileName, language, ...rest));
    return parsed.get(key);
  };
  return base;
}

function compile(name) {
  const { options, fileNames } = config(name);
  const program = ts.createProgram({ rootNames: fileNames, options, host: host(options) });
  const emitted = program.emit();
  const diagnostics = [...ts.getPreEmitDiagnostics(program), ...emitted.diagnostics];
  if (diagnostics.length > 0) {
    const text = ts.formatDiagnosticsWithColorAndContext(diagnostics, {
      getCanonicalFileName: (f) => f, getCurrentDirectory: () => root, getNewLine: () => "\n",
    });
    process.stderr.write(text);
    process.exit(1);
  }
}

rmSync(join(root, "dist"), { recursive: true, force: true });
rmSync(join(root, "build"), { recursive: true, force: true });

compile("tsconfig.json");

// dist/cjs: the same modules as CommonJS, with the same declarations, marked as CommonJS for
// Node and TypeScript (the package itself is "type": "module").
const esm = join(root, "dist", "esm");
const cjs = join(root, "dist", "cjs");
mkdirSync(cjs, { recursive: true });
const { options: cjsOptions } = config("tsconfig.cjs.json");
for (const file of readdirSync(join(root, "src")).filter((f) => f.endsWith(".ts"))) {
  const source = readFileSync(join(root, "src", file), "utf8");
  const { outputText } = ts.transpileModule(source, { compilerOptions: cjsOptions, fileName: file });
  writeFileSync(join(cjs, file.replace(/\.ts$/, ".js")), outputText);
}
for (const file of readdirSync(esm).filter((f) => f.endsWith(".d.ts"))) copyFileSync(join(esm, file), join(cjs, file));
writeFileSync(join(cjs, "package.json"), JSON.stringify({ type: "commonjs" }) + "\n");

compile("tsconfig.examples.json");
