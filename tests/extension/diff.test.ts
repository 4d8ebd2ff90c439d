import assert from 'node:assert/strict';
import { test } from 'node:test';
import { applyUnifiedDiff } from '../../extension/src/diff';

const before = ['import os', '', 'LR = 0.04', 'DEPTH = 4', '', 'def main():', '    pass', ''].join('\n');
const diff = ['--- a/train.py', '+++ b/train.py', '@@ -2,3 +2,3 @@', ' ', '-LR = 0.04', '+LR = 0.06', ' DEPTH = 4', ''].join('\n');

test('applies a hunk at its line', () => {
  assert.equal(applyUnifiedDiff(before, diff), before.replace('LR = 0.04', 'LR = 0.06'));
});

test('applies a hunk that drifted (lines added above)', () => {
  const drifted = `# header\n# more\n${before}`;
  assert.equal(applyUnifiedDiff(drifted, diff), drifted.replace('LR = 0.04', 'LR = 0.06'));
});

test('insertions and deletions', () => {
  const d = ['@@ -6,2 +6,3 @@', ' def main():', '+    print("hi")', '     pass'].join('\n');
  assert.equal(applyUnifiedDiff(before, d), before.replace('def main():\n', 'def main():\n    print("hi")\n'));
});

test('returns undefined when the context is gone or the diff is empty', () => {
  assert.equal(applyUnifiedDiff(before.replace('LR = 0.04', 'LR = 0.5'), diff), undefined);
  assert.equal(applyUnifiedDiff(before, ''), undefined);
});

test('keeps CRLF line endings', () => {
  const crlf = before.replace(/\n/g, '\r\n');
  assert.equal(applyUnifiedDiff(crlf, diff), crlf.replace('LR = 0.04', 'LR = 0.06'));
});
