// vigil's viewer page. It talks to the API with the viewer's bearer token,
// which it keeps in sessionStorage (gone with the tab) and sends only in
// the Authorization header: never in a URL, so no access log holds it.
// Segment URLs are the signed ones the playlists list. Everything the
// server sends is put into the page as text, never as HTML.
'use strict';
(() => {
  const HOUR = 3600 * 1000;
  const DAY = 24 * HOUR;
  const MAX_CLIP = HOUR; // a clip is assembled in memory (a blob) before saving
  const $ = (id) => document.getElementById(id);
  const enc = encodeURIComponent;
  const store = window.sessionStorage;

  let token = store.getItem('vigil.token') || '';
  let current = null; // the selected stream: {id, account}
  let accounts = new Map(); // id -> account, as listed
  let timeline = { from: 0, to: 0, spans: [] }; // from..to: the window drawn
  // The window drawn is len long and ends at end; it stays put (a click
  // lands where it was aimed) until now passes its end, then moves on.
  let view = { len: DAY, end: 0, follow: true };
  let hls = null;
  let vod = null; // {from, to} of the recording window playing
  let privacy = null; // the refusal while the stream's video is kept from us
  let clipURL = '';
  let timers = [];

  // --- API -------------------------------------------------------------

  class APIError extends Error {
    constructor(status, code, message) { super(message); this.status = status; this.code = code; }
  }

  // request calls the API and throws an APIError for a non-2xx answer.
  async function request(method, path, body) {
    const headers = {};
    if (token) headers.Authorization = 'Bearer ' + token;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const resp = await fetch(path, {
      method, headers, cache: 'no-store', credentials: 'omit', redirect: 'error',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (!resp.ok) {
      let e = {};
      try { e = await resp.json(); } catch (_) { /* not JSON */ }
      const err = new APIError(resp.status, e.code || '', e.error || resp.statusText || ('HTTP ' + resp.status));
      if (resp.status === 401 && token && path !== '/v1/sessions') signedOut('Your session has ended: sign in again.');
      throw err;
    }
    return resp;
  }

  async function api(method, path, body) {
    const resp = await request(method, path, body);
    const text = await resp.text();
    return text ? JSON.parse(text) : null;
  }

  // --- signing in --------------------------------------------------------

  async function login(ev) {
    ev.preventDefault();
    $('signin-error').textContent = '';
    const email = $('email').value.trim();
    try {
      token = '';
      const s = await api('POST', '/v1/sessions', { email, password: $('password').value });
      $('password').value = '';
      signedIn(s.token, s.id || '', email);
    } catch (e) {
      $('signin-error').textContent = e.message + (e.code ? ' (' + e.code + ')' : '');
    }
  }

  async function useToken(ev) {
    ev.preventDefault();
    $('signin-error').textContent = '';
    const t = $('token').value.trim();
    $('token').value = '';
    token = t;
    try {
      await api('GET', '/v1/accounts?limit=1'); // does it open anything?
      signedIn(t, '', 'API token');
    } catch (e) {
      token = '';
      $('signin-error').textContent = e.message + (e.code ? ' (' + e.code + ')' : '');
    }
  }

  function signedIn(t, session, who) {
    token = t;
    store.setItem('vigil.token', t);
    store.setItem('vigil.session', session); // revoked at sign-out
    store.setItem('vigil.who', who);
    showApp();
  }

  async function signOut() {
    const session = store.getItem('vigil.session');
    if (session) {
      try { await request('DELETE', '/v1/tokens/' + enc(session)); } catch (_) { /* expired already */ }
    }
    signedOut('');
  }

  function signedOut(msg) {
    token = '';
    store.removeItem('vigil.token');
    store.removeItem('vigil.session');
    store.removeItem('vigil.who');
    timers.forEach(clearInterval);
    timers = [];
    resetViewer();
    current = null;
    $('camera-list').replaceChildren();
    $('app').hidden = true;
    $('signout').hidden = true;
    $('who').textContent = '';
    $('signin').hidden = false;
    $('signin-error').textContent = msg;
  }

  function showApp() {
    $('signin').hidden = true;
    $('app').hidden = false;
    $('signout').hidden = false;
    $('who').textContent = 'Signed in: ' + (store.getItem('vigil.who') || '');
    loadCameras();
    // A hidden tab asks nothing; it catches up when shown again.
    timers.push(setInterval(() => { if (!document.hidden) loadCameras(); }, 30000));
    timers.push(setInterval(() => { if (current && !dragging && !document.hidden) loadTimeline(); }, 5000));
  }

  // --- cameras and their health -------------------------------------------

  async function loadCameras() {
    try {
      const list = [];
      let cursor = '';
      do {
        const page = await api('GET', '/v1/accounts?limit=1000' + (cursor ? '&cursor=' + enc(cursor) : ''));
        list.push(...(page.accounts || []));
        cursor = page.next_cursor || '';
      } while (cursor && list.length < 100000);
      accounts = new Map(list.map((a) => [a.id, a]));
      // A reseller's health holds its sub-accounts': ask the top ones only.
      const roots = list.filter((a) => !a.parent || !accounts.has(a.parent));
      const reports = await Promise.all(roots.map((a) => api('GET', '/v1/accounts/' + enc(a.id) + '/health')));
      renderCameras(reports);
      $('cameras-error').textContent = '';
    } catch (e) {
      if (token) $('cameras-error').textContent = 'Cameras: ' + e.message;
    }
  }

  function badge(state) {
    const s = document.createElement('span');
    s.className = 'state state-' + state;
    s.textContent = state;
    return s;
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function renderCameras(reports) {
    const byAccount = new Map();
    const seen = new Set();
    for (const r of reports) {
      for (const b of r.bridges || []) {
        if (seen.has(b.id)) continue;
        seen.add(b.id);
        if (!byAccount.has(b.account)) byAccount.set(b.account, []);
        byAccount.get(b.account).push(b);
      }
    }
    const root = $('camera-list');
    root.replaceChildren();
    if (byAccount.size === 0) root.append(el('li', '', 'No cameras in your scope.'));
    for (const [acct, bridges] of [...byAccount].sort((x, y) => x[0].localeCompare(y[0]))) {
      const a = accounts.get(acct);
      const li = el('li', 'account');
      const h = el('h3', '', (a && a.name) || acct);
      if (a && a.privacy_mode) h.append(' ', el('span', 'privacy-badge', '(privacy mode)'));
      li.append(h);
      const cams = el('ul');
      for (const b of bridges) {
        for (const c of b.cameras || []) {
          const cl = el('li', 'camera');
          cl.dataset.camera = c.id;
          cl.append(el('span', 'camera-name', c.name || c.id), ' ', badge(c.state));
          const ss = el('ul');
          for (const s of c.streams || []) {
            const sl = el('li');
            const btn = el('button', 'stream', s.id);
            btn.type = 'button';
            btn.dataset.stream = s.id;
            btn.dataset.account = acct;
            if (current && current.id === s.id) btn.classList.add('selected');
            btn.addEventListener('click', () => selectStream(s.id, acct));
            const st = badge(s.state);
            st.classList.add('stream-state');
            sl.append(btn, st);
            if (s.last_end) sl.title = 'last recorded ' + new Date(s.last_end).toLocaleString();
            ss.append(sl);
          }
          cl.append(ss);
          cams.append(cl);
        }
      }
      li.append(cams);
      root.append(li);
    }
  }

  // resetViewer forgets what the last stream showed: video, timeline, clip.
  function resetViewer() {
    stopPlayer();
    setPrivacy(null);
    if (clipURL) { URL.revokeObjectURL(clipURL); clipURL = ''; }
    $('clip-link').hidden = true;
    $('clip-from').value = '';
    $('clip-to').value = '';
    $('clip-status').textContent = '';
    $('player-error').textContent = '';
    $('spans').replaceChildren();
    $('selection').hidden = true;
    $('timeline-info').textContent = '';
    $('stream-title').textContent = 'Choose a stream';
    timeline.spans = [];
  }

  async function selectStream(id, account) {
    resetViewer();
    current = { id, account };
    for (const b of document.querySelectorAll('.stream')) b.classList.toggle('selected', b.dataset.stream === id);
    $('stream-title').textContent = id;
    setPrivacy(null); // enables the buttons for the stream
    await loadTimeline();
    await probeVideo();
  }

  // --- timeline ----------------------------------------------------------

  async function loadTimeline() {
    const id = current && current.id;
    if (!id) return;
    const to = Date.now();
    const from = to - DAY;
    try {
      const r = await api('GET', '/v1/streams/' + enc(id) + '/recordings?spans=only&start=' + from + '&end=' + to);
      if (!current || current.id !== id) return;
      timeline.spans = r.spans || [];
      drawTimeline();
    } catch (e) {
      $('timeline-info').textContent = 'Timeline: ' + e.message;
    }
  }

  const pct = (t) => (100 * (t - timeline.from) / (timeline.to - timeline.from)) + '%';

  function zoom(len) {
    view = { len, end: 0, follow: true };
    for (const b of document.querySelectorAll('#zoom [data-zoom]')) b.classList.toggle('on', +b.dataset.zoom === len);
    drawTimeline();
  }

  function pan(dir) {
    const now = Date.now();
    view.end = Math.max(now - DAY + view.len, (view.end || now) + dir * view.len / 2);
    view.follow = view.end > now;
    if (view.follow) view.end = 0;
    drawTimeline();
  }

  function drawTimeline() {
    const now = Date.now();
    if (!view.end || view.follow && now > view.end) view.end = now + view.len / 20;
    if (view.end < now - DAY + view.len) view.end = now - DAY + view.len;
    timeline.from = view.end - view.len;
    timeline.to = view.end;
    const tl = $('timeline');
    tl.dataset.from = timeline.from;
    tl.dataset.to = timeline.to;
    const ticks = $('ticks');
    ticks.replaceChildren();
    const step = view.len >= 12 * HOUR ? 3 * HOUR : view.len >= 3 * HOUR ? HOUR : view.len >= HOUR ? 10 * 60000 : 60000;
    for (let t = Math.ceil(timeline.from / step) * step; t < timeline.to; t += step) {
      const k = el('div', 'tick', new Date(t).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }));
      k.style.left = pct(t);
      ticks.append(k);
    }
    const spans = $('spans');
    spans.replaceChildren();
    let total = 0;
    for (const s of timeline.spans) {
      total += s.end - s.start;
      if (s.end < timeline.from || s.start > timeline.to) continue;
      const d = el('div', 'span');
      d.dataset.start = s.start;
      d.dataset.end = s.end;
      d.style.left = pct(Math.max(s.start, timeline.from));
      d.style.width = (100 * (Math.min(s.end, timeline.to) - Math.max(s.start, timeline.from)) / (timeline.to - timeline.from)) + '%';
      d.title = fmt(s.start) + ' – ' + fmt(s.end);
      spans.append(d);
    }
    $('timeline-info').textContent = timeline.spans.length
      ? `${timeline.spans.length} span(s), ${(total / 60000).toFixed(1)} min recorded in the last 24 h`
      : 'Nothing recorded in the last 24 h.';
    drawSelection();
  }

  function fmt(t) { return new Date(t).toLocaleString(); }

  function timeAt(clientX) {
    const r = $('timeline').getBoundingClientRect();
    const x = Math.min(Math.max(clientX - r.left, 0), r.width);
    return Math.round(timeline.from + (x / r.width) * (timeline.to - timeline.from));
  }

  // A click plays from there; a drag selects the clip range.
  let dragging = null;
  function onPointerDown(ev) {
    if (!current || ev.button !== 0) return;
    dragging = { x: ev.clientX, t: timeAt(ev.clientX) };
    $('timeline').setPointerCapture(ev.pointerId);
  }
  function onPointerMove(ev) {
    if (!dragging || Math.abs(ev.clientX - dragging.x) < 4) return;
    setRange(dragging.t, timeAt(ev.clientX));
  }
  function onPointerUp(ev) {
    if (!dragging) return;
    const d = dragging;
    dragging = null;
    if (Math.abs(ev.clientX - d.x) >= 4) {
      setRange(d.t, timeAt(ev.clientX));
      return;
    }
    playAt(d.t);
  }

  // --- clip range --------------------------------------------------------

  function localInput(t) {
    const d = new Date(t);
    const p = (n) => String(n).padStart(2, '0');
    return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
  }

  function setRange(a, b) {
    $('clip-from').value = localInput(Math.min(a, b));
    $('clip-to').value = localInput(Math.max(a, b));
    drawSelection();
  }

  function range() {
    const from = new Date($('clip-from').value).getTime();
    const to = new Date($('clip-to').value).getTime();
    return { from, to };
  }

  function drawSelection() {
    const { from, to } = range();
    const s = $('selection');
    if (!(from < to) || to < timeline.from || from > timeline.to) { s.hidden = true; return; }
    s.hidden = false;
    s.style.left = pct(Math.max(from, timeline.from));
    s.style.width = (100 * (Math.min(to, timeline.to) - Math.max(from, timeline.from)) / (timeline.to - timeline.from)) + '%';
  }

  async function exportClip(ev) {
    ev.preventDefault();
    if (!current) return;
    const { from, to } = range();
    const status = $('clip-status');
    const link = $('clip-link');
    if (!(from < to)) { status.textContent = 'Choose a range: From before To.'; return; }
    if (to - from > MAX_CLIP) { status.textContent = 'A clip is at most one hour.'; return; }
    link.hidden = true;
    if (clipURL) { URL.revokeObjectURL(clipURL); clipURL = ''; }
    status.textContent = 'Exporting…';
    try {
      const resp = await request('GET', `/v1/streams/${enc(current.id)}/clip.mp4?start=${from}&end=${to}`);
      const gaps = resp.headers.get('X-Vigil-Clip-Gaps');
      const blob = await resp.blob();
      clipURL = URL.createObjectURL(blob);
      link.href = clipURL;
      link.download = `${current.id}-${new Date(from).toISOString().replace(/[:.]/g, '-')}.mp4`;
      link.textContent = `Save clip (${(blob.size / 1e6).toFixed(1)} MB)`;
      link.dataset.size = blob.size;
      link.hidden = false;
      status.textContent = gaps ? 'Gaps left out: ' + gaps.split(',').map((g) => g.split('-').map((x) => new Date(+x).toLocaleTimeString()).join('–')).join(', ') : '';
    } catch (e) {
      status.textContent = 'Clip: ' + e.message + (e.code ? ' (' + e.code + ')' : '');
      if (e.code === 'privacy_mode') setPrivacy(e);
    }
  }

  // --- privacy mode --------------------------------------------------------

  // probeVideo asks for a small playlist: under privacy mode it is refused
  // with the reason, and the page then shows the timeline without video.
  async function probeVideo() {
    if (!current) return;
    const last = timeline.spans[timeline.spans.length - 1];
    const path = last
      ? `/v1/streams/${enc(current.id)}/playlist.m3u8?start=${Math.max(last.start, last.end - 10000)}&end=${last.end}`
      : `/v1/streams/${enc(current.id)}/live.m3u8`;
    try {
      await request('GET', path);
      setPrivacy(null);
    } catch (e) {
      if (e.code === 'privacy_mode' || e.status === 403) setPrivacy(e);
    }
  }

  function setPrivacy(err) {
    privacy = err;
    const box = $('privacy');
    const on = !!err;
    $('player').hidden = on;
    $('live').disabled = on || !current;
    $('clip-export').disabled = on || !current;
    if (!on) { box.hidden = true; box.replaceChildren(); return; }
    stopPlayer();
    const a = current && accounts.get(current.account);
    const privacyMode = err.code === 'privacy_mode';
    box.replaceChildren(
      el('strong', '', privacyMode ? 'Privacy mode: no video' : 'No video'),
      el('p', 'privacy-reason', err.message + (err.code ? ' (' + err.code + ').' : '.')));
    if (privacyMode) {
      box.append(el('p', '', (a ? `Account ${a.name || a.id}` : 'This account') +
        ' has switched privacy mode on: only its own users see its live and recorded video. ' +
        'The timeline above and the cameras\u2019 health stay visible.'));
    }
    box.dataset.code = err.code || '';
    box.hidden = false;
  }

  // --- playback ------------------------------------------------------------

  function stopPlayer() {
    if (hls) { hls.destroy(); hls = null; }
    vod = null;
    const v = $('video');
    v.removeAttribute('src');
    v.load();
    v.dataset.mode = '';
    v.dataset.parts = '';
    $('mode').textContent = '';
    $('clock').textContent = '';
    $('playhead').hidden = true;
  }

  function playAt(t) {
    if (!current) return;
    if (privacy) { setPrivacy(privacy); return; }
    const s = timeline.spans.find((x) => t < x.end);
    if (!s) { $('player-error').textContent = 'Nothing recorded after ' + fmt(t) + '.'; return; }
    t = Math.max(t, s.start);
    const end = Math.min(t + HOUR, Date.now());
    vod = { from: t, to: end };
    start(`/v1/streams/${enc(current.id)}/playlist.m3u8?start=${t}&end=${end}`, 'recording', t);
  }

  function playLive() {
    if (!current || privacy) return;
    start(`/v1/streams/${enc(current.id)}/live.m3u8`, 'live', 0);
  }

  // start plays src with hls.js; for a recording it seeks to the wall
  // time at first (the playlist starts with the segment holding it).
  function start(src, mode, at) {
    const keepVOD = vod;
    stopPlayer();
    vod = keepVOD;
    $('player-error').textContent = '';
    if (!window.Hls || !Hls.isSupported()) {
      $('player-error').textContent = 'This browser cannot play HLS here (no Media Source Extensions).';
      return;
    }
    const v = $('video');
    const h = new Hls({
      enableWorker: false, // the CSP allows no blob: workers
      lowLatencyMode: true,
      autoStartLoad: mode === 'live',
      backBufferLength: 90,
      xhrSetup(xhr, url) {
        // Playlists need the token; the segment URLs they list are signed.
        if (!xhr.readyState) xhr.open('GET', url, true);
        if (new URL(url, location.href).pathname.endsWith('.m3u8')) xhr.setRequestHeader('Authorization', 'Bearer ' + token);
      },
    });
    hls = h;
    v.dataset.mode = mode;
    $('mode').textContent = mode === 'live' ? '● Live' : 'Recording';
    let started = mode === 'live';
    let recoveries = 0;
    h.on(Hls.Events.LEVEL_LOADED, (_, data) => {
      // Low-latency HLS (parts) where the node records the stream, else
      // the segment window; shown for the curious (and the tests).
      if (mode === 'live') v.dataset.parts = data.details.partList && data.details.partList.length ? 'yes' : 'no';
      if (started) return;
      started = true;
      const first = data.details.fragments[0];
      const offset = first && first.programDateTime ? Math.max(0, (at - first.programDateTime) / 1000) : 0;
      h.startLoad(first ? first.start + offset : -1);
    });
    h.on(Hls.Events.MANIFEST_PARSED, () => { v.play().catch(() => { /* the user presses play */ }); });
    h.on(Hls.Events.ERROR, (_, data) => {
      if (!data.fatal) return;
      const code = data.response && data.response.code;
      if (code === 403 || code === 401) {
        // Ask once more with fetch to show the server's reason.
        probeVideo().then(() => { if (!privacy) $('player-error').textContent = 'Refused (' + code + ').'; });
        return;
      }
      if (/codec/i.test(data.details)) { // manifestIncompatibleCodecsError, bufferAddCodecError, ...
        $('player-error').textContent = 'This browser cannot decode this stream\u2019s video (an H.265 camera in a browser without H.265?). Export a clip instead.';
        return;
      }
      if (data.type === Hls.ErrorTypes.MEDIA_ERROR && recoveries++ < 2) { h.recoverMediaError(); return; }
      $('player-error').textContent = 'Playback: ' + data.details + (code ? ' (HTTP ' + code + ')' : '');
    });
    h.attachMedia(v);
    h.loadSource(src);
  }

  function onTimeUpdate() {
    if (!hls) return;
    const d = hls.playingDate;
    if (!d) return;
    const t = d.getTime();
    $('clock').textContent = d.toLocaleString();
    const v = $('video');
    if (v.dataset.mode === 'live') {
      // How far behind the camera live view plays (the page's clock
      // against the camera's, as the playlist dates its segments).
      const lag = Date.now() - t;
      v.dataset.lagMs = lag;
      $('mode').textContent = `\u25cf Live, ${(lag / 1000).toFixed(0)} s behind`;
    }
    const ph = $('playhead');
    if (t >= timeline.from && t <= timeline.to) { ph.hidden = false; ph.style.left = pct(t); }
  }

  // At the end of a recording window, go on with the next one.
  function onEnded() {
    if (!vod || !current) return;
    const next = timeline.spans.find((s) => s.end > vod.to + 500);
    if (next) playAt(Math.max(vod.to, next.start));
  }

  // --- wiring -------------------------------------------------------------

  document.addEventListener('DOMContentLoaded', () => {
    $('login-form').addEventListener('submit', login);
    $('token-form').addEventListener('submit', useToken);
    $('signout').addEventListener('click', signOut);
    $('live').addEventListener('click', playLive);
    $('clip-form').addEventListener('submit', exportClip);
    $('clip-from').addEventListener('change', drawSelection);
    $('clip-to').addEventListener('change', drawSelection);
    const tl = $('timeline');
    tl.addEventListener('pointerdown', onPointerDown);
    tl.addEventListener('pointermove', onPointerMove);
    tl.addEventListener('pointerup', onPointerUp);
    tl.addEventListener('pointercancel', () => { dragging = null; });
    $('video').addEventListener('timeupdate', onTimeUpdate);
    $('video').addEventListener('ended', onEnded);
    for (const b of document.querySelectorAll('#zoom [data-zoom]')) b.addEventListener('click', () => zoom(+b.dataset.zoom));
    $('earlier').addEventListener('click', () => pan(-1));
    $('later').addEventListener('click', () => pan(1));
    if (token) showApp(); else signedOut('');
  });
})();
