// The operator's page: draws the state that /api/events streams. Plain JS, no build
// step, nothing loaded from elsewhere.
'use strict';

const SVG = 'http://www.w3.org/2000/svg';
const W = 800, H = 600, CX = W / 2, CY = H / 2 - 10;
const $ = (id) => document.getElementById(id);
const short = (id) => (id || '').slice(0, 8);
let lastState = null;
let lastSeen = 0;

function el(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function td(text, cls) {
  const c = document.createElement('td');
  c.textContent = text === undefined || text === null ? '' : String(text);
  if (cls) c.className = cls;
  return c;
}

function rate(bps) {
  if (!bps) return '0';
  if (bps >= 1e6) return (bps / 1e6).toFixed(1) + 'M';
  if (bps >= 1e3) return (bps / 1e3).toFixed(1) + 'k';
  return bps.toFixed(0);
}

// Loss in percent: whole numbers from 10 %, one decimal below.
function pct(x) {
  if (x === null || x === undefined) return null;
  return x === 0 ? '0%' : x < 10 ? x.toFixed(1) + '%' : x.toFixed(0) + '%';
}

function ago(ms) {
  if (!ms) return '-';
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  return s < 60 ? s + ' s ago' : s < 3600 ? Math.round(s / 60) + ' min ago' : new Date(ms).toLocaleString();
}

function uptime(s) {
  const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
  return d ? `${d}d ${h}h` : h ? `${h}h ${m}m` : `${m}m ${s % 60}s`;
}

// Positions: this node in the middle, its peers on a ring, nodes beyond a bridge on an
// outer ring next to the peer that announced them.
function layout(st) {
  const pos = new Map();
  pos.set(st.me.id, [CX, CY]);
  const peers = st.peers.slice().sort((a, b) => a.id.localeCompare(b.id));
  // Ellipses: the view is wider than high.
  const [rx, ry] = st.remote.length ? [190, 140] : [280, 205];
  const angle = new Map();
  peers.forEach((p, i) => {
    const a = -Math.PI / 2 + (2 * Math.PI * i) / Math.max(1, peers.length);
    angle.set(p.id, a);
    pos.set(p.id, [CX + rx * Math.cos(a), CY + ry * Math.sin(a)]);
  });
  const used = new Map();
  st.remote.forEach((r) => {
    const as = r.via.map((v) => angle.get(v)).filter((a) => a !== undefined);
    let a = as.length ? Math.atan2(as.reduce((s, x) => s + Math.sin(x), 0), as.reduce((s, x) => s + Math.cos(x), 0)) : 0;
    const key = a.toFixed(2), n = used.get(key) || 0;
    used.set(key, n + 1);
    a += (n % 2 ? 1 : -1) * Math.ceil(n / 2) * 0.3;
    pos.set(r.id, [CX + 335 * Math.cos(a), CY + 245 * Math.sin(a)]);
  });
  return pos;
}

function drawGraph(st) {
  const svg = $('graph');
  const pos = layout(st);
  const links = el('g', { class: 'links' }), labels = el('g'), nodes = el('g', { class: 'nodes' });
  const line = (a, b, cls, attrs) => {
    const [x1, y1] = pos.get(a), [x2, y2] = pos.get(b);
    links.appendChild(el('line', Object.assign({ x1, y1, x2, y2, class: 'link ' + cls }, attrs)));
    return [x1 + 0.6 * (x2 - x1), y1 + 0.6 * (y2 - y1)];
  };
  for (const [a, b] of st.edges) {
    if (pos.has(a) && pos.has(b)) line(a, b, 'announced', { 'data-a': a, 'data-b': b, 'data-state': 'announced' });
  }
  for (const p of st.peers) {
    const [mx, my] = line(st.me.id, p.id, p.state, { 'data-a': st.me.id, 'data-b': p.id, 'data-state': p.state });
    // Two lines: quality (RTT, loss), then traffic (bytes per second both ways).
    const quality = [];
    if (p.rtt_ms !== null && p.rtt_ms !== undefined) quality.push(p.rtt_ms.toFixed(1) + ' ms');
    if (p.state === 'connected' && pct(p.loss_pct)) quality.push(pct(p.loss_pct) + ' loss');
    const traffic = p.state === 'connected' ? rate(p.tx_bps + p.rx_bps) + 'B/s' : p.state;
    const label = el('text', { x: mx, y: my - 14, class: 'linklabel', 'data-peer': p.id });
    label.appendChild(el('tspan', { x: mx, class: 'quality' }, quality.join(' · ')));
    label.appendChild(el('tspan', { x: mx, dy: '1.15em', class: 'traffic' }, traffic));
    labels.appendChild(label);
  }
  const node = (id, kind, bridge, sub, down) => {
    const [x, y] = pos.get(id);
    const g = el('g', { class: `node ${kind}${down ? ' down' : ''}`, 'data-id': id, 'data-kind': kind,
      'data-bridge': String(bridge), transform: `translate(${x.toFixed(1)},${y.toFixed(1)})` });
    const r = kind === 'me' ? 38 : 31;
    if (bridge) g.appendChild(el('circle', { r: r + 6, class: 'ring' }));
    g.appendChild(el('circle', { r }));
    g.appendChild(el('text', { y: 4 }, short(id)));
    if (sub) g.appendChild(el('text', { y: r + 17, class: 'sub' }, sub));
    const t = el('title', {}, id);
    g.appendChild(t);
    nodes.appendChild(g);
  };
  node(st.me.id, 'me', st.me.bridge, 'this node' + (st.me.bridge ? ' · bridge' : ''), false);
  for (const p of st.peers) node(p.id, 'peer', p.bridge, p.bridge ? 'bridge' : '', p.state !== 'connected');
  for (const r of st.remote) node(r.id, 'remote', false, 'via ' + r.via.map(short).join(', '), false);
  svg.replaceChildren(links, labels, nodes);
}

function drawPeers(st) {
  const rows = st.peers.map((p) => {
    const tr = document.createElement('tr');
    tr.dataset.id = p.id;
    tr.dataset.state = p.state;
    const state = td('');
    const badge = document.createElement('span');
    badge.className = 'state ' + p.state;
    badge.textContent = p.state + (p.paused ? ' (paused)' : '');
    state.appendChild(badge);
    tr.append(
      td(p.id.slice(0, 16), 'id'), state, td(p.sources.join(',')),
      td(p.rtt_ms === null || p.rtt_ms === undefined ? '-' : p.rtt_ms.toFixed(1) + ' ms', 'num'),
      td(p.state === 'connected' && pct(p.loss_pct) ? pct(p.loss_pct) : '-', 'num'),
      td((p.addrs[0] || '') + (p.addrs.length > 1 ? ' +' : ''), 'mono'),
      td(p.state === 'connected' ? rate(p.tx_bps) : '-', 'num'),
      td(p.state === 'connected' ? rate(p.rx_bps) : '-', 'num'),
      td(`${p.messages_in} / ${p.messages_out}`, 'num'),
      td(p.last_error, 'err'));
    tr.cells[0].title = p.id;
    if (p.packets_sent !== null && p.packets_sent !== undefined) {
      tr.cells[4].title = `${p.packets_lost} of ${p.packets_sent} packets lost on this connection`;
    }
    return tr;
  });
  $('peers').tBodies[0].replaceChildren(...rows);
  const c = st.peers.filter((p) => p.state === 'connected').length;
  $('peer-count').textContent = `${c} connected of ${st.peers.length} known` +
    (st.remote.length ? `, ${st.remote.length} beyond bridges` : '');
}

function drawTopics(st) {
  const rows = st.topics.slice(0, 100).map((t) => {
    const tr = document.createElement('tr');
    tr.append(td(t.topic, 'mono'), td(t.rate.toFixed(1), 'num'), td(t.total, 'num'), td(ago(t.last_unix_ms)));
    return tr;
  });
  if (!rows.length) {
    const tr = document.createElement('tr');
    tr.append(td('no messages yet', 'muted'));
    rows.push(tr);
  }
  $('topics').tBodies[0].replaceChildren(...rows);
  const d = st.data;
  $('data-stats').textContent = d
    ? `Retained: ${d.retained_entries} entries in ${d.topics} topics (${rate(d.retained_bytes)}B). ` +
      `Messages in ${d.messages_in}, out ${d.messages_out}, published ${d.published}, ` +
      `delivered ${d.delivered}, dropped ${d.dropped}, refused ${d.rejected}; ${d.subscribers} subscribers.`
    : 'No data plane.';
}

function render(st) {
  lastState = st;
  lastSeen = Date.now();
  $('me').textContent = `${st.me.app_id} · ${short(st.me.id)}${st.me.bridge ? ' · bridge' : ''} · v${st.me.version} · up ${uptime(st.me.uptime_secs)}`;
  $('me').title = st.me.id;
  drawGraph(st);
  drawPeers(st);
  drawTopics(st);
}

function addEvent(e, atTop) {
  const li = document.createElement('li');
  li.className = e.class;
  li.dataset.kind = e.kind;
  const t = document.createElement('time');
  t.textContent = new Date(e.unix_ms).toLocaleTimeString();
  const tag = document.createElement('span');
  tag.className = 'tag';
  tag.textContent = e.kind;
  li.append(t, tag, document.createTextNode((e.peer ? short(e.peer) + ' ' : '') + e.detail));
  const list = $('events');
  if (atTop) list.prepend(li); else list.append(li);
  while (list.children.length > 200) list.lastChild.remove();
}

function live(on) {
  const l = $('live');
  l.className = 'live ' + (on ? 'on' : 'off');
  l.textContent = on ? 'live' : 'reconnecting…';
}

function connect() {
  const es = new EventSource('/api/events');
  es.addEventListener('open', () => live(true));
  es.addEventListener('error', () => live(false));
  es.addEventListener('state', (m) => {
    const st = JSON.parse(m.data);
    if (st.me) render(st);
  });
  es.addEventListener('log', (m) => {
    $('events').replaceChildren();
    JSON.parse(m.data).reverse().forEach((e) => addEvent(e, false));
  });
  es.addEventListener('event', (m) => addEvent(JSON.parse(m.data), true));
}

async function showRetained(ev) {
  if (ev) ev.preventDefault();
  const pattern = $('pattern').value.trim() || '**';
  const note = $('retained-note');
  try {
    const r = await fetch('/api/retained?pattern=' + encodeURIComponent(pattern));
    const j = await r.json();
    if (j.error) { note.textContent = j.error; $('retained').tBodies[0].replaceChildren(); return; }
    note.textContent = `${j.total} entries match ${j.pattern}` + (j.total > j.entries.length ? ` (first ${j.entries.length} shown)` : '');
    const rows = j.entries.map((e) => {
      const tr = document.createElement('tr');
      tr.append(td(e.topic, 'mono'), td(e.key, 'mono'), td(e.binary ? '0x' + e.value : e.value, 'val'),
        td(e.bytes, 'num'), td(ago(e.published_unix_ms)), td(short(e.publisher), 'id'));
      return tr;
    });
    $('retained').tBodies[0].replaceChildren(...rows);
  } catch (e) {
    note.textContent = 'cannot read the retained state: ' + e;
  }
}

// The stream should deliver a state every second; say so when it stops.
setInterval(() => { if (lastState && Date.now() - lastSeen > 5000) live(false); }, 1000);
$('retained-form').addEventListener('submit', showRetained);
connect();
showRetained();
