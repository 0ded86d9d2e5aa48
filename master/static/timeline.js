// A task's timeline: what happened to each attempt, when each report reached the master, and
// for an attempt still out, what happens when if contact does not return. The prediction is
// the one `tetherctl show` prints, from the same inputs: the task's policy and the agent's
// `silent_ms` as `GET /api/agents` gave it at `nowMs`.

import { rfc3339, duration, exitText } from './api.js';

// The master's allowance on top of a task's heartbeat timeout before it declares an attempt
// lost (the master's default, as in `tetherctl show`).
export const DELAY_ALLOWANCE_MS = 2000;

const OUT = ['sent', 'accepted', 'running'];
export const isOut = attempt => OUT.includes(attempt.state);

// { heard, text } for an attempt still out on `agent`, or null without the agent.
export function predict(policy, agent, nowMs) {
  if (!agent) return null;
  const silent = agent.silent_ms || 0;
  const heard = nowMs - silent;
  const timeout = policy.heartbeat_timeout_ms || 0;
  let text;
  if (policy.on_disconnect === 'kill') {
    text = `if contact does not return: its agent kills it at ${rfc3339(heard + timeout)}, ` +
      `the master declares it lost at ${rfc3339(heard + timeout + DELAY_ALLOWANCE_MS)}`;
  } else if (policy.lost_after_ms !== null && policy.lost_after_ms !== undefined) {
    text = `if contact does not return: it runs on; started elsewhere at ${rfc3339(heard + policy.lost_after_ms)}`;
  } else {
    text = "if contact does not return: it runs on, its result waits in the agent's journal";
  }
  return { heard, silent, text };
}

// The rows of one attempt: [at_ms, what], in time order. `events` are the task's events from
// `GET /api/tasks/{id}`; an event the agent kept through an outage shows both when it
// happened on the agent and when it reached the master.
export function attemptRows(attempt, events) {
  const rows = [[attempt.created_ms, 'created (sent to ' + attempt.agent_id + ')']];
  if (attempt.started_ms !== null) rows.push([attempt.started_ms, 'started' + (attempt.pid !== null ? ' (pid ' + attempt.pid + ')' : '')]);
  if (attempt.finished_ms !== null) rows.push([attempt.finished_ms, 'finished ' + exitText(attempt.exit)]);
  for (const e of events) {
    if (e.attempt !== attempt.id) continue;
    const on = e.event && e.event.at_unix_ms;
    // Late by more than a few heartbeats: it waited in the agent's journal.
    const late = on && e.received_ms - on > 5000;
    // Without the agent's own times (an agent without a clock), the report's arrival stands in.
    const exit = e.kind === 'finished' && attempt.exit ? ': ' + exitText(attempt.exit) : '';
    rows.push([e.received_ms, 'heard ' + e.kind + exit + (late
      ? ` (happened on the agent at ${rfc3339(on)}, came back ${duration(Math.floor((e.received_ms - on) / 1000) * 1000)} later)`
      : '')]);
  }
  return rows.sort((a, b) => a[0] - b[0]);
}
