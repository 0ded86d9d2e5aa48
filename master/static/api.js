// The API as the pages see it: the bearer token, requests with it, server-sent events read
// through fetch (an EventSource cannot send an Authorization header), escaping and times.

const KEY = 'tether-token';

// Kept for this tab only (sessionStorage): closing the tab signs out.
export const session = { token: sessionStorage.getItem(KEY), who: null };

export function setToken(token) {
  session.token = token;
  session.who = null;
  if (token) sessionStorage.setItem(KEY, token);
  else sessionStorage.removeItem(KEY);
}

export class Unauthorized extends Error {
  constructor() { super('the token was refused'); this.name = 'Unauthorized'; }
}

const RANKS = { viewer: 0, operator: 1, admin: 2 };
// Whether the signed-in token may do what `role` may (the API checks again).
export const may = role => session.who !== null && RANKS[session.who.role] >= RANKS[role];

export async function api(path, init = {}) {
  const headers = { ...(init.headers || {}), Authorization: 'Bearer ' + session.token };
  const r = await fetch(path, { ...init, headers });
  if (r.status === 401) throw new Unauthorized();
  return r;
}

// The JSON of a GET, or an Error with the API's own message.
export async function json(path, init) {
  const r = await api(path, init);
  const body = await r.json().catch(() => null);
  if (!r.ok) throw new Error((body && body.error) || 'HTTP ' + r.status);
  return body;
}

// A JSON POST: { ok, status, body } whatever the status, so forms can show the refusal.
export async function post(path, value) {
  const r = await api(path, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(value === undefined ? {} : value),
  });
  return { ok: r.ok, status: r.status, body: await r.json().catch(() => null) };
}

const ENTITIES = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
// Everything from the API goes through this before it reaches innerHTML.
export const esc = s => String(s ?? '').replace(/[&<>"']/g, c => ENTITIES[c]);

// Reads one event stream until it ends or `signal` aborts; `on(kind, data, id)` per event.
// Resolves with the last event id seen, for the caller to resume from.
export async function sse(path, { since = null, signal, on }) {
  const headers = since !== null ? { 'Last-Event-ID': String(since) } : {};
  const r = await api(path, { headers, signal });
  if (!r.ok) {
    const body = await r.json().catch(() => null);
    throw new Error((body && body.error) || 'HTTP ' + r.status);
  }
  const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  let ev = { kind: 'message', data: [], id: null };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return since;
    buf += value;
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl).replace(/\r$/, '');
      buf = buf.slice(nl + 1);
      if (line === '') {
        if (ev.id !== null) since = ev.id;
        if (ev.data.length) await on(ev.kind, JSON.parse(ev.data.join('\n')), ev.id);
        ev = { kind: 'message', data: [], id: null };
      } else if (!line.startsWith(':')) {
        const i = line.indexOf(':');
        const field = i < 0 ? line : line.slice(0, i);
        const val = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
        if (field === 'event') ev.kind = val;
        else if (field === 'data') ev.data.push(val);
        else if (field === 'id') ev.id = val;
      }
    }
  }
}

const pad = (n, w = 2) => String(n).padStart(w, '0');

// Unix milliseconds as RFC 3339 in the browser's time zone, to the millisecond, with its
// offset: the form `tetherctl show` prints, so both read the same.
export function rfc3339(ms) {
  if (ms === null || ms === undefined) return '-';
  const d = new Date(ms);
  const off = -d.getTimezoneOffset();
  const sign = off < 0 ? '-' : '+';
  const a = Math.abs(off);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}` +
    `${sign}${pad(Math.floor(a / 60))}:${pad(a % 60)}`;
}

// A length of time as `tetherctl show` writes it: whole hours, minutes or seconds, else ms.
export function duration(ms) {
  if (ms > 0 && ms % 3600000 === 0) return ms / 3600000 + ' h';
  if (ms > 0 && ms % 60000 === 0) return ms / 60000 + ' min';
  if (ms % 1000 === 0) return ms / 1000 + ' s';
  return ms + ' ms';
}

// "12 s ago", rounded down to the second.
export const ago = ms => duration(Math.max(0, Math.floor(ms / 1000)) * 1000) + ' ago';

// A state word with the class that colours it.
export const badge = state => `<span class="state ${esc(state)}">${esc(state)}</span>`;

// How an attempt's exit reads (the API's `Exit` is `{Code}`, `{Signal}` or `{SpawnFailed}`).
export function exitText(exit) {
  if (!exit) return '';
  if ('Code' in exit) return 'exit ' + exit.Code;
  if ('Signal' in exit) return 'killed by signal ' + exit.Signal;
  if ('SpawnFailed' in exit) return 'could not start (errno ' + exit.SpawnFailed + ')';
  return JSON.stringify(exit);
}
