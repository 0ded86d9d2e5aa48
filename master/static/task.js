// One task: what it is, who did what, its attempts and their timeline, its output as it
// arrives (`GET /api/tasks/{id}/output?follow=1`, one follow per stream), and Kill for
// operators. The task is read again when the event stream says it or its attempts changed.

import { json, post, sse, esc, badge, rfc3339, duration, exitText, may } from './api.js';
import { predict, attemptRows, isOut } from './timeline.js';

// The agent's last contact is not an event: while an attempt is out, read it this often.
const CONTACT_MS = 5000;

function outcomeText(o) {
  if (!o) return '';
  if (o.kind === 'exited') return `attempt ${o.attempt}: ${exitText(o.exit)}${o.cause ? ' (' + o.cause + ')' : ''}`;
  if (o.kind === 'agent_lost') return `attempt ${o.attempt}: its agent was lost`;
  if (o.kind === 'rejected') return `attempt ${o.attempt} refused: ${o.reason}`;
  return String(o.kind).replace(/_/g, ' ');
}

// Appends base64 bytes to one stream's text; a character split across chunks stays whole.
class Output {
  constructor(el) { this.el = el; this.reset(); }
  reset() { this.decoder = new TextDecoder(); this.el.textContent = ''; this.attempt = null; }
  add(b64) {
    const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
    this.el.textContent += this.decoder.decode(bytes, { stream: true });
    this.el.closest('.stream').hidden = false;
  }
}

