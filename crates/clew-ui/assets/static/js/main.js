// Entry point: client-side routing between the pages, theme toggle, "open trace by id" box.
import { navigate, h, storedToken, setToken } from './util.js';
import { renderSearch } from './search.js';
import { renderTrace } from './trace.js';
import { renderCompare } from './compare.js';
import { renderGraph } from './graph.js';
import { renderDoctor } from './doctor.js';
import { renderMonitor } from './monitor.js';

const app = document.getElementById('app');
let cleanup = null;
let lastPath = null;

function route() {
  const path = location.pathname;
  const params = new URLSearchParams(location.search);
  // Same trace page, only the selected span changed: let the page handle it.
  if (lastPath === path && path.startsWith('/trace/') && cleanup && cleanup.onParams) {
    cleanup.onParams(params);
    return;
  }
  if (cleanup) {
    try {
      (typeof cleanup === 'function' ? cleanup : cleanup.dispose)();
    } catch (e) {
      console.error(e);
    }
    cleanup = null;
  }
  lastPath = path;
  app.replaceChildren();
  delete document.body.dataset.ready;
  window.__clewReady = false;
  let page = 'search';
  if (path.startsWith('/trace/')) {
    page = 'trace';
    cleanup = renderTrace(app, decodeURIComponent(path.slice('/trace/'.length)), params);
  } else if (path === '/compare') {
    page = 'compare';
    cleanup = renderCompare(app, params);
  } else if (path === '/graph') {
    page = 'graph';
    cleanup = renderGraph(app, params);
  } else if (path === '/doctor') {
    page = 'doctor';
    cleanup = renderDoctor(app, params);
  } else if (path === '/monitor') {
    page = 'monitor';
    cleanup = renderMonitor(app, params);
  } else {
    cleanup = renderSearch(app, params);
  }
  for (const a of document.querySelectorAll('.topbar nav a')) a.classList.toggle('active', a.dataset.page === page);
}

// Internal links navigate without reloading.
document.addEventListener('click', (e) => {
  if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  const a = e.target.closest('a[href]');
  if (!a || a.target || a.hasAttribute('download')) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || url.pathname.startsWith('/api/') || url.pathname.startsWith('/static/')) return;
  e.preventDefault();
  if (url.pathname + url.search !== location.pathname + location.search) navigate(url.pathname + url.search + url.hash);
});

window.addEventListener('popstate', route);
window.addEventListener('clew:navigate', route);

document.getElementById('goto').addEventListener('submit', (e) => {
  e.preventDefault();
  const input = document.getElementById('goto-id');
  const id = input.value.trim();
  if (id) {
    input.value = '';
    input.blur();
    navigate(`/trace/${encodeURIComponent(id)}`);
  }
});

const toggle = document.getElementById('theme-toggle');
function showTheme() {
  const t = document.documentElement.dataset.theme;
  toggle.textContent = t === 'dark' ? '☀' : '☾';
  toggle.title = t === 'dark' ? 'Switch to light theme' : 'Switch to dark theme';
}
toggle.addEventListener('click', () => {
  const next = document.documentElement.dataset.theme === 'dark' ? 'light' : 'dark';
  document.documentElement.dataset.theme = next;
  try {
    localStorage.setItem('clew.theme', next);
  } catch {
    /* private mode: not remembered */
  }
  showTheme();
  window.dispatchEvent(new Event('clew:theme'));
});
showTheme();

// With authentication on, a "Sign out" button forgets this tab's token (util.js asks again).
const signOut = h('button.btn.ghost#auth-signout', {
  type: 'button',
  title: 'Forget the token of this tab',
  onclick: () => {
    setToken(null);
    location.reload();
  },
}, 'Sign out');
function showAuth() {
  signOut.hidden = !storedToken();
}
toggle.before(signOut);
window.addEventListener('clew:auth', showAuth);
showAuth();

route();
