// Submit: a task to one agent or a cluster (`POST /api/tasks`), one argument per line so
// spaces and quotes need no shell rules, and what happens if its agent drops off the
// network. Operators only: a viewer sees why instead of a form (and the API would refuse).

import { json, post, esc, may } from './api.js';

export function mount(main) {
  if (!may('operator')) {
    main.innerHTML = `<h2>Submit</h2><p class="muted" id="submit-refused">Submitting a task needs an operator token; this one is a viewer's.</p>`;
    return { async reload() {}, async changed() {}, unmount() {} };
  }
  main.innerHTML = `<h2>Submit a task</h2>
<form id="submit-form" class="stacked">
 <label>argv, one argument per line
  <textarea id="submit-argv" name="argv" rows="4" required spellcheck="false" placeholder="/usr/bin/uptime"></textarea></label>
 <fieldset><legend>run on</legend>
  <label><input type="radio" name="kind" value="agent" checked> agent</label>
  <label><input type="radio" name="kind" value="cluster"> cluster</label>
  <input id="submit-target" name="target" list="submit-targets" required placeholder="name" autocomplete="off">
  <datalist id="submit-targets"></datalist>
 </fieldset>
 <label>profile <select id="submit-profile" name="profile"><option value="">none (the defaults)</option></select></label>
 <label>if the agent loses the master
  <select id="submit-disconnect" name="on_disconnect">
   <option value="">as the profile says</option>
   <option value="kill">kill: the agent stops it</option>
   <option value="continue">continue: it runs on</option>
  </select></label>
 <label id="lost-after-row" hidden>start it elsewhere after (seconds unreachable; empty: never)
  <input id="submit-lost-after" name="lost_after" type="number" min="1" step="1"></label>
 <button id="submit-button">Submit</button>
 <p id="submit-answer" role="status"></p>
</form>`;
  const $ = sel => main.querySelector(sel);
  let agents = [];
  let clusters = [];

  function targets() {
    const kind = $('#submit-form').elements.kind.value;
    const names = kind === 'agent' ? agents.map(a => a.id) : clusters.map(c => c.name);
    $('#submit-targets').innerHTML = names.map(n => `<option value="${esc(n)}">`).join('');
  }
  for (const r of main.querySelectorAll('input[name=kind]')) r.onchange = targets;
  $('#submit-disconnect').onchange = e => { $('#lost-after-row').hidden = e.target.value !== 'continue'; };

  $('#submit-form').onsubmit = async e => {
    e.preventDefault();
    const f = e.target.elements;
    const argv = f.argv.value.split('\n').map(l => l.replace(/\r$/, '')).filter(l => l !== '');
    const body = { argv, [f.kind.value]: f.target.value.trim(), policy: {} };
    if (f.profile.value) body.profile = f.profile.value;
    if (f.on_disconnect.value) body.policy.on_disconnect = f.on_disconnect.value;
    if (f.on_disconnect.value === 'continue' && f.lost_after.value) body.policy.lost_after_ms = Number(f.lost_after.value) * 1000;
    $('#submit-button').disabled = true;
    try {
      const r = await post('/api/tasks', body);
      if (r.ok) {
        location.hash = '#/task/' + r.body.id;
        return;
      }
      $('#submit-answer').className = 'error';
      $('#submit-answer').textContent = (r.body && r.body.error) || 'HTTP ' + r.status;
    } finally {
      $('#submit-button').disabled = false;
    }
  };

  return {
    async reload() {
      let profiles;
      [agents, clusters, profiles] = await Promise.all([json('/api/agents'), json('/api/clusters'), json('/api/profiles')]);
      $('#submit-profile').innerHTML = '<option value="">none (the defaults)</option>' +
        profiles.map(p => `<option>${esc(p.name)}</option>`).join('');
      targets();
    },
    async changed() {},
    unmount() {},
  };
}