export function mount(main, params, id) {
  main.innerHTML = `<h2>Task ${esc(id)} <span id="task-state"></span></h2>
<div id="task-error" class="error" hidden></div>
<div id="task-kill-bar" hidden><button id="kill-button" class="danger">Kill</button> <span id="kill-answer"></span></div>
<dl id="task-facts" class="facts"></dl>
<h3>Attempts</h3>
<div class="scroll"><table><thead><tr><th>attempt</th><th>agent</th><th>state</th><th>started</th><th>finished</th><th>exit</th></tr></thead>
<tbody id="attempts"></tbody></table></div>
<h3>Timeline</h3>
<ol id="timeline" class="timeline"></ol>
<h3>Output <span id="output-state" class="muted"></span></h3>
<div class="stream"><pre id="stdout"></pre></div>
<div class="stream" hidden><h4>stderr</h4><pre id="stderr" class="stderr"></pre></div>`;
  const $ = sel => main.querySelector(sel);
  const abort = new AbortController();
  let answer = null;
  let agents = [];
  let agentsAt = Date.now();
  let stopped = false;

  function draw() {
    const t = answer.task;
    $('#task-state').innerHTML = badge(t.state);
    const p = t.policy;
    const facts = [
      ['target', `${t.target.kind} ${t.target.name}`],
      ['argv', t.argv.join(' ')],
      ['cwd', t.cwd || "the agent's work directory"],
      ['profile', t.profile || '-'],
      ['policy', `${p.on_disconnect} on disconnect, heartbeat ${duration(p.heartbeat_period_ms)} (timeout ${duration(p.heartbeat_timeout_ms)}), ` +
        `grace ${duration(p.grace_ms)}, retries ${p.retries}` + (p.lost_after_ms !== null ? `, started elsewhere after ${duration(p.lost_after_ms)}` : '')],
      ['created', rfc3339(t.created_ms)],
    ];
    if (t.start_at_ms !== null) facts.push(['starts', rfc3339(t.start_at_ms)]);
    if (t.outcome) facts.push(['outcome', outcomeText(t.outcome)]);
    for (const h of answer.history) facts.push([h.action, `${rfc3339(h.at_ms)} by ${h.who}`]);
    $('#task-facts').innerHTML = facts.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${k === 'argv' ? '<code id="task-argv">' + esc(v) + '</code>' : esc(v)}</dd>`).join('');
    $('#task-kill-bar').hidden = !may('operator') || ['succeeded', 'failed', 'cancelled', 'killed', 'lost'].includes(t.state);

    $('#attempts').innerHTML = answer.attempts.map(a => `<tr id="attempt-${a.id}">
<td data-label="attempt">${a.id}</td><td data-label="agent"><a href="#/fleet">${esc(a.agent_id)}</a></td>
<td data-label="state">${badge(a.state)}</td><td data-label="started">${esc(rfc3339(a.started_ms))}</td>
<td data-label="finished">${esc(rfc3339(a.finished_ms))}</td><td data-label="exit">${esc(exitText(a.exit))}</td></tr>`).join('') ||
      '<tr><td colspan="6" class="muted">no attempt yet</td></tr>';

    const items = [];
    for (const a of answer.attempts) {
      const rows = attemptRows(a, answer.events);
      items.push(`<li class="attempt-head">attempt ${a.id} on ${esc(a.agent_id)}: ${badge(a.state)}</li>`);
      for (const [at, what] of rows) items.push(`<li><time>${esc(rfc3339(at))}</time> ${esc(what)}</li>`);
      if (isOut(a)) {
        const agent = agents.find(x => x.id === a.agent_id);
        const guess = predict(p, agent, agentsAt);
        if (guess) {
          items.push(`<li class="predict"><time>${esc(rfc3339(guess.heard))}</time> last contact with ${esc(a.agent_id)} (silent ${esc(duration(Math.floor(guess.silent / 1000) * 1000))} when read)</li>`);
          items.push(`<li class="predict" id="predict-${a.id}">${esc(guess.text)}</li>`);
        }
      }
    }
    $('#timeline').innerHTML = items.join('') || '<li class="muted">nothing has happened yet</li>';
  }

  async function reload() {
    [answer, agents] = await Promise.all([json('/api/tasks/' + id), json('/api/agents')]);
    agentsAt = Date.now();
    $('#task-error').hidden = true;
    draw();
  }

  // Follows one stream until `end`; after a break, goes on from the last offset.
  async function follow(stream) {
    const out = new Output($('#' + stream));
    let since = null;
    while (!stopped) {
      try {
        const q = `stream=${stream}&follow=1` + (since !== null ? `&since=${since}` : '');
        let ended = false;
        since = await sse(`/api/tasks/${id}/output?${q}`, {
          signal: abort.signal,
          on: (kind, data) => {
            if (kind === 'attempt') out.reset();
            else if (kind === 'output') out.add(data.data);
            else if (kind === 'end') { ended = true; if (stream === 'stdout') $('#output-state').textContent = '(complete)'; }
          },
        });
        if (ended) return;
      } catch (e) {
        if (stopped) return;
        $('#output-state').textContent = '(' + e.message + '; retrying)';
      }
      await new Promise(r => setTimeout(r, 2000));
    }
  }

  $('#kill-button').onclick = async () => {
    if (!confirm(`Kill task ${id}?`)) return;
    const r = await post(`/api/tasks/${id}/kill`);
    $('#kill-answer').textContent = r.ok ? 'kill sent' : (r.body && r.body.error) || 'HTTP ' + r.status;
  };

  follow('stdout');
  follow('stderr');
  (async () => {
    while (!stopped) {
      await new Promise(r => setTimeout(r, CONTACT_MS));
      if (stopped || !answer || !answer.attempts.some(isOut)) continue;
      agents = await json('/api/agents').catch(() => agents);
      agentsAt = Date.now();
      draw();
    }
  })();

  return {
    async reload() {
      try { await reload(); } catch (e) {
        if (e.name === 'Unauthorized') throw e;
        $('#task-error').hidden = false;
        $('#task-error').textContent = e.message;
      }
    },
    async changed(kind, data) {
      const mine = data.task === Number(id);
      if ((kind === 'task' || kind === 'attempt_started' || kind === 'attempt') && mine) await reload();
      else if (kind === 'agent' && answer && answer.attempts.some(a => isOut(a) && a.agent_id === data.agent)) await reload();
    },
    unmount() { stopped = true; abort.abort(); },
  };
}
