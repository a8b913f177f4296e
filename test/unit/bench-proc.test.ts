// /proc and Redis text parsing used by the benchmark tool's samplers.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { parseClientList, parseKeyValues, parseProcStatCpu, parseStat, parseStatus } from '../../bench/lib/proc';

describe('/proc parsing', () => {
  test('stat: fields after a comm holding spaces and parentheses', () => {
    const text =
      '4242 (node (worker) 1) S 4200 4242 4242 0 -1 4194560 1234 0 0 0 1500 250 0 0 20 0 11 0 100 1000000 5000 18446744073709551615\n';
    const s = parseStat(text);
    assert.equal(s.pid, 4242);
    assert.equal(s.comm, 'node (worker) 1');
    assert.equal(s.state, 'S');
    assert.equal(s.ppid, 4200);
    assert.equal(s.utime, 1500);
    assert.equal(s.stime, 250);
  });
  test('stat: garbage throws', () => {
    assert.throws(() => parseStat('nonsense'));
  });
  test('status: VmRSS and VmHWM in bytes, 0 when absent', () => {
    const text = 'Name:\tnode\nVmPeak:\t 1000 kB\nVmHWM:\t   80000 kB\nVmRSS:\t   71234 kB\nThreads:\t11\n';
    assert.deepEqual(parseStatus(text), { rss: 71234 * 1024, hwm: 80000 * 1024 });
    assert.deepEqual(parseStatus('Name:\tzombie\n'), { rss: 0, hwm: 0 });
  });
  test('io: key/value numbers', () => {
    const kv = parseKeyValues('rchar: 12345\nwchar: 678\nsyscr: 9\n');
    assert.equal(kv['rchar'], 12345);
    assert.equal(kv['wchar'], 678);
  });
  test('/proc/stat aggregate cpu line', () => {
    const r = parseProcStatCpu('cpu  100 5 50 800 20 1 2 0 0 0\ncpu0 50 2 25 400 10 0 1 0 0 0\n');
    assert.equal(r.total, 978);
    assert.equal(r.busy, 978 - 820);
  });
});

describe('Redis CLIENT LIST', () => {
  test('one record per line with key=value pairs', () => {
    const text =
      'id=3 addr=127.0.0.1:33852 laddr=127.0.0.1:6390 fd=8 name=host-1-w1-abc:sub age=0 idle=0 flags=N ssub=12 omem=0 cmd=client|list\n' +
      'id=4 addr=127.0.0.1:33860 laddr=127.0.0.1:6390 fd=9 name= flags=P sub=1\n';
    const r = parseClientList(text);
    assert.equal(r.length, 2);
    assert.equal(r[0]?.['name'], 'host-1-w1-abc:sub');
    assert.equal(r[0]?.['ssub'], '12');
    assert.equal(r[0]?.['cmd'], 'client|list');
    assert.equal(r[1]?.['name'], '');
  });
});
