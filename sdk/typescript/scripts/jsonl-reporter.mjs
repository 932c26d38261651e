// A reporter for Node's test runner that writes one JSON line per finished test (its file,
// nesting, name, outcome, duration and error): what tests/sdk/test_typescript.py reads to give
// every Node test a pytest case of its own.
export default async function* jsonlReporter(source) {
  for await (const event of source) {
    if (event.type !== "test:pass" && event.type !== "test:fail") continue;
    const { name, nesting, file, details, skip, todo } = event.data;
    const error = details?.error;
    yield JSON.stringify({
      file: file ?? null,
      nesting,
      name,
      passed: event.type === "test:pass",
      skipped: Boolean(skip || todo),
      durationMs: details?.duration_ms ?? null,
      error: error ? String(error.cause?.stack ?? error.cause ?? error.stack ?? error) : null,
    }) + "\n";
  }
}
