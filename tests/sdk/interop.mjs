// Interop check of Bannou's own TypeScript client SDK (@beyondimmersion/bannou-client,
// used unchanged) against a running ringgate. tests/bannou_sdk.rs starts the gateway and
// its HTTP test backend (tests/common), places this script beside a node_modules that
// holds the SDK and `ws`, and runs it with:
//   RINGGATE_URL               server base URL, e.g. http://127.0.0.1:PORT (the SDK adds /connect)
//   RINGGATE_JWT               a token for a session with the role "user"
//   RINGGATE_CONNECT_BOUND_MS  connecting (upgrade + manifest) must take less (default 1000)
// It prints one JSON summary line on stdout and exits 0, or 1 with the failures listed on
// stderr followed by what the SDK printed there (its [DEBUG] lines, held back until then).
import { isDeepStrictEqual } from 'node:util';
import { BannouClient, parse, isResponseFlag } from '@beyondimmersion/bannou-client';

const url = process.env.RINGGATE_URL;
const jwt = process.env.RINGGATE_JWT;
const connectBoundMs = Number(process.env.RINGGATE_CONNECT_BOUND_MS ?? 1000);
const CALL_TIMEOUT_MS = 10000;
const WATCHDOG_MS = 50000;

// The SDK writes [DEBUG] lines (and a warning when the manifest wait times out) through
// console.error/console.warn: keep them, show them only if something fails.
const sdkOutput = [];
for (const name of ['error', 'warn', 'log', 'info', 'debug']) {
  console[name] = (...args) => sdkOutput.push(args.map(String).join(' '));
}
const say = (line) => process.stderr.write(`interop: ${line}\n`);

const failures = [];
const summary = { ok: false, connect_ms: null, connect_bound_ms: connectBoundMs };
const check = (cond, message) => {
  if (!cond) failures.push(message);
  return cond;
};

function finish() {
  summary.ok = failures.length === 0;
  summary.failures = failures;
  process.stdout.write(JSON.stringify(summary) + '\n');
  if (!summary.ok) {
    process.stderr.write(`interop: FAILED (${failures.length}):\n`);
    for (const f of failures) process.stderr.write(`  - ${f}\n`);
    process.stderr.write(`interop: what the SDK printed (${sdkOutput.length} lines):\n`);
    for (const l of sdkOutput) process.stderr.write(`  | ${l}\n`);
  }
  // exit now: the SDK leaves its 30 s manifest timer running even after the manifest came.
  process.exit(summary.ok ? 0 : 1);
}

setTimeout(() => {
  failures.push(`the script did not finish within ${WATCHDOG_MS} ms (stuck after: ${JSON.stringify(summary)})`);
  finish();
}, WATCHDOG_MS).unref();

const withTimeout = (promise, ms, what) =>
  Promise.race([
    promise,
    new Promise((_, reject) => setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms).unref()),
  ]);

