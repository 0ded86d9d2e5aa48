// Tasks: one page of `GET /api/tasks` (`limit`, `after`, `state`: ids ascending, the next page
// starts after the last id), kept live from the event stream. The API has no target filter,
// so the agent box filters the page shown. The filters live in the URL, so a view can be shared.

import { json, esc, badge, rfc3339 } from './api.js';

const STATES = ['pending', 'dispatched', 'accepted', 'running', 'unreachable', 'succeeded',
  'failed', 'cancelled', 'killed', 'lost'];
const LIMITS = [25, 50, 100, 200];

export function mount(main, params) {
  const state = params.get('state') || '';
  const agent = params.get('agent') || '';
  const limit = LIMITS.includes(Number(params.get('limit'))) ? Number(params.get('limit')) : 50;
  const after = params.get('after') || '';
  // The pages before this one, so "previous" can go back (the API only pages forward).
  const back = (params.get('back') || '').split(',').filter(Boolean);

  main.innerHTML = `<h2>Tasks</h2>
<form id="task-filters" class="filters">
 <label>state <select name="state"><option value="">any</option>${STATES.map(s =>
    `<option${s === state ? ' selected' : ''}>${s}</option>`).join('')}</select></label>
 <label>agent or cluster <input name="agent" value="${esc(agent)}" size="12" placeholder="any"></label>
 <label>per page <select name="limit">${LIMITS.map(l =>
    `<option${l === limit ? ' selected' : ''}>${l}</option>`).join('')}</select></label>
 <button>Show</button>
</form>
<div class="scroll"><table id="tasks-table"><thead><tr><th>id</th><th>target</th><th>argv</th><th>on disconnect</th><th>state</th><th>created</th></tr></thead>
<tbody id="tasks"></tbody></table></div>
<p class="pager"><a id="prev-page" hidden>← previous</a> <span id="page-info" class="muted"></span> <a id="next-page" hidden>next →</a></p>`;

  const link = over => {
    const q = new URLSearchParams({ state, agent, limit: String(limit), after, back: back.join(',') });
    for (const [k, v] of Object.entries(over)) q.set(k, v);
    for (const [k, v] of [...q]) if (!v) q.delete(k);
    return '#/tasks?' + q;
  };
  main.querySelector('#task-filters').onsubmit = e => {
    e.preventDefault();
    const f = new FormData(e.target);
    location.hash = link({ state: f.get('state'), agent: f.get('agent').trim(), limit: f.get('limit'), after: '', back: '' });
  };

  let tasks = [];
  // Tasks sent to that agent, or to that cluster.
  const shown = t => !agent || t.target.name === agent;

  function row(t) {
    return `<tr id="task-${t.id}"><td data-label="id"><a href="#/task/${t.id}">${t.id}</a></td>
<td data-label="target">${esc(t.target.kind)} ${esc(t.target.name)}</td>
<td data-label="argv"><code>${esc(t.argv.join(' '))}</code></td>
<td data-label="on disconnect">${esc(t.policy.on_disconnect)}</td>
<td data-label="state">${badge(t.state)}</td>
<td data-label="created">${esc(rfc3339(t.created_ms))}</td></tr>`;
  }

  function draw() {
    const list = tasks.filter(shown);
    main.querySelector('#tasks').innerHTML = list.map(row).join('') ||
      '<tr><td colspan="6" class="muted">no tasks on this page</td></tr>';
    const prev = main.querySelector('#prev-page');
    prev.hidden = !after;
    // '0' in `back` stands for the first page.
    prev.href = link({ after: back.at(-1) === '0' ? '' : back.at(-1) || '', back: back.slice(0, -1).join(',') });
    const next = main.querySelector('#next-page');
    next.hidden = tasks.length < limit;
    if (tasks.length) next.href = link({ after: String(tasks.at(-1).id), back: [...back, after || '0'].join(',') });
    main.querySelector('#page-info').textContent = tasks.length
      ? `ids ${tasks[0].id}–${tasks.at(-1).id}${agent ? `, ${list.length} for ${agent}` : ''}` : '';
  }

  async function reload() {
    const q = new URLSearchParams({ limit: String(limit) });
    if (after && after !== '0') q.set('after', after);
    if (state) q.set('state', state);
    tasks = await json('/api/tasks?' + q);
    draw();
  }

  return {
    reload,
    async changed(kind, data) {
      if (kind !== 'task') return;
      const t = tasks.find(x => x.id === data.task);
      if (t) {
        t.state = data.state;
        // A task that left the filtered state stays until the next read, marked by its state.
        draw();
      } else if (tasks.length < limit && data.task > (tasks.length ? tasks.at(-1).id : Number(after || 0)) &&
        (!state || state === data.state)) {
        // A new task on the last page: read that one task, not the page.
        const v = await json('/api/tasks/' + data.task).catch(() => null);
        if (v && !tasks.some(x => x.id === v.task.id)) { tasks.push(v.task); draw(); }
      }
    },
    unmount() {},
  };
}
