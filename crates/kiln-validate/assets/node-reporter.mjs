// Kiln's reporter for node's test runner: every finished test and the coverage summary,
// as JSON lines (one event per line), so Kiln never reads the human-readable output.
// A test file that fails as a whole (it threw while loading: a missing module, a syntax
// error) is reported only as "test failed"; its reason is on that file's stderr, so the first
// error line seen there (at most 1 KiB, one per file) is added to the message.
const ERROR_LINE = /^\s*(?:[A-Za-z]*Error|Error)(?: \[[A-Z_]+\])?: /;
export default async function* kilnReporter(source) {
  const reasons = new Map();
  for await (const event of source) {
    const d = event.data || {};
    if (event.type === 'test:stderr') {
      const file = d.file || '';
      const line = String(d.message || '');
      if (!reasons.has(file) && ERROR_LINE.test(line)) {
        reasons.set(file, line.trim().slice(0, 1024));
      }
    } else if (event.type === 'test:pass' || event.type === 'test:fail') {
      const err = d.details && d.details.error;
      const cause = err && (err.cause || err);
      let message = cause ? String(cause.message || cause) : null;
      if (message === 'test failed' && d.nesting === 0 && reasons.has(d.file || '')) {
        message = `${message}: ${reasons.get(d.file || '')}`;
      }
      yield JSON.stringify({
        type: event.type === 'test:pass' ? 'pass' : 'fail',
        name: d.name,
        nesting: d.nesting,
        file: d.file || null,
        skip: d.skip !== undefined && d.skip !== false,
        todo: d.todo !== undefined && d.todo !== false,
        message,
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
