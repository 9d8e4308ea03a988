// The wsgate browser demo, built on the client library (clients/js, served as /wsgate-client.js):
// signs in through the demo server's token endpoint, connects to the cluster (through HAProxy or
// pinned to one gateway) with reconnect and resume, and speaks the chat handler's JSON commands
// (docs/HANDLERS.md). Which gateway each participant is on comes from Redis, through the demo
// server's /api/where (the gateway id is not part of the chat frames).
import { WsgateClient, webStore } from './wsgate-client.js';

const $ = (id) => document.getElementById(id);
const MAX_LOG = 500;        // lines kept in each list
const MAX_LOOKUPS = 50;     // members whose route is looked up per refresh
const ROUTE_REFRESH_MS = 3000;

let cfg = null;
let client = null;
let me = null;
let room = null;
let refreshTimer = null;
const routes = new Map(); // user -> [{name, gateway, slot}]

function append(list, text, cls) {
  const li = document.createElement('li');
  li.textContent = text;
  if (cls) li.className = cls;
  list.appendChild(li);
  while (list.children.length > MAX_LOG) list.removeChild(list.firstChild);
  list.scrollTop = list.scrollHeight;
  return li;
}

function log(text, cls) {
  return append($('log'), `${new Date().toLocaleTimeString()}  ${text}`, cls);
}

function setStatus(text, state) {
  $('status').textContent = text;
  $('status').className = `state-${state}`;
}

function setConnected(on) {
  $('connect').disabled = on;
  $('disconnect').disabled = !on;
  $('join').disabled = !on;
  $('leave').disabled = !on;
  $('say').disabled = !on;
  $('dm').disabled = !on;
  $('user').disabled = on;
  $('via').disabled = on;
}

function routeText(list) {
  if (!list || list.length === 0) return 'not connected';
  return list.map((c) => `${c.name} (${c.gateway}, slot ${c.slot ?? '?'})`).join(', ');
}

async function getJson(url) {
  const r = await fetch(url, { cache: 'no-store' });
  const body = await r.json().catch(() => ({ error: `HTTP ${r.status}` }));
  if (!r.ok) throw new Error(body.error || `HTTP ${r.status}`);
  return body;
}

async function lookup(user) {
  const w = await getJson(`/api/where?user=${encodeURIComponent(user)}`);
  routes.set(user, w.connections);
  return w.connections;
}

// The gateway registers a connection in Redis right after the upgrade; poll briefly until it
// shows up so the page can say where this browser landed.
async function showMyRoute() {
  for (let i = 0; i < 20 && client && client.state === 'connected'; i++) {
    const list = await lookup(me).catch(() => []);
    if (list.length > 0) {
      $('me-route').textContent = routeText(list);
      return;
    }
    await new Promise((r) => setTimeout(r, 150));
  }
}

function send(obj) {
  if (!client) {
    log('not connected', 'error');
    return;
  }
  const text = JSON.stringify(obj);
  try {
    // While reconnecting the library keeps it in its outbox and sends it once connected.
    if (!client.send(obj)) log('queued until the connection is back', 'info');
  } catch (err) {
    log(`not sent: ${err.message}`, 'error');
    return;
  }
  append($('frames'), `→ ${text}`, 'out');
}

// A command whose reply the library matches by id (request/reply with a timeout).
async function request(obj) {
  append($('frames'), `→ ${JSON.stringify(obj)} (request)`, 'out');
  try {
    const reply = await client.request(obj, { timeoutMs: 10000 });
    append($('frames'), `← ${JSON.stringify(reply)} (reply)`, 'in');
    onMessage(reply);
  } catch (err) {
    log(`${obj.op}: ${err.message}`, 'error');
  }
}

