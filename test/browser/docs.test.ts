/**
 * docs/browser-e2e.md shows the nginx configuration the browser suite runs:
 * its snippets must be the directives of deploy/nginx/*.conf (comments and
 * blank lines aside). No browser needed; it lives here because the suite's
 * claim ("the README's nginx configuration is the one we test") depends on it.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { repoRoot } from '../harness/paths';
import { NGINX_SNIPPETS, splitSnippet, templateUpstreams } from './nginx';

const DOC = path.join(repoRoot, 'docs', 'browser-e2e.md');

function directives(text: string): string[] {
  return text
    .split('\n')
    .map((l) => l.trimEnd())
    .filter((l) => l.trim() !== '' && !l.trim().startsWith('#'));
}

/** The fenced block right after `<!-- snippet: <file> -->` in the doc. */
function docSnippet(doc: string, file: string): string {
  const marker = `<!-- snippet: ${file} -->`;
  const at = doc.indexOf(marker);
  assert.ok(at >= 0, `${DOC} has no ${marker}`);
  const block = /```nginx\n([\s\S]*?)\n```/.exec(doc.slice(at + marker.length));
  assert.ok(block?.[1] !== undefined, `no nginx code block after ${marker}`);
  return block[1];
}

describe('docs/browser-e2e.md and deploy/nginx', () => {
  const doc = readFileSync(DOC, 'utf8');
  for (const [variant, file] of Object.entries(NGINX_SNIPPETS)) {
    const relative = path.relative(repoRoot, file);
    it(`the doc's ${variant}-host snippet is ${relative} (update the doc when the file changes)`, () => {
      assert.deepEqual(directives(docSnippet(doc, relative)), directives(readFileSync(file, 'utf8')));
    });
  }

  it('the suite templates only the upstream addresses of the snippets (surplus example hosts dropped)', () => {
    const expectTemplated = (variant: 'single' | 'multi', example: RegExp, ports: number[]) => {
      const { http } = splitSnippet(readFileSync(NGINX_SNIPPETS[variant], 'utf8'));
      let i = 0;
      const expected = directives(http).flatMap((line) => {
        if (!example.test(line)) return [line];
        const port = ports[i++];
        return port === undefined ? [] : [line.replace(example, `127.0.0.1:${port}`)];
      });
      assert.equal(i, variant === 'single' ? 1 : 3, `example upstream lines in ${variant}`);
      assert.deepEqual(directives(templateUpstreams(variant, http, ports)), expected);
    };
    expectTemplated('single', /127\.0\.0\.1:9000/, [41003]);
    expectTemplated('multi', /10\.0\.0\.\d+:9000/, [41001, 41002]);
  });
});