async function main() {
  if (!check(url && jwt, 'RINGGATE_URL and RINGGATE_JWT must be set')) return;
  const client = new BannouClient();

  // 1. Connect: upgrade with `Authorization: Bearer`, then the SDK waits for the manifest.
  const t0 = performance.now();
  const connected = await client.connectWithTokenAsync(url, jwt);
  summary.connect_ms = Math.round(performance.now() - t0);
  say(`connectWithTokenAsync took ${summary.connect_ms} ms (bound ${connectBoundMs} ms)`);
  if (!check(connected === true, `connectWithTokenAsync returned ${connected}: ${client.lastError}`)) return;
  check(
    summary.connect_ms < connectBoundMs,
    `connecting took ${summary.connect_ms} ms, bound ${connectBoundMs} ms: the SDK waited for a ` +
      `capability manifest (it waits up to 30 s for one that arrives after it starts waiting)`,
  );
  summary.session_id = client.sessionId ?? null;
  summary.endpoints = [...client.availableApis.keys()].sort();
  check(typeof client.sessionId === 'string' && client.sessionId.length > 0, 'no session id from the manifest');
  for (const e of ['/echo', '/status/404']) {
    check(client.getServiceGuid(e) !== undefined, `manifest lacks ${e}: ${summary.endpoints.join(', ')}`);
  }
  if (!check(client.isConnected, 'not connected after connectWithTokenAsync')) return;

  // The wire response code of every answer, by message id (the SDK's ApiResponse carries
  // the HTTP status it maps the code to, not the code itself).
  const wireCodes = new Map();
  client.webSocket.on('message', (data) => {
    try {
      const m = parse(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
      if (isResponseFlag(m.flags)) wireCodes.set(m.messageId.toString(), m.responseCode);
    } catch {
      // not a Connect message: the SDK ignores it as well
    }
  });

  // 2. Round trips through the echo endpoint.
  const bodies = [
    { hello: 'ringgate' },
    { n: 42, pi: 3.25, yes: true, no: false, list: [1, 'two', { three: 3 }], nested: { a: { b: { c: [] } } } },
    { text: 'héllo wörld ✓ 日本語 🎮', empty: '', quote: '"\\/' },
    { big: 'x'.repeat(2000) },
  ];
  summary.echo_round_trips = 0;
  for (const body of bodies) {
    try {
      const r = await client.invokeAsync('/echo', body, 0, CALL_TIMEOUT_MS);
      if (
        check(r.isSuccess, `echo of ${JSON.stringify(body).slice(0, 60)} failed: ${JSON.stringify(r.error)}`) &&
        check(isDeepStrictEqual(r.result, body), `echo answered ${JSON.stringify(r.result).slice(0, 120)} for ${JSON.stringify(body).slice(0, 120)}`)
      ) {
        summary.echo_round_trips += 1;
      }
    } catch (e) {
      check(false, `echo threw: ${e.message}`);
    }
  }

  // 3. 50 calls in flight at once, each answered with its own body.
  const N = 50;
  summary.concurrent_total = N;
  summary.concurrent_ok = 0;
  const t1 = performance.now();
  const settled = await Promise.allSettled(
    Array.from({ length: N }, (_, i) => client.invokeAsync('/echo', { i, tag: `call-${i}` }, 0, CALL_TIMEOUT_MS)),
  );
  summary.concurrent_ms = Math.round(performance.now() - t1);
  const wrong = [];
  settled.forEach((s, i) => {
    const ok = s.status === 'fulfilled' && s.value.isSuccess && isDeepStrictEqual(s.value.result, { i, tag: `call-${i}` });
    if (ok) summary.concurrent_ok += 1;
    else wrong.push(`#${i}: ${s.status === 'rejected' ? s.reason.message : JSON.stringify(s.value.error ?? s.value.result)}`);
  });
  check(wrong.length === 0, `${wrong.length} of ${N} concurrent calls went wrong: ${wrong.slice(0, 5).join('; ')}`);
  say(`${summary.concurrent_ok}/${N} concurrent calls answered correctly in ${summary.concurrent_ms} ms`);

  // 4. A backend 404 is code 51, which the SDK reports as a failure (HTTP 404, NotFound).
  try {
    const r = await client.invokeAsync('/status/404', {}, 0, CALL_TIMEOUT_MS);
    const wire = r.error ? wireCodes.get(String(r.error.messageId)) : undefined;
    summary.not_found = {
      is_success: r.isSuccess,
      wire_code: wire ?? null,
      response_code: r.error?.responseCode ?? null,
      error_name: r.error?.errorName ?? null,
    };
    check(r.isSuccess === false, `the /status/404 call succeeded: ${JSON.stringify(r.result)}`);
    check(wire === 51, `the /status/404 call's wire code was ${wire}, expected 51`);
    check(
      r.error?.responseCode === 404 && r.error?.errorName === 'NotFound',
      `the SDK's failure for code 51 was ${JSON.stringify(r.error, (_, v) => (typeof v === 'bigint' ? v.toString() : v))}`,
    );
  } catch (e) {
    check(false, `the /status/404 call threw: ${e.message}`);
  }

  // 5. Meta requests (flag 0x80, meta type in the channel): GET {endpoint}/meta/{kind}.
  summary.meta = {};
  for (const [kind, call] of [
    ['info', () => client.getEndpointInfoAsync('/echo')],
    ['request-schema', () => client.getRequestSchemaAsync('/echo')],
  ]) {
    try {
      const m = await call();
      summary.meta[kind] = m;
      check(isDeepStrictEqual(m, { path: `/echo/meta/${kind}` }), `meta ${kind} answered ${JSON.stringify(m)}`);
    } catch (e) {
      check(false, `meta ${kind} failed: ${e.message}`);
    }
  }

  // 6. Disconnect: close 1000, and the gateway completes the close handshake.
  const closed = new Promise((resolve) => {
    client.onDisconnect = resolve;
  });
  await client.disconnectAsync();
  try {
    const info = await withTimeout(closed, 5000, 'close handshake');
    summary.disconnect = { close_code: info.closeCode ?? null, reason: info.reason };
    check(
      info.closeCode === 1000 && info.reason === 'client_disconnect',
      `disconnect ended with ${JSON.stringify(summary.disconnect)}, expected close 1000 / client_disconnect`,
    );
  } catch (e) {
    check(false, e.message);
  }
  check(!client.isConnected, 'still connected after disconnectAsync');
}

main().then(finish, (e) => {
  failures.push(`unexpected exception: ${e.stack ?? e}`);
  finish();
});
