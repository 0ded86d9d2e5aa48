// Fleet: every agent (presence, availability, last contact, open attempts, refused messages)
// and every cluster with its members and mode. Presence changes arrive on the event stream;
// heartbeats are not events, so the list is read again every few seconds for "last heard".

import { json, esc, badge, ago, rfc3339 } from './api.js';

const REREAD_MS = 5000;

export function mount(main) {
  main.innerHTML = `<h2>Fleet</h2>
<p id="fleet-summary" class="muted">loading…</p>
<div class="scroll"><table id="agents-table">
<thead><tr><th>agent</th><th>presence</th><th>available</th><th>last heard</th><th>open attempts</th><th>incarnation</th><th>key</th><th>refused messages</th></tr></thead>
<tbody id="agents"></tbody></table></div>
<h2>Clusters</h2>
<div class="scroll"><table id="clusters-table">
<thead><tr><th>cluster</th><th>mode</th><th>members, in order</th></tr></thead>
<tbody id="clusters"></tbody></table></div>`;
  let agents = [];
  let clusters = [];
  let readAt = Date.now();
  let stopped = false;

  const byId = id => agents.find(a => a.id === id);

  function drawAgents() {
    const now = Date.now();
    main.querySelector('#agents').innerHTML = agents.map(a => {
      const heard = a.presence === 'unknown' ? 'never' : ago(a.silent_ms + (now - readAt));
      const sec = a.security;
      const refused = sec && (sec.unauthenticated || sec.bad_signature)
        ? `<span class="bad" title="${esc(sec.last_error)}">${sec.unauthenticated} unauthenticated, ${sec.bad_signature} bad signature</span>`
        : '0';
      return `<tr id="agent-${esc(a.id)}"><td data-label="agent"><b>${esc(a.id)}</b></td>
<td data-label="presence">${badge(a.presence)}</td>
<td data-label="available">${a.available ? 'yes' : (a.disabled ? 'no (disabled)' : 'no')}</td>
<td data-label="last heard" title="${esc(rfc3339(readAt - a.silent_ms))}">${esc(heard)}</td>
<td data-label="open attempts">${a.attempts.length ? esc(a.attempts.join(', ')) : '-'}</td>
<td data-label="incarnation"><code>${esc(a.incarnation || '-')}</code></td>
<td data-label="key">${a.keyed ? 'yes' : 'none'}</td>
<td data-label="refused messages">${refused}</td></tr>`;
    }).join('') || '<tr><td colspan="8" class="muted">no agent has been seen</td></tr>';
    const online = agents.filter(a => a.presence === 'online').length;
    main.querySelector('#fleet-summary').textContent =
      `${agents.length} agents, ${online} online, ${agents.filter(a => a.available).length} available`;
  }

  function drawClusters() {
    main.querySelector('#clusters').innerHTML = clusters.map(c => {
      const members = c.members.map(m => {
        const a = byId(m);
        return `<span class="member">${esc(m)} ${badge(a ? a.presence : 'unknown')}</span>`;
      }).join(' ');
      return `<tr id="cluster-${esc(c.name)}"><td data-label="cluster"><b>${esc(c.name)}</b></td>
<td data-label="mode">${esc(c.mode)}</td><td data-label="members">${members}</td></tr>`;
    }).join('') || '<tr><td colspan="3" class="muted">no clusters</td></tr>';
  }

  async function readAgents() {
    agents = await json('/api/agents');
    readAt = Date.now();
    drawAgents();
    drawClusters();
  }

  async function reload() {
    [agents, clusters] = await Promise.all([json('/api/agents'), json('/api/clusters')]);
    readAt = Date.now();
    drawAgents();
    drawClusters();
  }

  // The "ago" column moves every second from what was read; the list itself every REREAD_MS.
  const tick = setInterval(drawAgents, 1000);
  (async () => {
    while (!stopped) {
      await new Promise(r => setTimeout(r, REREAD_MS));
      if (!stopped) await readAgents().catch(() => {});
    }
  })();

  return {
    reload,
    async changed(kind) {
      if (kind === 'agent' || kind === 'attempt_started' || kind === 'attempt') await readAgents();
    },
    unmount() { stopped = true; clearInterval(tick); },
  };
}
