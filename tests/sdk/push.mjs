// Bannou's own TypeScript client SDK (@beyondimmersion/bannou-client, used unchanged)
// against ringgate's push plane, driven through the push API on the admin listener.
// tests/bannou_sdk.rs starts the gateway (with [admin] token) and its HTTP test backend,
// places this script beside a node_modules that holds the SDK and `ws`, and runs it with:
//   RINGGATE_URL          server base URL, e.g. http://127.0.0.1:PORT (the SDK adds /connect)
//   RINGGATE_JWT          a token for a session with the role "user" and a `sid` claim
//   RINGGATE_SESSION_ID   that `sid`: the session the push API addresses
//   RINGGATE_ADMIN_URL    the admin listener, e.g. http://127.0.0.1:PORT
//   RINGGATE_ADMIN_TOKEN  the push API's bearer token ([admin] token)
//   RINGGATE_ROLE         a role the token lacks that unlocks RINGGATE_UNLOCKED (an echo endpoint)
//   RINGGATE_UNLOCKED     that endpoint's path
// It checks, through the SDK's own hooks: a push (POST /v1/sessions/{id}/push) reaches
// `onRawEvent`; adding the role (POST …/roles) fires `onCapabilitiesAdded` with the
// endpoint, which can then be called, and removing it fires `onCapabilitiesRemoved`; a
// kick (POST …/kick, close 4002) reaches `onDisconnect` as DisconnectReason.Kicked.
// It prints one JSON summary line on stdout and exits 0, or 1 with the failures listed
// on stderr followed by what the SDK printed there (its [DEBUG] lines, held back).
import { isDeepStrictEqual } from 'node:util';
import { BannouClient, DisconnectReason } from '@beyondimmersion/bannou-client';

const env = (name) => process.env[name];
const url = env('RINGGATE_URL');
const jwt = env('RINGGATE_JWT');
const sid = env('RINGGATE_SESSION_ID');
const adminUrl = env('RINGGATE_ADMIN_URL');
const adminToken = env('RINGGATE_ADMIN_TOKEN');
const role = env('RINGGATE_ROLE');
const unlocked = env('RINGGATE_UNLOCKED');
const CALL_TIMEOUT_MS = 10000;
const WAIT_MS = 5000;
const WATCHDOG_MS = 50000;
const PUSH_EVENT = 'ringgate.test-push';

const sdkOutput = [];
for (const name of ['error', 'warn', 'log', 'info', 'debug']) {
  console[name] = (...args) => sdkOutput.push(args.map(String).join(' '));
}
const say = (line) => process.stderr.write(`push: ${line}\n`);

const failures = [];
const summary = { ok: false };
const check = (cond, message) => {
  if (!cond) failures.push(message);
  return cond;
};

function finish() {
  summary.ok = failures.length === 0;
  summary.failures = failures;
  process.stdout.write(JSON.stringify(summary) + '\n');
  if (!summary.ok) {
    process.stderr.write(`push: FAILED (${failures.length}):\n`);
    for (const f of failures) process.stderr.write(`  - ${f}\n`);
    process.stderr.write(`push: what the SDK printed (${sdkOutput.length} lines):\n`);
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
    new Promise((_, reject) => setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms).unref()),
  ]);

