/** Just enough of the Prometheus text exposition format to read values in tests. */

export interface PromSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

function parseValue(text: string): number {
  if (text === '+Inf') return Infinity;
  if (text === '-Inf') return -Infinity;
  if (text === 'NaN') return NaN;
  return Number(text);
}

/** Parses `{a="x",b="y\"z"}` starting at `start` (the `{`); returns labels and the index after `}`. */
function parseLabels(line: string, start: number): { labels: Record<string, string>; end: number } {
  const labels: Record<string, string> = {};
  let i = start + 1;
  for (;;) {
    while (line[i] === ' ' || line[i] === ',') i++;
    if (line[i] === '}') return { labels, end: i + 1 };
    const eq = line.indexOf('=', i);
    if (eq < 0 || line[eq + 1] !== '"') throw new Error(`prometheus: bad labels in ${JSON.stringify(line)}`);
    const key = line.slice(i, eq).trim();
    let value = '';
    i = eq + 2;
    for (; i < line.length && line[i] !== '"'; i++) {
      if (line[i] === '\\') {
        i++;
        const escaped = line[i];
        value += escaped === 'n' ? '\n' : (escaped ?? '');
      } else {
        value += line[i];
      }
    }
    if (i >= line.length) throw new Error(`prometheus: unterminated label value in ${JSON.stringify(line)}`);
    labels[key] = value;
    i++;
  }
}

export function parsePrometheusText(text: string): PromSample[] {
  const samples: PromSample[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const brace = line.indexOf('{');
    const space = line.indexOf(' ');
    let name: string;
    let labels: Record<string, string> = {};
    let rest: string;
    if (brace >= 0 && (space < 0 || brace < space)) {
      name = line.slice(0, brace);
      const parsed = parseLabels(line, brace);
      labels = parsed.labels;
      rest = line.slice(parsed.end).trim();
    } else {
      name = line.slice(0, space);
      rest = line.slice(space + 1).trim();
    }
    const [valueText = ''] = rest.split(/\s+/); // an optional timestamp follows
    samples.push({ name, labels, value: parseValue(valueText) });
  }
  return samples;
}

/**
 * Sum of every series named `name` whose labels include all of `labels`
 * (a subset match); undefined when no series matches.
 */
export function sumMetric(samplesOrText: PromSample[] | string, name: string, labels: Record<string, string> = {}): number | undefined {
  const samples = typeof samplesOrText === 'string' ? parsePrometheusText(samplesOrText) : samplesOrText;
  let total: number | undefined;
  for (const sample of samples) {
    if (sample.name !== name) continue;
    if (!Object.entries(labels).every(([k, v]) => sample.labels[k] === v)) continue;
    total = (total ?? 0) + sample.value;
  }
  return total;
}
