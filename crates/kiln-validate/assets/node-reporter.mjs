// Kiln's reporter for node's test runner: every finished test and the coverage summary,
// as JSON lines (one event per line), so Kiln never reads the human-readable output.
export default async function* kilnReporter(source) {
  for await (const event of source) {
    const d = event.data || {};
    if (event.type === 'test:pass' || event.type === 'test:fail') {
      const err = d.details && d.details.error;
      const cause = err && (err.cause || err);
      yield JSON.stringify({
        type: event.type === 'test:pass' ? 'pass' : 'fail',
        name: d.name,
        nesting: d.nesting,
        file: d.file || null,
        skip: d.skip !== undefined && d.skip !== false,
        todo: d.todo !== undefined && d.todo !== false,
        message: cause ? String(cause.message || cause) : null,
        failure_type: err ? err.failureType || null : null,
        duration_ms: d.details ? d.details.duration_ms : null,
      }) + '\n';
    } else if (event.type === 'test:coverage') {
      const t = d.summary && d.summary.totals;
      if (t) {
        yield JSON.stringify({
          type: 'coverage',
          total_lines: t.totalLineCount,
          covered_lines: t.coveredLineCount,
          line_percent: t.coveredLinePercent,
        }) + '\n';
      }
    }
  }
}
