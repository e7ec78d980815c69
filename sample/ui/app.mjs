// The sample's upload page: Uppy's Dashboard with @uppy/tus, and what the server does, live,
// from its lifecycle events (Server-Sent Events). Bundled with its CSS by build.mjs; served by
// the sample from its own origin (no CDN, no other origin).
import Uppy from '@uppy/core';
import Dashboard from '@uppy/dashboard';
import Tus from '@uppy/tus';
import '@uppy/core/css/style.min.css';
import '@uppy/dashboard/css/style.min.css';
import './app.css';

const TOKEN_KEY = 'tussi-token';
const $ = (id) => document.getElementById(id);

/** Bytes for people: 1.5 MiB. */
function formatBytes(n) {
  if (n === null || n === undefined) return '?';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let value = n;
  while (value >= 1024 && i < units.length - 1) {
    value /= 1024;
    i++;
  }
  return `${i === 0 ? value : value.toFixed(1)} ${units[i]}`;
}

const state = {
  config: null,
  token: localStorage.getItem(TOKEN_KEY) ?? '',
  receiving: new Map(),
  delivered: [],
  stream: null,
};

/** What the page shows for tests and people alike. */
window.tussiPage = { state, events: [] };

function authHeaders() {
  return state.token ? { Authorization: `Bearer ${state.token}` } : {};
}

/** The server refused the token (401): ask for one, once, with a clear message. */
function askForToken(message) {
  $('auth').hidden = false;
  $('auth-message').textContent = message;
  $('token').focus();
}

$('auth-form').addEventListener('submit', (event) => {
  event.preventDefault();
  state.token = $('token').value.trim();
  localStorage.setItem(TOKEN_KEY, state.token);
  $('auth').hidden = true;
  $('auth-message').textContent = '';
  uppy.getPlugin('Tus').setOptions({ headers: authHeaders() });
  connect();
  // Files refused for the token go again with the new one.
  if (uppy.getFiles().some((f) => f.error)) uppy.retryAll();
});

function renderReceiving() {
  const list = $('receiving');
  if (state.receiving.size === 0) {
    const idle = document.createElement('li');
    idle.className = 'idle';
    idle.textContent = 'Nothing in progress.';
    list.replaceChildren(idle);
    return;
  }
  list.replaceChildren(
    ...[...state.receiving.values()].map((u) => {
      const item = document.createElement('li');
      const label = document.createElement('span');
      label.textContent = `${u.name} — ${
        u.done ? 'complete, delivering…' : `${formatBytes(u.offset)} of ${formatBytes(u.size)}`
      }`;
      const bar = document.createElement('progress');
      bar.max = u.size ?? 1;
      bar.value = u.done ? bar.max : u.offset;
      bar.setAttribute('aria-label', `${u.name} received by the server`);
      item.append(label, bar);
      return item;
    }),
  );
}

function renderDelivered() {
  const body = $('delivered').querySelector('tbody');
  body.replaceChildren(
    ...state.delivered.map((d) => {
      const row = document.createElement('tr');
      // Stored as {uuid}-{name}: the name is shown, the stored name is its tooltip.
      const shown = /^[0-9a-f-]{36}-./.test(d.name) ? d.name.slice(37) : d.name;
      const cells = [shown, formatBytes(d.size), new Date(d.at).toLocaleString(), d.sha256 ?? '—'];
      for (const [i, text] of cells.entries()) {
        const cell = document.createElement('td');
        cell.textContent = text;
        if (i === 0) cell.title = d.name;
        if (i === 3) cell.className = 'hash';
        row.append(cell);
      }
      return row;
    }),
  );
}

/** One server event (also kept in `window.tussiPage.events`). */
function onEvent(type, data) {
  window.tussiPage.events.push({ type, data });
  if (type === 'snapshot') {
    state.delivered = data.delivered;
    renderDelivered();
  } else if (type === 'created') {
    state.receiving.set(data.id, { name: data.name, size: data.size, offset: 0 });
  } else if (type === 'progress') {
    const u = state.receiving.get(data.id);
    if (u) u.offset = data.offset;
  } else if (type === 'completed') {
    const u = state.receiving.get(data.id);
    if (u) u.done = true;
  } else if (type === 'terminated') {
    state.receiving.delete(data.id);
  } else if (type === 'delivered') {
    state.receiving.delete(data.id);
    state.delivered = [data, ...state.delivered.filter((d) => d.id !== data.id)];
    renderDelivered();
  }
  renderReceiving();
}

/**
 * The server's events: Server-Sent Events read with fetch, so the token goes in a header
 * (EventSource sends none). Reconnects after a drop; each connection starts with the list.
 */
async function connect() {
  state.stream?.abort();
  const controller = new AbortController();
  state.stream = controller;
  let retryMs = 1000;
  while (!controller.signal.aborted) {
    try {
      const res = await fetch(state.config.events, {
        headers: { Accept: 'text/event-stream', ...authHeaders() },
        signal: controller.signal,
      });
      if (res.status === 401) {
        $('status').textContent = 'The server wants a valid token (401).';
        askForToken('The server refused the token (401 Unauthorized). Enter a valid one.');
        return;
      }
      if (!res.ok) throw new Error(`events: ${res.status}`);
      $('status').textContent = 'Connected: the server reports what it receives.';
      retryMs = 1000;
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let type = 'message';
          let data = '';
          for (const line of block.split('\n')) {
            if (line.startsWith('event:')) type = line.slice(6).trim();
            else if (line.startsWith('data:')) data += line.slice(5).trim();
          }
          if (data) onEvent(type, JSON.parse(data));
        }
      }
    } catch (e) {
      if (controller.signal.aborted) return;
    }
    $('status').textContent = 'Reconnecting…';
    await new Promise((r) => setTimeout(r, retryMs));
    retryMs = Math.min(retryMs * 2, 10_000);
  }
}

state.config = await fetch('/ui/config.json').then((r) => r.json());
renderReceiving();

const uppy = new Uppy({ id: 'tussi', autoProceed: true })
  .use(Dashboard, {
    inline: true,
    target: '#uppy',
    width: '100%',
    height: 380,
    theme: 'auto',
    showProgressDetails: true,
    proudlyDisplayPoweredByUppy: false,
  })
  .use(Tus, {
    endpoint: state.config.endpoint,
    chunkSize: state.config.chunkSize,
    limit: state.config.parallel,
    retryDelays: [0, 1000, 3000, 5000, 10_000],
    headers: authHeaders(),
    // A refused token is not retried: the page asks for another.
    onShouldRetry: (error, _attempt, _options, next) =>
      error?.originalResponse?.getStatus() === 401 ? false : next(error),
  });
uppy.on('upload-error', (_file, error) => {
  if (error?.originalResponse?.getStatus?.() === 401) {
    askForToken('The server refused the upload: it needs a valid token (401 Unauthorized).');
  }
});
window.uppy = uppy;

if (state.config.auth && !state.token) {
  askForToken('Uploads on this server need a token.');
} else {
  connect();
}
