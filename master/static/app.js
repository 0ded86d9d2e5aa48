// The dashboard's frame: sign-in, who the token is (`GET /api/whoami`), the hash routes
// (#/fleet, #/tasks, #/task/ID, #/submit) and the one event stream (`GET /api/events`) that
// keeps the shown page live. A broken stream resumes with Last-Event-ID; `lagged` (notices
// were missed) reads the page again.

import { session, setToken, json, sse, esc, may } from './api.js';
import * as fleet from './fleet.js';
import * as tasks from './tasks.js';
import * as task from './task.js';
import * as submit from './submit.js';

const $ = id => document.getElementById(id);
let page = null;
// Ends the event stream of a token that signed out.
let stream = null;

// A `#token=` fragment (it never reaches a server) signs in, then leaves the address bar.
const fragment = new URLSearchParams(location.hash.slice(1)).get('token');
if (fragment) {
  setToken(fragment);
  history.replaceState(null, '', location.pathname + '#/fleet');
}

function status(text, bad) {
  $('status').textContent = text;
  $('status').className = bad ? 'error' : 'muted';
}

function signIn(why) {
  if (page) { page.unmount(); page = null; }
  if (stream) { stream.abort(); stream = null; }
  setToken(null);
  document.body.dataset.role = '';
  $('signed-in').hidden = true;
  $('main').innerHTML = '';
  $('signin').hidden = false;
  $('token').value = '';
  status(why, why !== 'sign in with an API token (viewer or above)');
}

$('signin').onsubmit = e => {
  e.preventDefault();
  setToken($('token').value.trim());
  start();
};
$('signout').onclick = () => signIn('sign in with an API token (viewer or above)');

function route() {
  const hash = location.hash.replace(/^#\/?/, '') || 'fleet';
  const [path, query] = hash.split('?');
  const params = new URLSearchParams(query || '');
  const parts = path.split('/');
  if (parts[0] === 'task' && /^\d+$/.test(parts[1] || '')) return ['task', task, params, parts[1]];
  if (parts[0] === 'tasks') return ['tasks', tasks, params];
  if (parts[0] === 'submit') return ['submit', submit, params];
  return ['fleet', fleet, params];
}

async function show() {
  if (!session.who) return;
  if (page) page.unmount();
  const [name, module, params, id] = route();
  for (const a of document.querySelectorAll('nav a[data-page]')) {
    a.classList.toggle('here', a.dataset.page === name || (name === 'task' && a.dataset.page === 'tasks'));
  }
  const main = $('main');
  page = module.mount(main, params, id);
  const mine = page;
  try {
    await page.reload();
  } catch (e) {
    if (e.name === 'Unauthorized') { signIn(e.message); return; }
    if (mine === page) main.insertAdjacentHTML('afterbegin', `<p class="error">${esc(e.message)}</p>`);
  }
}
window.addEventListener('hashchange', show);

// The event stream, for as long as the tab is signed in with this token.
async function live(token) {
  let since = null;
  stream = new AbortController();
  const signal = stream.signal;
  while (session.token === token && session.who && !signal.aborted) {
    try {
      status('live', false);
      since = await sse('/api/events', {
        since,
        signal,
        on: async (kind, data) => {
          if (!page) return;
          if (kind === 'lagged') await page.reload();
          else await page.changed(kind, data);
        },
      });
      // The stream ended (lagged, or the master stopping): resume after what was seen.
    } catch (e) {
      if (signal.aborted) return;
      if (e.name === 'Unauthorized') { signIn(e.message); return; }
      status('master unreachable: ' + e.message + '; retrying', true);
      await new Promise(r => setTimeout(r, 2000));
      // What the page shows may be behind: read it again once the master answers.
      if (page) await page.reload().catch(() => {});
    }
  }
}

async function start() {
  if (!session.token) { signIn('sign in with an API token (viewer or above)'); return; }
  try {
    session.who = await json('/api/whoami');
  } catch (e) {
    signIn(e.name === 'Unauthorized' ? 'the token was refused' : 'master unreachable: ' + e.message);
    return;
  }
  $('signin').hidden = true;
  $('signed-in').hidden = false;
  $('who').textContent = `${session.who.name} (${session.who.role})`;
  // Operators' controls are shown to operators only; the API refuses them to viewers anyway.
  document.body.dataset.role = session.who.role;
  $('nav-submit').hidden = !may('operator');
  if (!location.hash.startsWith('#/')) history.replaceState(null, '', '#/fleet');
  await show();
  live(session.token);
}

start();