async function renderMembers(members) {
  const tbody = $('members').querySelector('tbody');
  const rows = await Promise.all(members.slice(0, MAX_LOOKUPS).map(async (u) => {
    const list = await lookup(u).catch(() => null);
    return { u, list };
  }));
  tbody.textContent = '';
  for (const { u, list } of rows) {
    const tr = document.createElement('tr');
    tr.dataset.user = u;
    const gw = list === null ? 'lookup failed' : (list.length ? list.map((c) => c.name).join(', ') : 'offline');
    const slot = list && list.length ? list.map((c) => c.slot ?? '?').join(', ') : '';
    for (const text of [u, gw, slot]) {
      const td = document.createElement('td');
      td.textContent = text;
      tr.appendChild(td);
    }
    tbody.appendChild(tr);
  }
}

function refreshMembers() {
  if (room) send({ op: 'members', room });
}

function gatewayOf(user) {
  const list = routes.get(user);
  return list && list.length ? list.map((c) => c.name).join('+') : '?';
}

function onFrame({ data, seq }) {
  append($('frames'), `← ${seq === null ? '' : `#${seq} `}${JSON.stringify(data)}`, 'in');
  onMessage(data);
}

// Rooms are channels (docs/HANDLERS.md, "The chat handler"): a room message arrives as a channel
// publication whose data is the message object as JSON text; the gateway tells us when the handler
// subscribes or unsubscribes this connection.
function onChannelFrame(m) {
  if (m.wsgate === 'pub') {
    let inner = null;
    try {
      inner = typeof m.data === 'string' ? JSON.parse(m.data) : null;
    } catch {
      /* reported below */
    }
    if (inner && typeof inner === 'object') onMessage(inner);
    else log(`publication on ${m.channel} that is not a chat message`, 'error');
  } else if (m.wsgate === 'subscribed' || m.wsgate === 'unsubscribed') {
    log(`${m.wsgate} ${m.channel}${m.server ? ' (by the chat handler)' : ''}`, 'info');
  } else if (m.wsgate === 'gap') {
    log(`missed messages ${m.from}..${m.to} on ${m.channel}`, 'error');
  } else {
    log(`frame: ${JSON.stringify(m).slice(0, 200)}`);
  }
}

function onMessage(m) {
  if (!m || typeof m !== 'object') {
    log(`frame: ${JSON.stringify(m).slice(0, 200)}`);
    return;
  }
  if (typeof m.wsgate === 'string') {
    onChannelFrame(m);
    return;
  }
  switch (m.type) {
    case 'joined':
      room = m.room;
      log(`joined ${m.room} (you are in ${m.rooms} room${m.rooms === 1 ? '' : 's'})`, 'info');
      refreshMembers();
      if (!refreshTimer) refreshTimer = setInterval(refreshMembers, ROUTE_REFRESH_MS);
      break;
    case 'left':
      log(`left ${m.room}`, 'info');
      if (m.room === room) {
        room = null;
        clearInterval(refreshTimer);
        refreshTimer = null;
        $('members').querySelector('tbody').textContent = '';
      }
      break;
    case 'members':
      if (m.room === room) renderMembers(m.members || []);
      break;
    case 'message':
      if (!routes.has(m.from)) refreshMembers();
      log(`[${m.room}] ${m.from} (${gatewayOf(m.from)}): ${m.text}`, 'message');
      break;
    case 'dm':
      log(`DM from ${m.from} (${gatewayOf(m.from)}): ${m.text}`, 'dm');
      if (!routes.has(m.from)) lookup(m.from).catch(() => {});
      break;
    case 'error':
      log(`error ${m.code}: ${m.message}`, 'error');
      break;
    default:
      log(`frame: ${JSON.stringify(m).slice(0, 200)}`);
  }
}

async function connect(e) {
  e.preventDefault();
  const user = $('user').value.trim();
  if (!user) return;
  setStatus('getting a token…', 'busy');
  try {
    await getJson(`/api/token?user=${encodeURIComponent(user)}`);
  } catch (err) {
    setStatus(`no token: ${err.message}`, 'error');
    return;
  }
  const via = $('via');
  const base = via.value;
  const label = via.options[via.selectedIndex].text;
  setStatus(`connecting to ${base}…`, 'busy');
  me = user;
  // The token function is called again for every reconnect: a fresh token each time.
  client = new WsgateClient({
    url: base,
    token: async () => (await getJson(`/api/token?user=${encodeURIComponent(user)}`)).token,
    storage: webStore(`wsgate.demo.resume:${user}`),
  });
  client.on('connected', (e) => {
    setStatus(`connected as ${me} via ${label}`, 'ok');
    setConnected(true);
    if (e.resumeFrom !== null) log(`resuming after message #${e.resumeFrom}`, 'info');
    showMyRoute();
  });
  client.on('message', onFrame);
  // A client with the channel API (docs/CLIENTS.md, "Channels") hands a room's publications to the
  // subscription the chat handler made instead of to 'message', and recovers them after a
  // reconnect; an older one passes the raw `pub` frames to 'message' (onChannelFrame).
  client.on('serverSubscribed', ({ channel, subscription }) => {
    log(`subscribed ${channel} (by the chat handler)`, 'info');
    subscription.on('publication', ({ data }) => onChannelFrame({ wsgate: 'pub', channel, data }));
  });
  client.on('sync', (s) => s.replayed && log(`caught up: ${s.replayed} missed message(s) replayed`, 'info'));
  client.on('resync', (r) => log(`some messages could not be replayed (${r.reason}): reload what matters`, 'error'));
  client.on('disconnected', (e) => {
    setStatus(`reconnecting in ${e.retryInMs} ms (${e.cause}, code ${e.code}${e.reason ? `: ${e.reason}` : ''})`, 'busy');
    $('me-route').textContent = '—';
  });
  client.on('closed', (e) => {
    setStatus(`closed: code ${e.code}${e.reason ? ` (${e.reason})` : ''}`, e.code === 1000 ? 'idle' : 'error');
    setConnected(false);
    clearInterval(refreshTimer);
    refreshTimer = null;
    room = null;
    client = null;
    $('me-route').textContent = '—';
  });
  client.on('error', (err) => log(`client: ${err.message}`, 'error'));
}

function init() {
  const params = new URLSearchParams(location.search);
  $('user').value = params.get('user') || `user-${Math.floor(Math.random() * 9000 + 1000)}`;
  $('room').value = params.get('room') || cfg.room || 'lobby';
  const via = $('via');
  const lb = new Option(`HAProxy (${cfg.lb_url})`, cfg.lb_url);
  via.add(lb);
  for (const g of cfg.gateways) via.add(new Option(`${g.name} only (${g.ws_url})`, g.ws_url));
  const want = params.get('via');
  if (want) {
    const g = cfg.gateways.find((x) => x.name === want);
    if (g) via.value = g.ws_url;
  }
  $('connect-form').addEventListener('submit', connect);
  $('disconnect').addEventListener('click', () => client && client.close(1000, 'bye'));
  $('room-form').addEventListener('submit', (e) => {
    e.preventDefault();
    request({ op: 'join', room: $('room').value.trim() });
  });
  $('leave').addEventListener('click', () => request({ op: 'leave', room: $('room').value.trim() }));
  $('say-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const text = $('text').value;
    if (!text) return;
    if (!room) {
      log('join a room first', 'error');
      return;
    }
    send({ op: 'say', room, text });
    $('text').value = '';
  });
  $('dm-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const to = $('dm-to').value.trim();
    const text = $('dm-text').value;
    if (!to || !text) return;
    send({ op: 'dm', to, text });
    log(`DM to ${to}: ${text}`, 'dm-out');
    $('dm-text').value = '';
  });
  document.body.dataset.ready = '1';
}

getJson('/api/config')
  .then((c) => {
    cfg = c;
    init();
  })
  .catch((err) => setStatus(`cannot read the cluster's layout: ${err.message}`, 'error'));