/// POST to the push API; returns { status, body }.
async function pushApi(route, body) {
  const r = await fetch(`${adminUrl}/v1/sessions/${encodeURIComponent(sid)}/${route}`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${adminToken}`, 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  const text = await r.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {
    // reported below as the raw text
  }
  const answer = { status: r.status, body: json ?? text };
  check(
    r.status === 202 && isDeepStrictEqual(json, { connections: 1 }),
    `POST /v1/sessions/${sid}/${route} answered ${JSON.stringify(answer)}, expected 202 {"connections":1}`,
  );
  return answer;
}

/// A queue of what a callback was given: `next()` waits for the next one.
function recorder() {
  const got = [];
  const waiting = [];
  return {
    got,
    push(value) {
      got.push(value);
      const w = waiting.shift();
      if (w) w(value);
    },
    next(already) {
      return got.length > already ? Promise.resolve(got[already]) : new Promise((resolve) => waiting.push(resolve));
    },
  };
}

async function main() {
  if (!check(url && jwt && sid && adminUrl && adminToken && role && unlocked, 'an RINGGATE_* variable is missing')) return;
  const client = new BannouClient();
  const connected = await client.connectWithTokenAsync(url, jwt);
  if (!check(connected === true, `connectWithTokenAsync returned ${connected}: ${client.lastError}`)) return;
  summary.session_id = client.sessionId ?? null;
  check(client.sessionId === sid, `the manifest's session id is ${client.sessionId}, the token's sid ${sid}`);
  check(client.getServiceGuid(unlocked) === undefined, `${unlocked} is callable before ${role} was granted`);

  // Hooks set after connecting: the first manifest fires onCapabilitiesAdded with all.
  const raw = recorder();
  client.onRawEvent(PUSH_EVENT, (json) => raw.push(json));
  const added = recorder();
  const removed = recorder();
  client.onCapabilitiesAdded = (caps) => added.push(caps.map((c) => c.endpoint).sort());
  client.onCapabilitiesRemoved = (caps) => removed.push(caps.map((c) => c.endpoint).sort());
  const disconnected = recorder();
  client.onDisconnect = (info) => disconnected.push(info);

  // 1. A push through the push API reaches onRawEvent, as the JSON it was sent as.
  const event = { eventName: PUSH_EVENT, n: 7, text: 'héllo wörld ✓', nested: { list: [1, 'two', null] } };
  summary.push = { api: await pushApi('push', { payload: event }) };
  try {
    const json = await withTimeout(raw.next(0), WAIT_MS, `onRawEvent('${PUSH_EVENT}')`);
    summary.push.received = JSON.parse(json);
    check(isDeepStrictEqual(summary.push.received, event), `onRawEvent got ${json}, expected ${JSON.stringify(event)}`);
  } catch (e) {
    check(false, e.message);
  }

  // 2. Granting the role: a new manifest, onCapabilitiesAdded([unlocked]), and the call works.
  summary.roles_added = { api: await pushApi('roles', { add: [role] }) };
  try {
    summary.roles_added.endpoints = await withTimeout(added.next(0), WAIT_MS, 'onCapabilitiesAdded');
    check(
      isDeepStrictEqual(summary.roles_added.endpoints, [unlocked]),
      `onCapabilitiesAdded got ${JSON.stringify(summary.roles_added.endpoints)}, expected ["${unlocked}"]`,
    );
    const body = { granted: role };
    const r = await client.invokeAsync(unlocked, body, 0, CALL_TIMEOUT_MS);
    summary.roles_added.call_ok = r.isSuccess && isDeepStrictEqual(r.result, body);
    check(summary.roles_added.call_ok, `calling ${unlocked} once granted: ${JSON.stringify(r.error ?? r.result)}`);
  } catch (e) {
    check(false, e.message);
  }

  // 3. Revoking it: onCapabilitiesRemoved([unlocked]), and the SDK no longer offers it.
  summary.roles_removed = { api: await pushApi('roles', { remove: [role] }) };
  try {
    summary.roles_removed.endpoints = await withTimeout(removed.next(0), WAIT_MS, 'onCapabilitiesRemoved');
    check(
      isDeepStrictEqual(summary.roles_removed.endpoints, [unlocked]),
      `onCapabilitiesRemoved got ${JSON.stringify(summary.roles_removed.endpoints)}, expected ["${unlocked}"]`,
    );
    summary.roles_removed.still_mapped = client.getServiceGuid(unlocked) !== undefined;
    check(!summary.roles_removed.still_mapped, `${unlocked} is still mapped after the role was revoked`);
  } catch (e) {
    check(false, e.message);
  }
  summary.capability_callbacks = { added: added.got, removed: removed.got };
  check(added.got.length === 1, `onCapabilitiesAdded fired ${added.got.length} times: ${JSON.stringify(added.got)}`);
  check(removed.got.length === 1, `onCapabilitiesRemoved fired ${removed.got.length} times: ${JSON.stringify(removed.got)}`);

  // 4. A kick closes with 4002, which the SDK classifies as Kicked.
  const reason = 'kicked by the push API test';
  summary.kick = { api: await pushApi('kick', { reason }) };
  try {
    const info = await withTimeout(disconnected.next(0), WAIT_MS, 'onDisconnect after the kick');
    summary.kick.disconnect = {
      reason: info.reason,
      close_code: info.closeCode ?? null,
      message: info.message ?? null,
      can_reconnect: info.canReconnect,
    };
    check(
      info.reason === DisconnectReason.Kicked && info.closeCode === 4002 && info.message === reason,
      `the kick ended with ${JSON.stringify(summary.kick.disconnect)}, expected kicked / 4002 / "${reason}"`,
    );
  } catch (e) {
    check(false, e.message);
  }
  check(!client.isConnected, 'still connected after the kick');
  say(`push, roles added/removed and kick seen through the SDK's hooks`);
}

main().then(finish, (e) => {
  failures.push(`unexpected exception: ${e.stack ?? e}`);
  finish();
});
